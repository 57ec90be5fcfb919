"""The benchmarks' fake OpenRouter, in a process of its own.

    .venv/bin/python -m bench.fake_upstream

Prints its port on the first line of stdout, then serves ``tests.fakes.openrouter``
(httptools) until terminated. ``POST /_bench/fast {"tokens": n}`` makes every later
completion ``Fast(n)``: ``n`` tokens as fast as it can write them.

A process of its own because an upstream is one: sharing a process with the
benchmark's clients, the fake and fifty members' reads took turns on one interpreter
lock, and each slowed the other in a way no deployment would.

Its start-up heap is frozen before it serves, as the server's is: a full collection
of it took 15 ms, and struck about once a run, always in the same round (the
60th), where it was charged to whichever path was asking: that was the WebSocket
path's p99.
"""

from __future__ import annotations

import gc
import socket

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.openrouter import FakeOpenRouter, Fast


def main() -> None:
    fake = FakeOpenRouter()
    fake.default = Fast(1)
    app = fake.app()

    async def fast(request: Request) -> Response:
        fake.default = Fast(int((await request.json())["tokens"]))
        fake.requests.clear()  # it records every request; a benchmark sends thousands
        return Response(status_code=204)

    app.add_route("/_bench/fast", fast, methods=["POST"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, http="httptools", ws="none", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    gc.collect()
    gc.freeze()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
