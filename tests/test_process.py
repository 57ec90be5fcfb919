"""Process-wide behaviour of a started app."""

from __future__ import annotations

import gc

from server.app import create_app
from tests.conftest import make_settings


async def test_a_started_app_freezes_what_it_allocated_while_starting(database_url: str) -> None:
    app = create_app(make_settings(database_url, gc_freeze=True))
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # give the test process's objects back to the collector

    assert frozen > 10_000  # at least the modules and the ORM's mappers
