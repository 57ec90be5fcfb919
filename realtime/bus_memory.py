"""Single-node bus: publishing hands the message straight to the handler."""

from __future__ import annotations

from realtime.bus import GapHandler, LostHandler, MessageHandler


class MemoryBus:
    """A ``Bus`` for one process. Never loses a message, so ``on_gap`` is never called."""

    def __init__(self, on_message: MessageHandler, on_gap: GapHandler | None = None) -> None:
        self._on_message = on_message
        self._on_gap = on_gap
        self.on_lost: LostHandler | None = None  # never lost
        self._channels: set[str] = set()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self._channels.clear()

    async def publish(self, channel: str, data: bytes) -> None:
        # Synchronous delivery keeps publish order trivially, as Redis would per node.
        if channel in self._channels and not self._closed:
            self._on_message(channel, data)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    @property
    def healthy(self) -> bool:
        return not self._closed

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)
