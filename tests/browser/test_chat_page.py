"""The web page in a real Chromium against the real server (offline model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import PASSWORD, PageServer, Watch
from tests.browser.pages import Person

pytestmark = pytest.mark.browser
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"


async def stored_messages(server: PageServer, person: Person, session_id: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        login = await client.post(
            "/v1/auth/login", json={"email": person.email, "password": PASSWORD}
        )
        token = login.json()["data"]["access_token"]
        page = await client.get(
            f"/v1/sessions/{session_id}/messages", headers={"Authorization": f"Bearer {token}"}
        )
        return list(page.json()["data"]["messages"])


async def test_two_people_see_the_message_and_the_whole_streamed_answer(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    bob = await Person.sign_up(browser, page_server, watch, "Bob")
    session_id = await ada.create_session("Launch plan")
    await ada.add_member(bob)
    await bob.open_session(session_id)
    await expect(ada.tid("members").locator("li")).to_have_count(2)

    await ada.send("Hello **team**, what is `next`?")

    for person in (ada, bob):
        await expect(person.messages("user")).to_have_count(1)
        await expect(person.messages("user").locator("strong")).to_have_text("team")
        await expect(person.messages("assistant")).to_have_count(1)
        await expect(person.tid("stream")).to_have_count(0)
    stored = await stored_messages(page_server, ada, session_id)
    answer = next(m for m in stored if m["role"] == "assistant")
    for person in (ada, bob):
        shown = (
            await person.messages("assistant").locator('[data-testid="message-body"]').inner_text()
        )
        # The answer quotes the prompt; its Markdown is drawn, so compare without marks.
        expected = answer["content"].replace("**", "").replace("`", "")
        assert " ".join(shown.split()) == " ".join(expected.split())
    assert (
        await bob.messages("user").locator('[data-testid="message-author"]').inner_text() == "Ada"
    )

    if os.environ.get("PARLEY_SCREENSHOT") == "1":
        await ada.page.set_viewport_size({"width": 1280, "height": 760})
        await ada.send("Could you list the *three* risks, with a [link](https://example.com)?")
        await expect(ada.messages("assistant")).to_have_count(2)
        if await ada.tid("notice").is_visible():
            await ada.tid("notice").click()
        await ada.page.screenshot(path=str(SCREENSHOT))


@pytest.mark.parametrize("token_delay_s", [0.25])
async def test_stop_halts_the_answer_and_keeps_what_was_written(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    session_id = await ada.create_session("Long answers")
    await ada.send("Tell me a long story")
    await expect(ada.tid("stop")).to_be_visible()
    await expect(ada.tid("stream-status")).to_have_attribute("data-stage", "generating")
    await expect(ada.tid("stream-body")).to_contain_text("offline")

    await ada.tid("stop").click()

    await expect(ada.messages("assistant")).to_have_count(1)
    await expect(ada.messages("assistant")).to_contain_text("stopped")
    await expect(ada.tid("stop")).to_be_hidden()
    stored = await stored_messages(page_server, ada, session_id)
    answer = next(m for m in stored if m["role"] == "assistant")
    assert answer["status"] == "cancelled"
    assert "Set OPENROUTER_API_KEY" not in answer["content"]


async def test_the_page_reconnects_after_a_server_restart_and_shows_nothing_twice(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await ada.create_session("Restarts")
    await ada.send("before the restart")
    await expect(ada.messages("assistant")).to_have_count(1)

    await page_server.stop()
    await expect(ada.tid("connection")).not_to_have_attribute("data-state", "open")
    await page_server.restart_on_same_port()
    await expect(ada.tid("connection")).to_have_attribute("data-state", "open", timeout=30_000)

    await ada.send("after the restart")
    await expect(ada.messages("assistant")).to_have_count(2)
    await expect(ada.messages("user")).to_have_count(2)
    seqs = await ada.seqs()
    assert seqs == sorted(set(seqs)) == [1, 2, 3, 4]


async def test_markup_in_a_message_is_shown_as_text_and_runs_nothing(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await ada.create_session("Safety")
    payload = "<img src=x onerror=alert(1)> [click](javascript:alert(2)) <script>alert(3)</script>"

    await ada.send(payload)

    await expect(ada.messages("user")).to_have_count(1)
    await expect(ada.messages("assistant")).to_have_count(1)
    body = ada.messages("user").locator('[data-testid="message-body"]')
    assert await body.inner_text() == payload
    assert (
        await ada.page.locator(
            '[data-testid="timeline"] img, [data-testid="timeline"] script'
        ).count()
        == 0
    )
    assert await ada.page.locator('[data-testid="timeline"] a').count() == 0
    assert watch.dialogs == []


async def test_on_a_phone_the_chat_fits_the_screen_without_sideways_scrolling(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(
        browser, page_server, watch, "Ada", viewport={"width": 375, "height": 720}
    )
    await ada.create_session("A rather long session title that should not push the page wider")
    await ada.send("A long line: " + "x" * 200 + " and some `code` too")
    await expect(ada.messages("assistant")).to_have_count(1)

    width = await ada.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    await ada.tid("back").click()
    await expect(ada.tid("session-list")).to_be_visible()


@pytest.mark.parametrize("server_overrides", [{"messages_per_window": 1000}])
async def test_load_older_pages_back_through_the_history(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    session_id = await ada.create_session("Long history")
    async with httpx.AsyncClient(base_url=page_server.http_url) as client:
        login = await client.post("/v1/auth/login", json={"email": ada.email, "password": PASSWORD})
        headers = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        for n in range(1, 61):
            body = {"content": f"note {n}", "reply": "none"}
            await client.post(f"/v1/sessions/{session_id}/messages", json=body, headers=headers)
    await ada.open_session(session_id)
    await expect(ada.messages("user")).to_have_count(50)

    await ada.tid("load-older").click()

    await expect(ada.messages("user")).to_have_count(60)
    await expect(ada.tid("load-older")).to_be_hidden()
    assert await ada.seqs() == list(range(1, 61))


async def test_the_assistants_memory_can_be_listed_added_and_forgotten(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await ada.tid("memory-open").click()
    items = ada.tid("memory-item")
    for text in ("I prefer short answers", "I live in Lisbon"):
        await ada.tid("memory-input").fill(text)
        await ada.tid("memory-add").click()
    await expect(items).to_have_count(2)

    await items.filter(has_text="Lisbon").get_by_test_id("memory-delete").click()
    await expect(items).to_have_count(1)
    await expect(items).to_contain_text("short answers")

    await ada.tid("memory-clear").click()
    await ada.tid("memory-clear").click()  # the second click confirms
    await expect(items).to_have_count(0)


async def test_a_document_uploads_to_the_session_and_a_member_is_added_by_email(
    browser: Any, page_server: PageServer, watch: Watch, tmp_path: Path
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    bob = await Person.sign_up(browser, page_server, watch, "Bob")
    await ada.create_session("Docs")
    await ada.add_member(bob)
    notes = tmp_path / "launch-notes.md"
    notes.write_text("# Launch\n\nThe launch moves to May because of the audit.\n")

    await ada.tid("doc-file").set_input_files(str(notes))
    await ada.tid("doc-upload").click()

    await expect(ada.tid("document")).to_have_count(1)
    await expect(ada.tid("document")).to_contain_text("launch-notes")
