"""The front door on the page: a key made in the API-keys panel drives the official
``openai`` package, and the person's page (a member of the room) shows the question
and the same answer; revoking the key on the page stops it."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from playwright.async_api import expect

from tests.browser.conftest import PageServer, Watch
from tests.browser.pages import Person

pytestmark = pytest.mark.browser


async def test_a_key_from_the_page_asks_in_the_room_and_the_page_shows_the_answer(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    session_id = await ada.create_session("From the editor")
    await ada.tid("api-keys-open").click()
    await ada.tid("api-key-name").fill("editor")
    await ada.tid("api-key-create").click()
    await expect(ada.tid("api-key")).to_have_count(1)
    secret = (await ada.tid("api-key-secret").inner_text()).strip()
    assert secret.startswith("pk_")
    await ada.tid("api-keys-close").click()

    client = openai.AsyncOpenAI(
        base_url=page_server.http_url + "/v1", api_key=secret, max_retries=0
    )
    async with client:
        stream = await client.chat.completions.create(
            model="parley",
            messages=[{"role": "user", "content": "Hello from the editor"}],
            stream=True,
            extra_headers={"X-Parley-Session": session_id},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        await expect(ada.messages("user")).to_have_count(1)
        await expect(ada.messages("user")).to_contain_text("Hello from the editor")
        await expect(ada.messages("assistant")).to_have_count(1)
        await expect(ada.tid("stream")).to_have_count(0)
        shown = await ada.messages("assistant").locator('[data-testid="message-body"]').inner_text()
        assert text and " ".join(shown.split()) == " ".join(text.split())

        await ada.tid("api-keys-open").click()
        await expect(ada.tid("api-key")).to_have_count(1)
        await ada.tid("api-key-revoke").click()
        await expect(ada.tid("api-key")).to_have_count(0)
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
