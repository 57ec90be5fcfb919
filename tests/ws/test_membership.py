"""Membership changes reach every member of the room live, with names."""

from __future__ import annotations

import httpx

from tests.conftest import TestUser, register_user
from tests.ws.conftest import Connect


async def test_every_member_is_told_who_was_added_invited_in_and_removed(
    connect: Connect, room: tuple[TestUser, TestUser, str], live_client: httpx.AsyncClient
) -> None:
    ada, bob, session_id = room
    cyd, dee = await register_user(live_client, "Cyd"), await register_user(live_client, "Dee")
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})
    members_url = f"/v1/sessions/{session_id}/members"

    added = await live_client.post(members_url, json={"user_id": cyd.id}, headers=ada.headers)
    assert added.status_code == 201
    invited = await live_client.post(members_url, json={"email": dee.email}, headers=ada.headers)
    assert invited.status_code == 202
    invitations = await live_client.get("/v1/me/invitations", headers=dee.headers)
    [invitation] = invitations.json()["data"]["invitations"]
    await live_client.post(f"/v1/me/invitations/{invitation['id']}/accept", headers=dee.headers)
    removed = await live_client.delete(f"{members_url}/{cyd.id}", headers=ada.headers)
    assert removed.status_code == 200

    for client in (ada_ws, bob_ws):
        changes = [await client.next("member", timeout=5) for _ in range(3)]
        assert [(f["user_id"], f["name"], f["change"]) for f in changes] == [
            (cyd.id, "Cyd", "added"),
            (dee.id, "Dee", "added"),
            (cyd.id, "Cyd", "removed"),
        ]
        assert {f["session_id"] for f in changes} == {session_id}
