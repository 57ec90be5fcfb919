"""A person's flow with versions, in Chromium against the real server (issue 16,
items 3 and 4): an answer fails and shows in place, Retry answers it; Regenerate;
Edit a question inline; the version arrows switch versions for everyone in the room;
Copy copies the version shown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import PageServer, Watch
from tests.browser.pages import Person
from tests.fakes.openrouter import FakeOpenRouter, HttpError, Stream, serve_fake_openrouter

pytestmark = pytest.mark.browser


@pytest.fixture
def upstream() -> Iterator[FakeOpenRouter]:
    with serve_fake_openrouter() as fake:
        yield fake


@pytest.fixture
def server_overrides(upstream: FakeOpenRouter) -> dict[str, Any]:
    return {
        "openrouter_api_key": "sk-or-test",
        "openrouter_base_url": upstream.base_url,
        "llm_model": "openai/gpt-4o-mini",
        "llm_max_retries": 0,
    }


def body(message: Any) -> Any:
    return message.get_by_test_id("message-body")


async def test_failure_retry_regenerate_edit_switch_and_copy(
    browser: Any, page_server: PageServer, watch: Watch, upstream: FakeOpenRouter
) -> None:
    permissions = ["clipboard-read", "clipboard-write"]
    ada = await Person.sign_up(browser, page_server, watch, "Ada", permissions=permissions)
    bob = await Person.sign_up(browser, page_server, watch, "Bob")
    session_id = await ada.create_session("Versions")
    await ada.add_member(bob)
    await bob.open_session(session_id)
    await expect(ada.tid("members").locator("li")).to_have_count(2)

    # The answer fails: it shows in place, for both, with a Retry.
    upstream.enqueue(HttpError(400, "the model refused"))
    await ada.send("Name a colour")
    for person in (ada, bob):
        answer = person.messages("assistant")
        await expect(answer).to_have_count(1)
        await expect(answer.get_by_test_id("failure")).to_contain_text("The answer failed")
        await expect(answer.get_by_test_id("retry")).to_have_count(1)

    upstream.enqueue(Stream(["Blue"]))
    await bob.messages("assistant").get_by_test_id("retry").click()
    for person in (ada, bob):
        answer = person.messages("assistant")
        await expect(body(answer)).to_have_text("Blue")
        await expect(answer.get_by_test_id("failure")).to_have_count(0)
        await expect(answer.get_by_test_id("version-label")).to_have_text("2/2")

    # Regenerate: a third version, shown to both.
    upstream.enqueue(Stream(["Green"]))
    await ada.messages("assistant").get_by_test_id("regenerate").click()
    for person in (ada, bob):
        await expect(body(person.messages("assistant"))).to_have_text("Green")
        await expect(person.messages("assistant").get_by_test_id("version-label")).to_have_text(
            "3/3"
        )

    # The arrows: back to "Blue", seen by Bob too; Copy copies what is shown.
    await ada.messages("assistant").get_by_test_id("version-prev").click()
    for person in (ada, bob):
        await expect(body(person.messages("assistant"))).to_have_text("Blue")
        await expect(person.messages("assistant").get_by_test_id("version-label")).to_have_text(
            "2/3"
        )
    await ada.messages("assistant").get_by_test_id("copy-message").click()
    assert await ada.page.evaluate("navigator.clipboard.readText()") == "Blue"

    # Edit the question inline: its second version, and a new answer.
    upstream.enqueue(Stream(["Seven"]))
    question = ada.messages("user")
    await expect(bob.messages("user").get_by_test_id("edit")).to_have_count(0)  # not his
    await question.get_by_test_id("edit").click()
    await question.get_by_test_id("edit-input").fill("Name a number")
    await question.get_by_test_id("edit-save").click()
    for person in (ada, bob):
        await expect(body(person.messages("user"))).to_have_text("Name a number")
        await expect(person.messages("user").get_by_test_id("version-label")).to_have_text("2/2")
        await expect(body(person.messages("assistant"))).to_have_text("Seven")
        await expect(person.messages("assistant").get_by_test_id("version-label")).to_have_text(
            "4/4"
        )
    asked = upstream.chat_requests[-1].json
    assert asked is not None and asked["messages"][-1]["content"] == "Name a number"

    # After a reload, the page shows the versions as stored.
    await bob.page.reload()
    await expect(body(bob.messages("user"))).to_have_text("Name a number")
    await expect(bob.messages("assistant").get_by_test_id("version-label")).to_have_text("4/4")
