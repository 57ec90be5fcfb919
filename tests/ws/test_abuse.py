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


# One message quota every way in ---------------------------------------------------------


async def test_rest_posts_plain_and_streamed_share_the_websocket_message_quota(
    database_url: str,
) -> None:
    async with serve(database_url, messages_per_window=3, message_window_s=60) as server:
        ada, _, session_id = await pair(server)
        url = f"/v1/sessions/{session_id}/messages"
        ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            await ws.request({"type": "join", "session_id": session_id})
            ack = await ws.request(
                {"type": "message", "session_id": session_id, "content": "ws", "reply": "none"}
            )
            assert ack["type"] == "ack"
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                plain = await http.post(
                    url, json={"content": "rest", "reply": "none"}, headers=ada.headers
                )
                assert plain.status_code == 201, plain.text
                streamed = await http.post(
                    url,
                    json={"content": "sse"},
                    headers={**ada.headers, "Accept": "text/event-stream"},
                )
                assert streamed.status_code == 201, streamed.text
                # The quota (3) is spent across the three ways in: each now refuses.
                refused_plain = await http.post(
                    url, json={"content": "one more", "reply": "none"}, headers=ada.headers
                )
                refused_sse = await http.post(
                    url,
                    json={"content": "and another"},
                    headers={**ada.headers, "Accept": "text/event-stream"},
                )
                refused_ws = await ws.request(
                    {"type": "message", "session_id": session_id, "content": "ws again"}
                )
                history = await http.get(url, headers=ada.headers)
        finally:
            await ws.close()
    for response in (refused_plain, refused_sse):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
    assert refused_ws["code"] == "rate_limited"
    users = [m["content"] for m in history.json()["data"]["messages"] if m["role"] == "user"]
    assert users == ["ws", "rest", "sse"]
