"""The budget on the page, in Chromium against the real server and its offline model
(issue 18): what is left in the top bar, amber from 80 % spent (from the welcome frame
and live from the `budget` notice), a refused question told in place with when the
budget renews (local time), `too_many_answers` told too, and nothing at all for a user
without a budget."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from sqlalchemy import update

from db.models import User
from tests.browser.conftest import PageServer, Watch
from tests.browser.pages import Person
from tests.conftest import TestUser, register_user

pytestmark = pytest.mark.browser
LOTS = 1_000_000
QUESTION = "What is the capital of Peru?"


@pytest.fixture
async def admin(page_server: PageServer) -> AsyncIterator[tuple[httpx.AsyncClient, TestUser]]:
    async with httpx.AsyncClient(base_url=page_server.http_url) as client:
        root = await register_user(client, "Root")
        async with page_server.container.database.transaction() as session:
            await session.execute(
                update(User).where(User.id == uuid.UUID(root.id)).values(role="admin")
            )
        yield client, root


async def set_budget(
    admin: tuple[httpx.AsyncClient, TestUser], person: Person, tokens: int
) -> None:
    client, root = admin
    me = await person.page.evaluate("fetch('/v1/me').then(r => r.json())")
    response = await client.patch(
        f"/v1/users/{me['data']['id']}/budget",
        json={"tokens_per_period": tokens},
        headers=root.headers,
    )
    assert response.status_code == 200, response.text


async def tokens_used(server: PageServer, person: Person) -> int:
    await server.container.budgets.flush()
    usage = await person.page.evaluate("fetch('/v1/me/usage').then(r => r.json())")
    return int(usage["data"]["budget"]["tokens"]["used"])


async def settled_spend(server: PageServer, person: Person) -> int:
    """The spend once nothing more comes in (work after an answer, such as memory
    extraction, is counted too)."""
    last = -1
    for _ in range(20):
        used = await tokens_used(server, person)
        if used == last:
            return used
        last = used
        await asyncio.sleep(0.5)
    raise AssertionError("the spend did not settle")


async def ask_and_wait(person: Person, text: str, answers: int) -> None:
    await person.send(text)
    await expect(person.messages("assistant")).to_have_count(answers)
    await expect(person.tid("stream")).to_have_count(0)


async def local_time(person: Person, iso: str) -> str:
    return str(
        await person.page.evaluate(
            "iso => new Date(iso).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})",
            iso,
        )
    )


@pytest.mark.parametrize("server_overrides", [{"budget_tokens_per_period": LOTS}])
async def test_near_the_limit_warns_and_at_the_limit_asking_tells_when_it_renews(
    browser: Any, page_server: PageServer, watch: Watch, admin: Any
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    chip = ada.tid("budget")
    await expect(chip).to_be_visible()
    await expect(chip).to_have_attribute("data-level", "ok")
    await expect(chip).to_have_text("1.0M tokens left")
    await ada.create_session("Capitals")
    await ask_and_wait(ada, QUESTION, 1)
    # After an answer of yours the chip asks again what is left.
    await expect(chip).not_to_have_text("1.0M tokens left")
    await expect(ada.tid("budget-note")).to_be_hidden()

    # Near the limit (85 % spent): the chip turns amber on the next welcome.
    used = await tokens_used(page_server, ada)
    await set_budget(admin, ada, math.ceil(used / 0.85))
    await ada.page.reload()
    await expect(chip).to_have_attribute("data-level", "warning")
    await expect(chip).to_have_text(re.compile(r"^Budget: 1[45]% left$"))
    await expect(ada.tid("budget-note")).to_be_hidden()

    # At the limit: the question is refused in place, the text stays in the box, the
    # composer stays usable, and the note says when the budget renews in local time.
    await set_budget(admin, ada, used)
    await ada.send("And of Chile?")
    note = ada.tid("budget-note")
    await expect(note).to_be_visible()
    usage = await ada.page.evaluate("fetch('/v1/me/usage').then(r => r.json())")
    resets_at = usage["data"]["budget"]["resets_at"]
    await expect(note).to_contain_text("Your budget for the assistant is spent")
    await expect(note).to_contain_text(await local_time(ada, resets_at))
    await expect(ada.tid("composer-input")).to_have_value("And of Chile?")
    await expect(ada.tid("composer-input")).to_be_enabled()
    await expect(chip).to_have_attribute("data-level", "exhausted")
    await expect(ada.messages("user")).to_have_count(1)  # nothing was stored
    await expect(ada.tid("notice")).to_be_hidden()

    # A page opened later says so at once, from the welcome frame.
    await ada.page.reload()
    await expect(ada.tid("budget-note")).to_contain_text("renews")
    await expect(chip).to_contain_text("Budget spent · renews")


@pytest.mark.parametrize("server_overrides", [{"budget_tokens_per_period": LOTS}])
async def test_crossing_80_percent_while_the_page_is_open_warns_live(
    browser: Any, page_server: PageServer, watch: Watch, admin: Any
) -> None:
    # What one answer to QUESTION costs, measured on someone else (the offline model
    # answers the same question the same way).
    probe = await Person.sign_up(browser, page_server, watch, "Ada")
    await probe.create_session("Capitals")
    await ask_and_wait(probe, QUESTION, 1)
    cost = await settled_spend(page_server, probe)

    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await set_budget(admin, ada, math.ceil(cost / 0.9))
    await ada.page.reload()
    await expect(ada.tid("budget")).to_have_attribute("data-level", "ok")
    await ada.create_session("Capitals")
    await ask_and_wait(ada, QUESTION, 1)
    await expect(ada.tid("budget")).to_have_attribute("data-level", "warning")
    await expect(ada.tid("notice")).to_contain_text(
        re.compile(r"Most of your assistant budget for today is used: \d+% left; it renews")
    )
    await expect(ada.tid("budget-note")).to_be_hidden()


async def test_a_user_without_a_budget_sees_no_budget_at_all(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await ada.create_session("Capitals")
    await ask_and_wait(ada, QUESTION, 1)
    await ask_and_wait(ada, "And of Chile?", 2)
    await expect(ada.tid("budget")).to_be_hidden()
    await expect(ada.tid("budget-note")).to_be_hidden()
    await expect(ada.tid("notice")).to_be_hidden()
    assert await ada.page.locator(".budget:visible, .budget-note:visible").count() == 0


@pytest.mark.parametrize("token_delay_s", [0.1])
@pytest.mark.parametrize("server_overrides", [{"max_concurrent_answers": 1}])
async def test_too_many_answers_at_once_is_told_in_place(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await ada.create_session("Capitals")
    await ada.send(QUESTION)
    await expect(ada.tid("stream")).to_have_count(1)
    await ada.send("And of Chile?")
    note = ada.tid("budget-note")
    await expect(note).to_contain_text("as many answers being written as you may at once")
    await expect(ada.tid("composer-input")).to_have_value("And of Chile?")
    await expect(ada.tid("budget")).to_be_hidden()
    # Once the answer ends, the note goes and the question can be sent.
    await expect(ada.tid("stream")).to_have_count(0, timeout=60_000)
    await expect(note).to_be_hidden()
    await ada.tid("send").click()
    await expect(ada.messages("assistant")).to_have_count(2)


@pytest.mark.parametrize("server_overrides", [{"budget_tokens_per_period": 20}])
async def test_an_answer_whose_prompt_would_overrun_what_is_left_is_told_in_place(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    await ada.create_session("Capitals")
    await ada.send(QUESTION)
    note = ada.tid("budget-note")
    await expect(note).to_contain_text("has too little left to answer this question")
    usage = await ada.page.evaluate("fetch('/v1/me/usage').then(r => r.json())")
    renews = await local_time(ada, usage["data"]["budget"]["resets_at"])
    await expect(note).to_contain_text(renews)
    # The stored failure says it in local time too, not as an ISO string.
    failure = ada.messages("assistant").get_by_test_id("failure")
    await expect(failure).to_contain_text(re.compile(rf"renews (tomorrow )?at {renews}"))
    await expect(failure).not_to_contain_text("T00:00:00")
    # Not spent (no model was asked): the top bar stays quiet, the note stays put.
    await expect(ada.tid("budget")).to_have_attribute("data-level", "ok")
    await ada.page.wait_for_timeout(800)  # past the chip's refresh after the answer
    await expect(note).to_be_visible()


@pytest.mark.parametrize(
    "server_overrides", [{"budget_tokens_per_period": LOTS, "budget_payer": "owner"}]
)
async def test_a_member_refused_for_the_room_owners_budget_is_told_whose_it_is(
    browser: Any, page_server: PageServer, watch: Watch, admin: Any
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    bob = await Person.sign_up(browser, page_server, watch, "Bob")
    session_id = await ada.create_session("Capitals")
    await ada.add_member(bob)
    await bob.open_session(session_id)
    await ask_and_wait(ada, QUESTION, 1)
    await set_budget(admin, ada, await tokens_used(page_server, ada))

    await bob.send("And of Chile?")
    note = bob.tid("budget-note")
    await expect(note).to_contain_text("The room owner's budget for the assistant is spent")
    await expect(note).to_contain_text("renews")
    await expect(bob.tid("composer-input")).to_have_value("And of Chile?")
    # Bob's own budget is untouched: his top bar stays quiet, and the note stays.
    await bob.page.wait_for_timeout(800)
    await expect(bob.tid("budget")).to_have_attribute("data-level", "ok")
    await expect(note).to_be_visible()
