"""A minimal Parley plugin over the WebSocket: log in with a token, join a session,
send a prompt and print the assistant's answer as it streams.

    PARLEY_TOKEN=$(parley token --email ada@example.com) \
        python docs/examples/ws_plugin.py --session <id> "What changed since Monday?"

Only ``websockets`` and ``httpx`` are needed. A real plugin also reconnects and
resumes; see docs/protocol.md §4 and server/cli/chat.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid

import httpx
from websockets.asyncio.client import connect


async def ask(url: str, token: str, session_id: str | None, prompt: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    if session_id is None:
        # No session given: make one (POST /v1/sessions answers {"success":true,"data":…}).
        async with httpx.AsyncClient(base_url=url, headers=headers) as rest:
            created = await rest.post("/v1/sessions", json={"title": "plugin"})
            created.raise_for_status()
            session_id = created.json()["data"]["id"]

    ws_url = url.replace("http", "ws", 1) + "/v1/ws"
    async with connect(ws_url, additional_headers=headers) as ws:
        welcome = json.loads(await ws.recv())
        print(f"connected as {welcome['user']['name']}", file=sys.stderr)

        await ws.send(json.dumps({"type": "join", "session_id": session_id, "id": "join"}))
        # The prompt carries a client_msg_id, so resending it after a reconnect is safe.
        await ws.send(json.dumps({
            "type": "message", "session_id": session_id, "content": prompt,
            "client_msg_id": uuid.uuid4().hex, "id": "ask",
        }))  # fmt: skip

        my_stream: str | None = None
        next_index = 0
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "error":
                raise SystemExit(f"{frame['code']}: {frame['message']}")
            if kind == "ack" and frame.get("id") == "ask":
                my_stream = frame.get("stream_id")  # the answer to *our* message
            elif kind == "stream.status" and frame["stream_id"] == my_stream:
                print(f"[{frame['stage']}]", file=sys.stderr)
            elif kind == "stream.delta" and frame["stream_id"] == my_stream:
                if frame["index"] == next_index:  # in order, each index once
                    print(frame["text"], end="", flush=True)
                    next_index += 1
            elif kind == "stream.end" and frame["stream_id"] == my_stream:
                print()
                message = frame.get("message") or {}
                return str(message.get("content", ""))
    raise SystemExit("the connection closed before the answer ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--url", default=os.environ.get("PARLEY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("PARLEY_TOKEN"))
    parser.add_argument("--session", help="a session id (default: create one)")
    args = parser.parse_args()
    if not args.token:
        parser.error("set PARLEY_TOKEN or pass --token")
    asyncio.run(ask(args.url.rstrip("/"), args.token, args.session, args.prompt))


if __name__ == "__main__":
    main()
