"""Every Redis key and channel name Parley uses, and their lifetimes.

All names start with a prefix, ``parley`` by default. The module-level functions
use the default; an implementation that takes ``prefix=`` builds a ``Keys`` of its
own, which is how tests keep their keys apart on a shared Redis. Lifetimes carry
their unit in the name (``_S`` seconds, ``_MS`` milliseconds).

Layout (``P`` is the prefix)::

    P:room:{session_id}               pub/sub channel of one room
    P:control                         pub/sub channel for node-wide control (stream cancel)
    P:online:{user_id}                string, TTL ONLINE_TTL_S
    P:presence:{session_id}:conns     hash conn_id -> user_id
    P:presence:{session_id}:users     hash user_id -> number of connections
    P:presence:{session_id}:names     hash user_id -> display name
    P:node:{node_id}                  string, the node's heartbeat, TTL node_ttl_ms()
    P:node:{node_id}:conns            set of "{session_id}\\x1f{conn_id}" held by the node
    P:node:{node_id}:streams          set of stream ids the node is writing
    P:nodes                           set of node ids that may hold presence entries
    P:presence-reaper                 string, the reaper's lock
    P:stream:{stream_id}:meta         hash session_id, node, start, end (JSON), settled
    P:stream:{stream_id}:deltas       list of delta texts, position = delta index
    P:session:{session_id}:streams    set of stream ids that have not ended
    P:ws-ticket:{ticket}              string, TTL WS_TICKET_TTL_S
    P:search:{hash}                   string, TTL SEARCH_CACHE_TTL_S
    P:user-context:{user_id}          string, TTL USER_CONTEXT_TTL_S
    P:answers:{user_id}               sorted set slot token -> expiry (ms), the user's
                                      running answers (MAX_CONCURRENT_ANSWERS)
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "parley"

# Presence: a SIGKILLed node's users leave within PRESENCE_TTL_S as seen by the others.
PRESENCE_TTL_S = 30
ONLINE_TTL_S = PRESENCE_TTL_S
# The heartbeat runs three times per presence TTL and the node key lives for two of
# those periods, so one late heartbeat is forgiven; the reaper looks twice per period.
# Worst case for a dead node: key gone after 2/3 TTL, reaped within 1/6 TTL more.
NODE_HEARTBEAT_INTERVAL_S = PRESENCE_TTL_S / 3
NODE_TTL_S = PRESENCE_TTL_S * 2 / 3
REAPER_INTERVAL_S = PRESENCE_TTL_S / 6
REAPER_LOCK_TTL_MS = 5_000

STREAM_LOG_TTL_S = 600
WS_TICKET_TTL_S = 60
SEARCH_CACHE_TTL_S = 3600
USER_CONTEXT_TTL_S = 300

# Separates session id and connection id in a node's connection set; ids never hold it.
MEMBER_SEPARATOR = "\x1f"


def heartbeat_interval_s(presence_ttl_s: float) -> float:
    return presence_ttl_s / 3


def node_ttl_ms(presence_ttl_s: float) -> int:
    return max(1, int(presence_ttl_s * 2 / 3 * 1000))


def reaper_interval_s(presence_ttl_s: float) -> float:
    return presence_ttl_s / 6


@dataclass(frozen=True, slots=True)
class Keys:
    """Names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def rebase(self, name: str) -> str:
        """``name`` built under the default prefix, moved under this one.

        Lets callers pass names from the module-level functions (the hub does) to
        an implementation constructed with another prefix (the tests do). Names
        already under this prefix are kept.
        """
        if self.prefix == DEFAULT_PREFIX or name.startswith(self.prefix + ":"):
            return name
        head = DEFAULT_PREFIX + ":"
        if name.startswith(head):
            return f"{self.prefix}:{name[len(head) :]}"
        return f"{self.prefix}:{name}"

    # Pub/sub channels
    def room_channel(self, session_id: str) -> str:
        return f"{self.prefix}:room:{session_id}"

    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    # Presence
    def online(self, user_id: str) -> str:
        return f"{self.prefix}:online:{user_id}"

    @property
    def presence_room_head(self) -> str:
        """Common start of a room's presence keys; Lua scripts append id and suffix."""
        return f"{self.prefix}:presence:"

    def presence_conns(self, session_id: str) -> str:
        return f"{self.presence_room_head}{session_id}:conns"

    def presence_users(self, session_id: str) -> str:
        return f"{self.presence_room_head}{session_id}:users"

    def presence_names(self, session_id: str) -> str:
        return f"{self.presence_room_head}{session_id}:names"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def node_conns(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:conns"

    def node_streams(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:streams"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def reaper_lock(self) -> str:
        return f"{self.prefix}:presence-reaper"

    # Stream log
    def stream_meta(self, stream_id: str) -> str:
        return f"{self.prefix}:stream:{stream_id}:meta"

    def stream_deltas(self, stream_id: str) -> str:
        return f"{self.prefix}:stream:{stream_id}:deltas"

    def session_streams(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}:streams"

    # Other modules' caches
    def ws_ticket(self, ticket: str) -> str:
        return f"{self.prefix}:ws-ticket:{ticket}"

    def search_cache(self, query_hash: str) -> str:
        return f"{self.prefix}:search:{query_hash}"

    def user_context(self, user_id: str) -> str:
        return f"{self.prefix}:user-context:{user_id}"

    def answers(self, user_id: str) -> str:
        return f"{self.prefix}:answers:{user_id}"


DEFAULT_KEYS = Keys()
CONTROL_CHANNEL = DEFAULT_KEYS.control_channel()


def room_channel(session_id: str) -> str:
    return DEFAULT_KEYS.room_channel(session_id)


def online_key(user_id: str) -> str:
    return DEFAULT_KEYS.online(user_id)


def node_key(node_id: str) -> str:
    return DEFAULT_KEYS.node(node_id)


def stream_meta_key(stream_id: str) -> str:
    return DEFAULT_KEYS.stream_meta(stream_id)


def stream_deltas_key(stream_id: str) -> str:
    return DEFAULT_KEYS.stream_deltas(stream_id)


def session_streams_key(session_id: str) -> str:
    return DEFAULT_KEYS.session_streams(session_id)


def ws_ticket_key(ticket: str) -> str:
    return DEFAULT_KEYS.ws_ticket(ticket)


def search_cache_key(query_hash: str) -> str:
    return DEFAULT_KEYS.search_cache(query_hash)


def user_context_key(user_id: str) -> str:
    return DEFAULT_KEYS.user_context(user_id)
