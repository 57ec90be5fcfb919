"""A short-lived, per-node cache of callers: who a user is and when their tokens stop.

Every authenticated request needs the user's name, role, disabled flag and access-token
revocation time (``users_repo.caller``); reading them costs a database round trip in
front of everything else, the first token of an SSE answer included. The rows change
rarely and only through ``AccountService``, which drops the entry on this node at once
and tells the other nodes over the bus. The TTL bounds how stale an entry can be when
that notice cannot arrive (the bus is down, or a change came from outside any node).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from db.repositories.users import Caller

DEFAULT_MAX_ENTRIES = 4096


class CallerCache:
    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        # user_id -> (expires at, row); the order is least recently used first.
        self._entries: OrderedDict[uuid.UUID, tuple[float, Caller]] = OrderedDict()
        # Counts drops. A read that started before a drop may carry the row from before
        # the change; ``put`` refuses it so that it cannot outlive the drop.
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    @property
    def generation(self) -> int:
        """Take this before reading the database and hand it to ``put``."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: uuid.UUID) -> Caller | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        expires_at, caller = entry
        if expires_at <= self._clock():
            del self._entries[user_id]
            return None
        self._entries.move_to_end(user_id)
        return caller

    def put(self, user_id: uuid.UUID, caller: Caller, generation: int) -> None:
        if not self.enabled or generation != self._generation:
            return
        self._entries[user_id] = (self._clock() + self.ttl_s, caller)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def drop(self, user_id: uuid.UUID) -> None:
        self._generation += 1
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
