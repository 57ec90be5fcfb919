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
from collections.abc import Callable

from cachetools import TTLCache

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
        # Least recently used out first when full; an entry expires ttl_s after its put.
        self._entries: TTLCache[uuid.UUID, Caller] = TTLCache(
            maxsize=max_entries, ttl=max(ttl_s, 0.001), timer=clock
        )
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
        return self._entries.get(user_id)

    def put(self, user_id: uuid.UUID, caller: Caller, generation: int) -> None:
        if self.enabled and generation == self._generation:
            self._entries[user_id] = caller

    def drop(self, user_id: uuid.UUID) -> None:
        self._generation += 1
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
