"""Ending the generations of a node that died while they ran.

A node that is SIGKILLed (or loses its host) leaves its running streams open: members
elsewhere saw part of an answer, ``join`` lists the stream as running and ``resume``
would wait for deltas that never come. The node that finds it dead (presence's
reaper, on every node with Redis) takes its streams over: it stores the text the
stream log holds as the answer, marked ``error``, and publishes the ``stream.end``
the dead node never sent, with ``unavailable``. The log holds at least what members
saw (each delta is logged before it is published), so the stored answer is what
they read, or more. If the dead node had stored its answer already (it died just
after), that answer is the one sent; if the log could not be trusted (a failed
append), or storing fails now, the stream still ends, without a message.

What is not recovered: the dead node's upstream usage (its generation id died with
it), so no usage event is recorded for these answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from db.engine import Database
from db.repositories import messages as messages_repo
from llm.tokens import count_text
from realtime.hub import Hub
from realtime.stream_log import StreamSnapshot
from realtime.streams import StreamPublisher
from server.assistant.turn_cache import TurnCache, turn_of
from server.metrics import Metrics
from server.services.wire import message_to_wire

log = logging.getLogger("parley.takeover")

NODE_GONE_MESSAGE = "the server answering this stopped before it finished"
STORE_TIMEOUT_S = 10.0


class StreamTakeover:
    def __init__(self, database: Database, hub: Hub, turns: TurnCache, metrics: Metrics) -> None:
        self._db = database
        self._hub = hub
        self._turns = turns
        self._metrics = metrics

    async def node_gone(self, node_id: str) -> None:
        """End every stream ``node_id`` was writing (presence's ``on_node_gone``)."""
        for snapshot in await self._hub.stream_log.claim_orphans(node_id):
            stream_id = snapshot.stream_id
            try:
                await self._end(snapshot)
            except Exception:
                log.exception("could not end stream %s of dead node %s", stream_id, node_id)
            else:
                log.warning("ended stream %s of dead node %s", stream_id, node_id)

    async def _end(self, snapshot: StreamSnapshot) -> None:
        text = "".join(text for _, text in snapshot.deltas)
        start = snapshot.start or {}
        model = start.get("model")
        reply_to = start.get("reply_to")
        stored: dict[str, Any] | None = None
        seq: int | None = None
        try:
            # Bounded: a hung database must not hold the reaper, nor leave the room
            # waiting for an end.
            async with asyncio.timeout(STORE_TIMEOUT_S):
                stored, seq = await self._store(snapshot, text, model, reply_to)
        except Exception:
            # The room still hears that the stream ended; the text stays in the stream
            # log until its TTL.
            log.exception("could not store the answer of stream %s", snapshot.stream_id)
        self._metrics.generations.labels("error").inc()
        self._metrics.streams_taken_over.inc()
        end = {
            "type": "stream.end",
            "session_id": snapshot.session_id,
            "stream_id": snapshot.stream_id,
            "finish_reason": "error",
            "model": model,
            # The prompt's count died with its node; the text's is known.
            "usage": {"prompt_tokens": 0, "completion_tokens": count_text(text)},
            "message": stored,
            "error": {"code": "unavailable", "message": NODE_GONE_MESSAGE},
        }
        publisher = StreamPublisher(
            self._hub, self._hub.stream_log, snapshot.session_id, snapshot.stream_id
        )
        # What the dead node logged, published or not: members who missed the last
        # deltas get them from the log before the end.
        publisher.frames = len(snapshot.deltas)
        await publisher.end(end, seq)

    async def _store(
        self, snapshot: StreamSnapshot, text: str, model: str | None, reply_to: str | None
    ) -> tuple[dict[str, Any] | None, int | None]:
        """The answer as stored: by the dead node, if it died storing it, else now."""
        session_id = uuid.UUID(snapshot.session_id)
        question_id = uuid.UUID(reply_to) if reply_to else None
        async with self._db.transaction() as session:
            if question_id is not None:
                existing = await messages_repo.find_answer(session, session_id, question_id)
                if existing is not None:
                    return message_to_wire(existing), existing.seq
            if not text:
                return None, None
            appended = await messages_repo.append_answer(
                session,
                session_id=session_id,
                content=text,
                status="error",
                model=model,
                reply_to=question_id,
            )
        stored = message_to_wire(appended.message)
        self._turns.appended(session_id, turn_of(stored), appended.history_revision, None)
        self._metrics.messages_stored.labels("assistant").inc()
        return stored, appended.message.seq
