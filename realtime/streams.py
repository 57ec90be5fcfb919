"""Publishing one generation to its room: start, status, coalesced deltas, end.

Deltas that arrive while the previous frame is being published are coalesced into
the next frame, so a fast upstream costs one frame (one bus publish, one log append)
per batch rather than per token, while a slow one still gets each token out at once:
the first delta of a quiet period is flushed without waiting.

The pause between frames adapts: ``coalesce_s`` after a frame that held one upstream
read (a stream no faster than the pause: its tokens are not held longer than they
were), ``busy_coalesce_s`` after a frame that held several (the upstream outruns the
frames). Each frame costs every member a write and a read; fan out a fast stream to
fifty and those, not the tokens, were the relay's cost. One frame per display frame
(16 ms) is as smooth as the text can be shown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from errors import ParleyError
from realtime.hub import Hub
from realtime.stream_log import StreamLog, StreamTakenOver

log = logging.getLogger("parley.streams")


class StreamPublisher:
    def __init__(
        self,
        hub: Hub,
        stream_log: StreamLog,
        session_id: str,
        stream_id: str,
        *,
        coalesce_s: float = 0.004,
        busy_coalesce_s: float = 0.016,
        on_taken_over: Callable[[], None] | None = None,
    ) -> None:
        self._hub = hub
        self._on_taken_over = on_taken_over
        self._log = stream_log
        self.session_id = session_id
        self.stream_id = stream_id
        self._coalesce_s = coalesce_s
        self._busy_coalesce_s = busy_coalesce_s
        self._last_parts = 0  # upstream reads (``add`` calls) in the last frame
        self._buffer: list[str] = []
        self._ready = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        self._flushing = False  # a frame is on its way to the log and the bus
        # Resolved to cut the flusher's pause short (``drain``).
        self._pause: asyncio.Future[None] | None = None
        self.frames = 0  # deltas published so far: the next delta's index
        self.text_parts: list[str] = []

    @property
    def started(self) -> bool:
        return self._flusher is not None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    async def start(self, model: str, reply_to: str) -> None:
        frame = {
            "type": "stream.start",
            "session_id": self.session_id,
            "stream_id": self.stream_id,
            "model": model,
            "reply_to": reply_to,
        }
        try:
            await self._log.open(self.stream_id, self.session_id, frame)
        except ParleyError as exc:
            log.warning("stream log open failed: %s", exc.message)
        await self._hub.publish_stream(self.session_id, self.stream_id, frame)
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush-{self.stream_id}")

    async def status(self, stage: str, detail: str | None = None) -> None:
        frame: dict[str, Any] = {
            "type": "stream.status",
            "session_id": self.session_id,
            "stream_id": self.stream_id,
            "stage": stage,
        }
        if detail:
            frame["detail"] = detail
        await self._hub.publish_stream(self.session_id, self.stream_id, frame)

    def add(self, text: str) -> None:
        if text:
            self.text_parts.append(text)
            self._buffer.append(text)
            self._ready.set()

    async def flush_now(self) -> None:
        """Publish what is buffered at once, ahead of the flusher, then let members'
        writers send it. For an answer's first token: a fast upstream's first network
        chunk holds many more, and reading them does not suspend, so the flusher would
        run (and the first token go out) only after all of them were read."""
        if self._flushing or self._flusher is None:
            return  # a frame is in flight (it would overtake it) or nothing started
        await self._flush()
        await asyncio.sleep(0)

    async def _flush_loop(self) -> None:
        while True:
            await self._ready.wait()
            await self._flush()
            if self._stopping:
                return
            pause_s = self._coalesce_s  # 0: no pause at all, busy or not
            if pause_s and self._last_parts > 1:
                pause_s = self._busy_coalesce_s
            if pause_s:
                await self._pause_between_frames(pause_s)

    async def _pause_between_frames(self, pause_s: float) -> None:
        """What arrives in the next ``pause_s`` goes out as one frame; ``drain`` ends
        the pause at once (the stream's end must not wait it out)."""
        loop = asyncio.get_running_loop()
        self._pause = pause = loop.create_future()
        timer = loop.call_later(pause_s, _resolve, pause)
        try:
            await pause
        finally:
            timer.cancel()
            self._pause = None

    async def _flush(self) -> None:
        self._ready.clear()
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._last_parts = len(self._buffer)
        self._buffer.clear()
        index = self.frames
        self.frames += 1
        frame = {
            "type": "stream.delta",
            "session_id": self.session_id,
            "stream_id": self.stream_id,
            "index": index,
            "text": text,
        }
        self._flushing = True
        try:
            # The log first: a client resuming after seeing this delta must find it there.
            try:
                await self._log.append(self.stream_id, index, text)
            except StreamTakenOver:
                # Another node ended this stream for the room: publish nothing more.
                log.warning("stream %s was taken over by another node", self.stream_id)
                self._fall_silent()
                if self._on_taken_over is not None:
                    self._on_taken_over()
                return
            except ParleyError as exc:
                # Without the log a resume may come up short, but the answer goes on and
                # is stored whole at the end: never lose the generation over it.
                log.warning("stream log append failed: %s", exc.message)
            await self._hub.publish_stream(self.session_id, self.stream_id, frame, index=index)
        finally:
            self._flushing = False

    async def stop(self) -> None:
        """Publish nothing more: another node ended this stream."""
        self._fall_silent()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)

    def _fall_silent(self) -> None:
        self._stopping = True
        self._buffer.clear()

    async def drain(self) -> None:
        """Publish what is buffered and stop: the text is all in the log and on the
        bus. The writer drains before it settles the stream and stores the answer, so
        that nothing it publishes afterwards races its own settle (and the text it
        stores is exactly what the log holds)."""
        self._stopping = True
        self._ready.set()
        if self._pause is not None:
            _resolve(self._pause)
        if self._flusher is not None:
            # Let the flusher finish its frame rather than cancel it half way through.
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._flush()

    async def end(self, frame: dict[str, Any], seq: int | None) -> None:
        """Flush what is buffered, then publish ``stream.end`` (carrying ``seq``)."""
        await self.drain()
        try:
            await self._log.finish(self.stream_id, frame)
        except ParleyError as exc:
            log.warning("stream log finish failed: %s", exc.message)
        # ``index`` on an end: how many deltas there were, so that a member who missed
        # the last ones is sent them from the log before the end.
        await self._hub.publish_stream(
            self.session_id, self.stream_id, frame, index=self.frames, end_seq=seq, is_end=True
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
