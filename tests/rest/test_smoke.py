from __future__ import annotations

import httpx

from tests.conftest import create_session, register_user


async def test_a_new_user_can_create_a_session_and_read_its_empty_history(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user, title="first")

    response = await client.get(f"/v1/sessions/{session_id}/messages", headers=user.headers)

    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "data": {"messages": [], "next_before_seq": None},
    }
