"""The model that goes upstream is one the operator offers, even for a session stored
before the allow-list (``LLM_MODELS``) was narrowed."""

from __future__ import annotations

import uuid

from db.repositories import sessions as sessions_repo
from tests.context.answers import MODEL, Answers
from tests.fakes.openrouter import fake_openrouter

__all__ = ["fake_openrouter"]


async def test_a_stored_model_no_longer_offered_is_not_sent_upstream(answers: Answers) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    database = answers.server.container.database
    async with database.transaction() as session:
        await sessions_repo.update_session(session, uuid.UUID(session_id), model="openai/o1-pro")

    await answers.ask(ada, session_id, "Hello there")

    asked = answers.streamed_requests()[-1].json or {}
    assert asked["model"] == MODEL
