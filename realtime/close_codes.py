"""Every WebSocket close code Parley sends or acts on, named once.

The contract (../shared/protocol.md, "Close codes"), which this enum implements:

    ====== =============================================================== ==========
    code   meaning                                                         name
    ====== =============================================================== ==========
    1001   the server is shutting down: reconnect (with backoff), any node GOING_AWAY
    1012   the server is restarting: as 1001                               RESTARTING
    1009   frame too large                                                 TOO_LARGE
    4401   the access token expired or was revoked and no ``refresh`` came TOKEN_EXPIRED
    4403   the user lost access                                            FORBIDDEN
    4408   no frame for two heartbeat intervals                            HEARTBEAT_TIMEOUT
    4429   closed for repeated abuse (rate limits)                         ABUSE
    ====== =============================================================== ==========

Parley adds 1000 (a normal close, what a client sends when it leaves) and 1013 (the
connection could not keep up: its send queue filled). ``CLOSE_CODE_DOCS`` says what
each means and what a client does about it: ``python -m server.protocol_doc`` writes
that into docs/protocol.md §6 and writes ``server/static/close_codes.js`` for the page,
so the server, the terminal client and the page use the same names.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_LARGE = 1009
    RESTARTING = 1012
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4401
    FORBIDDEN = 4403
    HEARTBEAT_TIMEOUT = 4408
    ABUSE = 4429


# Codes after which a client does not reconnect on its own: the user has to act.
DO_NOT_RECONNECT: frozenset[CloseCode] = frozenset({CloseCode.FORBIDDEN, CloseCode.ABUSE})

# (meaning, what a client does) of every code, for docs/protocol.md's table.
CLOSE_CODE_DOCS: dict[CloseCode, tuple[str, str]] = {
    CloseCode.NORMAL: ("normal close", "—"),
    CloseCode.GOING_AWAY: ("the server is shutting down", "reconnect with backoff, to any node"),
    CloseCode.RESTARTING: ("the server is restarting", "reconnect with backoff, to any node"),
    CloseCode.TOO_LARGE: ("a frame over the size limit", "fix the client; reconnect"),
    CloseCode.TRY_AGAIN_LATER: (
        "**Parley**: the connection could not keep up (its send queue filled: 1024 frames "
        "or 1 MiB by default); sent at once, behind at most ~64 KiB already on its way, "
        "and the socket is reset if the client does not read it within 2 s",
        "reconnect and resume",
    ),
    CloseCode.TOKEN_EXPIRED: (
        "the access token expired or was revoked and no `refresh` came in time",
        "get a new token, reconnect (or send `refresh` before expiry)",
    ),
    CloseCode.FORBIDDEN: ("the user lost access", "do not reconnect automatically"),
    CloseCode.HEARTBEAT_TIMEOUT: ("no frame for two heartbeat intervals", "reconnect"),
    CloseCode.ABUSE: ("closed for repeated abuse", "do not reconnect at once"),
}
