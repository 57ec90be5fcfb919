"""The web client: static files shipped inside the package, served at ``/``."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

routes = [Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True), name="static")]
