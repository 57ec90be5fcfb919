"""A live app talking to the fake OpenRouter and the fake Tavily, driven over WebSocket.

``Answers`` registers users, opens sessions, asks questions through a real WebSocket
client and reads back what the model was sent: ``sent()`` is the newest streamed
request's messages, ``system()`` its system message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.app import create_app
from tests.conftest import LiveServer, TestUser, create_session, make_settings, register_user
from tests.fakes.openrouter import FakeOpenRouter, RecordedRequest
from tests.fakes.tavily import FakeTavily
from tests.stream.conftest import Streamed, collect_stream
from tests.wsclient import WSClient

MODEL = "openai/gpt-4o-mini"


@dataclass
class Answers:
    server: LiveServer
    http: httpx.AsyncClient
    fake: FakeOpenRouter
    tavily: FakeTavily
    sockets: dict[str, WSClient] = field(default_factory=dict)
    joined: set[tuple[str, str]] = field(default_factory=set)

    async def user(self, name: str = "Ada") -> TestUser:
        return await register_user(self.http, name)

    async def session(self, user: TestUser) -> str:
        return await create_session(self.http, user, title="answers")

    async def ask(self, user: TestUser, session_id: str, content: str, **extra: Any) -> Streamed:
        """Send a message and collect its whole stream; background work is settled."""
        client = self.sockets.get(user.id)
        if client is None:
            client, _ = await WSClient.connect(self.server.ws_url, user.access_token)
            self.sockets[user.id] = client
        if (user.id, session_id) not in self.joined:
            await client.request({"type": "join", "session_id": session_id})
            self.joined.add((user.id, session_id))
        frame = {"type": "message", "session_id": session_id, "content": content, **extra}
        ack = await client.request(frame, timeout=10)
        streamed = await collect_stream(client, ack["stream_id"], timeout=15)
        await self.settled(ack["stream_id"])
        return streamed

    async def settled(self, stream_id: str) -> None:
        """Wait for the generation to finish its bookkeeping and for what it started
        in the background (memory learning), so the next request sees its effects."""
        assistant = self.server.container.assistant
        generation = assistant.running.get(stream_id)
        if generation is not None:
            await generation.done.wait()
        await asyncio.gather(*list(assistant._background), return_exceptions=True)

    def streamed_requests(self) -> list[RecordedRequest]:
        return [r for r in self.fake.chat_requests if (r.json or {}).get("stream")]

    def sent(self) -> list[dict[str, Any]]:
        requests = self.streamed_requests()
        assert requests, "the model was never asked"
        return list((requests[-1].json or {})["messages"])

    def system(self) -> str:
        first = self.sent()[0]
        assert first["role"] == "system"
        return str(first["content"])

    async def close(self) -> None:
        for client in self.sockets.values():
            await client.close()


StartAnswers = Callable[..., AbstractAsyncContextManager[Answers]]


def answers_factory(
    database_url: str, fake: FakeOpenRouter, tavily: FakeTavily
) -> Callable[..., AbstractAsyncContextManager[Answers]]:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Answers]:
        settings = make_settings(
            database_url,
            **{
                "openrouter_api_key": "sk-or-test",
                "openrouter_base_url": fake.base_url,
                "llm_model": MODEL,
                "tavily_api_key": tavily.api_key,
                "tavily_base_url": tavily.base_url,
                "messages_per_window": 1000,
                **overrides,
            },
        )
        server = LiveServer(create_app(settings))
        await server.start()
        answers: Answers | None = None
        try:
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                answers = Answers(server, http, fake, tavily)
                yield answers
        finally:
            if answers is not None:
                await answers.close()
            await server.stop()

    return start


def stages(streamed: Streamed) -> list[str]:
    return [str(frame["stage"]) for frame in streamed.statuses]


def details(streamed: Streamed) -> list[str]:
    return [str(frame.get("detail")) for frame in streamed.statuses if frame.get("detail")]
