"""Idle expiry is the server's bookkeeping: a person never trips over it on the page."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from playwright.async_api import expect
from sqlalchemy import update

from db.models import ChatSession
from db.types import utcnow
from tests.browser.conftest import PageServer, Watch
from tests.browser.pages import Person

pytestmark = pytest.mark.browser


async def expire(server: PageServer, session_id: str) -> None:
    container = server.container
    async with container.database.transaction() as db:
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id == uuid.UUID(session_id))
            .values(last_activity_at=utcnow() - timedelta(hours=2))
        )

    async def nobody(session_ids: Sequence[str]) -> set[str]:
        return set()

    assert await container.sessions.expire_idle(nobody) == 1


async def test_an_expired_session_stays_in_the_list_and_writing_continues_it(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(browser, page_server, watch, "Ada")
    old_id = await ada.create_session("Last week")
    await ada.send("Remember the plan")
    await expect(ada.messages("assistant")).to_have_count(1)
    await ada.create_session("Today")
    await expire(page_server, old_id)

    await ada.page.reload()
    old_item = ada.page.locator(f'[data-testid="session-item"][data-session-id="{old_id}"]')
    await expect(old_item).to_be_visible()
    await expect(old_item).not_to_contain_text("Expired")
    await old_item.click()

    await expect(ada.tid("chat-title")).to_have_text("Last week")
    await expect(ada.tid("chat-status")).to_be_hidden()
    await expect(ada.tid("composer-input")).to_be_enabled()
    await ada.send("Back again")
    await expect(ada.messages("assistant")).to_have_count(2)
