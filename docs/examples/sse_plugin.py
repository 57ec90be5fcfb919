"""The same plugin without a WebSocket: ``POST /v1/sessions/{id}/messages`` with
``Accept: text/event-stream`` stores the prompt and streams the answer back as
server-sent events (``event:`` is the frame type, ``data:`` the frame's JSON). If the
connection drops, it posts again with the same ``client_msg_id`` and the last event's
id as ``Last-Event-ID``, and the answer goes on where it broke off.

    PARLEY_TOKEN=$(parley token --email ada@example.com) \
        python docs/examples/sse_plugin.py --session <id> "What changed since Monday?"

Needs ``httpx`` and ``httpx-sse``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import uuid

import httpx
from httpx_sse import aconnect_sse

ATTEMPTS = 5


async def ask(url: str, token: str, session_id: str | None, prompt: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    # No read timeout: an answer may pause while the assistant searches or retrieves.
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as client:
        if session_id is None:
            created = await client.post("/v1/sessions", json={"title": "sse plugin"})
            created.raise_for_status()
            session_id = created.json()["data"]["id"]

        body = {"content": prompt, "client_msg_id": uuid.uuid4().hex}
        path = f"/v1/sessions/{session_id}/messages"
        resume: dict[str, str] = {}
        texts: list[str] = []  # the deltas printed, by index
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
            question_id = None
            try:
                async with aconnect_sse(client, "POST", path, json=body, headers=resume) as events:
                    if events.response.status_code >= 400:
                        await events.response.aread()
                        code, text = events.response.status_code, events.response.text
                        raise SystemExit(f"HTTP {code}: {text}")
                    async for event in events.aiter_sse():
                        frame = json.loads(event.data)
                        if event.event == "message":
                            question_id = frame["message"]["id"]
                        elif event.event == "stream.start":
                            resume = {"Last-Event-ID": event.id}
                        elif event.event == "stream.status":
                            print(f"[{frame['stage']}]", file=sys.stderr)
                        elif event.event == "stream.delta" and frame["index"] == len(texts):
                            print(frame["text"], end="", flush=True)
                            texts.append(frame["text"])
                            resume = {"Last-Event-ID": event.id}  # where a retry goes on
                        elif event.event == "stream.end":
                            print()
                            if frame["finish_reason"] == "error":
                                print(f"failed: {frame.get('error')}", file=sys.stderr)
                            return str((frame.get("message") or {}).get("content", ""))
            except httpx.TransportError as exc:
                print(f"\n[connection lost ({exc!r}); resuming]", file=sys.stderr)
                continue
            # The response ended without the answer: it ended while we were away and
            # we had no event id to resume from. It is in the history by then.
            answer = await _stored_answer(client, path, question_id) if question_id else None
            if answer is not None:
                print(answer[len("".join(texts)) :])
                return answer
    raise SystemExit(f"no answer after {ATTEMPTS} attempts")


async def _stored_answer(client: httpx.AsyncClient, path: str, question_id: str) -> str | None:
    page = await client.get(path, params={"limit": 50})  # the newest page
    page.raise_for_status()
    for message in page.json()["data"]["messages"]:
        if message.get("reply_to") == question_id:
            return str(message["content"])
    return None


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
