"""Stop in a shared room: it stops the answer you mean, not everyone's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import PASSWORD, PageServer, Watch
from tests.browser.pages import Person
from tests.browser.test_chat_page import stored_messages

pytestmark = pytest.mark.browser


async def add_by_id(server: PageServer, owner: Person, session_id: str, member: Person) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:

        async def token(person: Person) -> str:
            login = await client.post(
                "/v1/auth/login", json={"email": person.email, "password": PASSWORD}
            )
            return str(login.json()["data"]["access_token"])

        owner_headers = {"Authorization": f"Bearer {await token(owner)}"}
        member_headers = {"Authorization": f"Bearer {await token(member)}"}
        member_id = (await client.get("/v1/me", headers=member_headers)).json()["data"]["id"]
        added = await client.post(
            f"/v1/sessions/{session_id}/members",
            json={"user_id": member_id},
            headers=owner_headers,
        )
        assert added.status_code == 201, added.text


@pytest.mark.parametrize("token_delay_s", [0.2])
async def test_stop_stops_only_the_answer_to_your_own_question(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    bob = await Person.sign_up(browser, page_server, watch, "Bob")
    session_id = await ada.create_session("Two questions")
    await add_by_id(page_server, ada, session_id, bob)
    await bob.open_session(session_id)
    await bob.send("Bob asks for a long story")
    await expect(ada.tid("stream")).to_have_count(1)
    await expect(ada.tid("stop")).to_be_hidden()  # nothing of Ada's is running

    await ada.send("Ada asks too")
    await expect(ada.tid("stream")).to_have_count(2)
    await expect(ada.tid("stop")).to_be_visible()
    # Some text first: a stream stopped before its first word stores nothing.
    await expect(ada.tid("stream-body").nth(1)).to_contain_text("offline")
    await ada.tid("stop").click()

    await expect(bob.messages("assistant")).to_have_count(2, timeout=30_000)
    stored = await stored_messages(page_server, ada, session_id)
    by_question = {m["reply_to"]: m for m in stored if m["role"] == "assistant"}
    questions = {m["content"]: m["id"] for m in stored if m["role"] == "user"}
    assert by_question[questions["Ada asks too"]]["status"] == "cancelled"
    assert by_question[questions["Bob asks for a long story"]]["status"] == "complete"


@pytest.mark.parametrize("token_delay_s", [0.2])
async def test_each_streaming_answer_has_its_own_stop(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    bob = await Person.sign_up(browser, page_server, watch, "Bob")
    session_id = await ada.create_session("Pick one")
    await add_by_id(page_server, ada, session_id, bob)
    await bob.open_session(session_id)
    await bob.send("First question")
    await ada.send("Second question")
    await expect(ada.tid("stream")).to_have_count(2)
    await expect(ada.tid("stream-body").nth(1)).to_contain_text("offline")

    first = ada.page.locator('[data-testid="stream"]').first
    await first.get_by_test_id("stream-stop").click()

    await expect(ada.messages("assistant")).to_have_count(2, timeout=30_000)
    stored = await stored_messages(page_server, ada, session_id)
    statuses = sorted(m["status"] for m in stored if m["role"] == "assistant")
    assert statuses == ["cancelled", "complete"]
