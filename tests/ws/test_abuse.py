"""Abuse through connections and frames: cancelling another room's answer, a quota
every way in, rate limits on every frame type, a byte-bounded outbox, paged replays
and caps on connections (docs/security.md, "Connections and frames")."""

from __future__ import annotations

import httpx

from tests.conftest import create_session
from tests.ws.test_limits import pair, serve
from tests.wsclient import WSClient


async def test_cancel_with_own_session_and_another_rooms_stream_is_not_found(
    database_url: str,
) -> None:
    # Slow enough that the answer is still running when the cancel arrives.
    async with serve(database_url, offline_token_delay_s=0.2) as server:
        ada, bob, ada_session = await pair(server)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            mallory_session = await create_session(http, bob, title="mallory's own")
        ada_ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
        bob_ws, _ = await WSClient.connect(server.ws_url, bob.access_token)
        try:
            await ada_ws.request({"type": "join", "session_id": ada_session})
            ack = await ada_ws.request(
                {"type": "message", "session_id": ada_session, "content": "a long one"}
            )
            await ada_ws.next("stream.delta")

            # Bob names his own session and Ada's stream.
            reply = await bob_ws.request(
                {"type": "cancel", "session_id": mallory_session, "stream_id": ack["stream_id"]}
            )
            assert reply["type"] == "error"
            assert reply["code"] == "not_found"
            # Ada's answer runs on: further deltas, then an end that is not cancelled.
            await ada_ws.next("stream.delta")
            end = await ada_ws.next("stream.end", timeout=30)
            assert end["finish_reason"] == "stop"
        finally:
            await ada_ws.close()
            await bob_ws.close()
