"""Budget fixtures: a live app on the fake OpenRouter (``tests.context.answers``), an
admin, and the caller's usage as ``GET /v1/me/usage`` reports it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import update

from db.models import User
from tests.conftest import TestUser
from tests.context.answers import Answers, StartAnswers, answers_factory
from tests.fakes.openrouter import FakeOpenRouter, fake_openrouter
from tests.fakes.tavily import FakeTavily, fake_tavily

__all__ = ["fake_openrouter", "fake_tavily"]


@pytest.fixture
def start_answers(
    database_url: str, fake_openrouter: FakeOpenRouter, fake_tavily: FakeTavily
) -> StartAnswers:
    return answers_factory(database_url, fake_openrouter, fake_tavily)


async def make_admin(answers: Answers) -> TestUser:
    admin = await answers.user("Root")
    async with answers.server.container.database.transaction() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(admin.id)).values(role="admin")
        )
    return admin


async def usage(answers: Answers, user: TestUser) -> dict[str, Any]:
    """The caller's usage once every spend recorded so far is stored."""
    await answers.server.container.budgets.flush()
    response = await answers.http.get("/v1/me/usage", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def kinds(report: dict[str, Any]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for line in report["spend"]:
        counted[line["kind"]] = counted.get(line["kind"], 0) + line["calls"]
    return counted


async def after_one_answer(answers: Answers) -> tuple[TestUser, TestUser, str, dict[str, Any]]:
    """An admin, and Ada with a session in which she had one answer: the four, with
    Ada's budget as ``GET /v1/me/usage`` then reports it."""
    admin, ada = await make_admin(answers), await answers.user()
    session_id = await answers.session(ada)
    await answers.ask(ada, session_id, "What is the capital of Peru?")
    return admin, ada, session_id, (await usage(answers, ada))["budget"]
