"""What server/serving.py relies on inside uvicorn, asserted, so an upgrade fails here.

``GuardedHttpProtocol`` and ``HeartbeatWebSocketProtocol`` subclass uvicorn's private
protocol classes, override some of their methods, read and replace attributes those
classes set, and rebuild the WebSocket protocol's ``__dict__``. pyproject.toml pins
uvicorn to the minor these tests describe; moving the pin means reading uvicorn's
changes against this list (and the tests under tests/ws, which drive the real thing).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from importlib.metadata import version
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from server import serving
from tests.conftest import make_settings

# The minor the patch was written against; pyproject.toml pins the same.
PATCHED_MINOR = "0.55"

# Methods the subclasses override (and call through ``super()``).
HTTP_OVERRIDES = (
    "connection_made",
    "connection_lost",
    "on_message_begin",
    "on_headers_complete",
    "handle_websocket_upgrade",
)
WS_OVERRIDES = (
    "connection_lost",
    "handle_connect",
    "start_keepalive",
    "keepalive_timeout",
    "run_asgi",
)
# Attributes uvicorn's WebSocket protocol sets in ``__init__`` that serving.py reads
# or replaces.
WS_ATTRIBUTES = (
    "config",
    "loop",
    "transport",
    "queue",
    "writable",
    "conn",
    "close_sent",
    "disconnected",
    "handshake_complete",
    "pong_timer",
    "pending_ping_payload",
)
HTTP_ATTRIBUTES = ("config", "loop")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    return None


def _config() -> uvicorn.Config:
    config = serving.uvicorn_config(_app, make_settings("sqlite+aiosqlite://"), lifespan="off")
    config.load()
    return config


def test_uvicorn_is_the_minor_the_patch_was_written_for() -> None:
    assert version("uvicorn").startswith(PATCHED_MINOR + "."), (
        "server/serving.py patches uvicorn's private protocols: re-check them, then "
        "move PATCHED_MINOR and the pin in pyproject.toml"
    )


@pytest.mark.parametrize(
    ("base", "names"),
    [(HttpToolsProtocol, HTTP_OVERRIDES), (WebSocketsSansIOProtocol, WS_OVERRIDES)],
)
def test_every_overridden_method_still_exists_with_its_signature(
    base: type, names: tuple[str, ...]
) -> None:
    subclass = (
        serving.GuardedHttpProtocol
        if base is HttpToolsProtocol
        else serving.HeartbeatWebSocketProtocol
    )
    for name in names:
        assert callable(getattr(base, name, None)), f"{base.__name__}.{name} is gone"
        ours = inspect.signature(getattr(subclass, name)).parameters
        theirs = inspect.signature(getattr(base, name)).parameters
        assert len(ours) == len(theirs), f"{base.__name__}.{name} changed its signature"


async def test_the_websocket_protocol_sets_the_attributes_serving_relies_on() -> None:
    theirs = WebSocketsSansIOProtocol(_config(), ServerState(), {}, asyncio.get_running_loop())

    for name in WS_ATTRIBUTES:
        assert name in vars(theirs), f"WebSocketsSansIOProtocol no longer sets {name}"
    # The two replaced by slimmer objects are the types they stand in for.
    assert isinstance(theirs.queue, asyncio.Queue)
    assert isinstance(theirs.writable, asyncio.Event)


async def test_the_http_protocol_sets_the_attributes_serving_relies_on() -> None:
    theirs = HttpToolsProtocol(_config(), ServerState(), {}, asyncio.get_running_loop())

    for name in HTTP_ATTRIBUTES:
        assert name in vars(theirs), f"HttpToolsProtocol no longer sets {name}"


def _methods_called_on(attribute: str) -> set[str]:
    source = inspect.getsource(WebSocketsSansIOProtocol)
    return set(re.findall(rf"self\.{attribute}\.(\w+)\(", source))


def test_the_slim_queue_and_flag_offer_every_method_uvicorn_calls_on_them() -> None:
    queue_calls = _methods_called_on("queue")
    writable_calls = _methods_called_on("writable")

    assert queue_calls and writable_calls  # the scan still finds the calls
    assert queue_calls <= {"put_nowait", "get", "empty"}
    assert writable_calls <= {"set", "clear", "is_set", "wait"}
    for name in queue_calls:
        assert callable(getattr(serving._ReceiveQueue, name))
    for name in writable_calls:
        assert callable(getattr(serving._WritableFlag, name))


def test_the_handshake_and_keepalive_steps_serving_hooks_still_happen_where_it_expects() -> None:
    # handle_connect stores the request, response and scope that serving.py empties or
    # extends; send() writes the 101 and only then calls start_keepalive, after which
    # the response is not read again; keepalive_timeout is what the pong timer calls.
    handle_connect = inspect.getsource(WebSocketsSansIOProtocol.handle_connect)
    send = inspect.getsource(WebSocketsSansIOProtocol.send)
    ping = inspect.getsource(WebSocketsSansIOProtocol.send_keepalive_ping)

    for assigned in ("self.request = ", "self.response = ", "self.scope"):
        assert assigned in handle_connect
    assert '"extensions"' in handle_connect
    assert send.index("self.conn.send_response(self.response)") < send.index(
        "self.start_keepalive()"
    )
    assert "self.response" not in send[send.index("self.start_keepalive()") :]
    assert "self.keepalive_timeout" in ping
