"""The ``welcome`` frame's budget: read only when a budget can apply (issue 18)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from db.repositories import spend as spend_repo
from tests.budgets.conftest import make_admin
from tests.budgets.test_budgets import set_budget
from tests.context.answers import StartAnswers
from tests.wsclient import WSClient


def count_budget_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the per-user budget reads (limits and spend) through the repository."""
    reads: Counter[str] = Counter()
    for name in ("get_budget", "spent_since"):
        original = getattr(spend_repo, name)

        async def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            reads[_name] += 1
            return await _original(*args)

        monkeypatch.setattr(spend_repo, name, counted)
    return reads


async def test_with_no_budget_configured_a_handshake_reads_no_budget(
    start_answers: StartAnswers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_answers() as answers:
        users = [await answers.user(f"U{i}") for i in range(4)]
        reads = count_budget_reads(monkeypatch)
        welcomes = []
        for user in users:
            client, welcome = await WSClient.connect(answers.server.ws_url, user.access_token)
            welcomes.append(welcome)
            await client.close()

    assert all(w.get("budget") is None for w in welcomes)
    assert reads == Counter()  # no user's limits or spend was read


async def test_a_users_own_budget_is_in_the_welcome_without_default_budgets(
    start_answers: StartAnswers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_answers() as answers:
        admin, ada, bob = await make_admin(answers), await answers.user(), await answers.user("Bob")
        await set_budget(answers, admin, ada, tokens_per_period=5000)
        answers.server.container.budgets._limits.clear()  # Ada's is read afresh
        reads = count_budget_reads(monkeypatch)
        client, adas = await WSClient.connect(answers.server.ws_url, ada.access_token)
        await client.close()
        client, bobs = await WSClient.connect(answers.server.ws_url, bob.access_token)
        await client.close()

    assert adas["budget"]["tokens"] == {"limit": 5000, "used": 0, "left": 5000}
    assert bobs.get("budget") is None
    assert reads["get_budget"] == 1  # Ada's; Bob has none of his own: the defaults, unread


async def test_a_budget_set_elsewhere_shows_at_once_to_an_admin_and_then_to_the_user(
    start_answers: StartAnswers,
) -> None:
    # Set by another node or by ``parley budget``: this node's list of users with a
    # budget of their own does not have it yet.
    async with start_answers() as answers:
        admin, ada = await make_admin(answers), await answers.user()
        client, before = await WSClient.connect(answers.server.ws_url, ada.access_token)
        await client.close()
        async with answers.server.container.database.transaction() as session:
            await spend_repo.set_budget(
                session,
                uuid.UUID(ada.id),
                tokens_per_period=7000,
                nano_usd_per_period=None,
                period="day",
            )
        seen = await answers.http.get(f"/v1/users/{ada.id}/budget", headers=admin.headers)
        client, after = await WSClient.connect(answers.server.ws_url, ada.access_token)
        await client.close()

    assert before.get("budget") is None
    assert seen.status_code == 200, seen.text
    assert seen.json()["data"]["limits"]["tokens_per_period"] == 7000
    assert after["budget"]["tokens"]["limit"] == 7000  # the admin's read told this node
