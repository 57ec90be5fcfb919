"""/metrics tells an operator what the realtime layer is doing."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer, TestUser
from tests.ws.conftest import Connect


def samples(text: str) -> dict[str, float]:
    """Prometheus text as ``{"name{labels}": value}``."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


async def test_metrics_count_connections_rooms_frames_and_fanout_after_traffic(
    live_server: LiveServer,
    connect: Connect,
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
) -> None:
    ada, bob, session_id = room
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})
    for n in range(3):
        await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": f"m{n}", "reply": "none"}
        )
    for client in (ada_ws, bob_ws):
        for _ in range(3):
            await client.next("message")
    await ada_ws.request({"type": "ping"})

    response = await live_client.get("/metrics")
    assert response.status_code == 200
    values = samples(response.text)

    assert values["parley_ws_connections"] == 2
    assert values["parley_rooms"] == 1
    assert values['parley_frames_in_total{type="join"}'] == 2
    assert values['parley_frames_in_total{type="message"}'] == 3
    assert values['parley_frames_in_total{type="ping"}'] == 1
    # Three messages to two members, plus Bob's presence join reaching Ada.
    assert values["parley_frames_out_total"] >= 7
    assert values["parley_fanout_seconds_count"] >= 4
    assert 0 <= values["parley_fanout_seconds_sum"] < values["parley_fanout_seconds_count"]
    assert values["parley_slow_clients_dropped_total"] == 0

    await bob_ws.request({"type": "leave", "session_id": session_id})
    await ada_ws.request({"type": "leave", "session_id": session_id})
    await bob_ws.close()
    after = samples((await live_client.get("/metrics")).text)
    assert after["parley_rooms"] == 0
    assert after["parley_ws_connections"] in (1, 2)  # Bob's goes as soon as the server sees it
