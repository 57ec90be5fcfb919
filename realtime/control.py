"""The operations of the bus's control channel, named once.

A control message is an ``Envelope`` of kind ``control`` on ``Keys.control_channel()``,
heard by every node (the sender too); its ``action`` is a JSON object whose ``op`` is
one of these. ``Hub.control_handlers`` maps each op to what this node does about it;
an op no handler knows is ignored, so a newer node's message does not break an older
one during a rolling deploy.

    ================= ========================= ===========================================
    op                registered by             other fields: what the receiving node does
    ================= ========================= ===========================================
    disconnect_user   realtime/hub.py           ``user_id``, ``code``, ``reason`` and
                                                ``family``?: close that user's sockets
                                                (only the family's, when given)
    user_frame        realtime/hub.py           ``user_id``, ``frame``: send the frame to
                                                every connection of that user (budget
                                                warnings)
    remove_member     realtime/hub.py           ``session_id``, ``user_id``: the user
                                                leaves the room on every connection
    resync            realtime/hub.py           ``from``, ``sessions`` (null: all): a
                                                peer's events reached nobody, re-read them
    cancel_stream     server/assistant/         ``stream_id``, ``session_id``, ``by``: stop
                      generation.py             the generation if it runs here
    supersede_answers server/assistant/         ``session_id``, ``question_id``, ``keep``:
                      generation.py             stop every answer to that question but
                                                ``keep`` (a regeneration replaces them)
    caller_changed    server/services/          ``user_id``: drop the cached caller row
                      hub_links.py
    api_key_revoked   server/services/          ``key_id``: drop the verified API key
                      hub_links.py
    ================= ========================= ===========================================
"""

from __future__ import annotations

from enum import StrEnum


class ControlOp(StrEnum):
    DISCONNECT_USER = "disconnect_user"
    USER_FRAME = "user_frame"
    REMOVE_MEMBER = "remove_member"
    RESYNC = "resync"
    CANCEL_STREAM = "cancel_stream"
    SUPERSEDE_ANSWERS = "supersede_answers"
    CALLER_CHANGED = "caller_changed"
    API_KEY_REVOKED = "api_key_revoked"
