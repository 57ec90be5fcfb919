"""WebSocket fixtures live in tests/conftest.py: ``connect`` and ``room``."""

from tests.conftest import Connect

__all__ = ["Connect"]
