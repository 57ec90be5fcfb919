"""Settings as an operator gives them: environment variables, empty ones included."""

from __future__ import annotations

import pytest

from server.config import load_settings


def test_empty_keys_mean_unset_so_the_offline_model_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What `docker compose up` passes for ${OPENROUTER_API_KEY:-} when nobody set it.
    monkeypatch.setenv("OPENROUTER_API_KEY", "")
    monkeypatch.setenv("TAVILY_API_KEY", "")
    monkeypatch.setenv("EMBEDDINGS_URL", "")

    settings = load_settings(jwt_secret="s" * 32)

    assert settings.openrouter_api_key is None
    assert settings.offline_model
    assert settings.tavily_api_key is None
    assert settings.embeddings_url is None


def test_a_given_key_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-test")

    settings = load_settings(jwt_secret="s" * 32)

    assert settings.openrouter_api_key is not None
    assert settings.openrouter_api_key.get_secret_value() == "sk-or-v1-test"
    assert not settings.offline_model


def _log_one_line(stderr_is_terminal: bool) -> str:
    """What a process configured like ``parley serve`` (LOG_JSON unset) writes for one log."""
    import os
    import pty
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from server.logging import configure_logging\n"
        "configure_logging('INFO', None)\n"
        "logging.getLogger('parley.test').info('hello')\n"
    )
    if not stderr_is_terminal:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return done.stderr
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", code], stderr=follower, check=True)
        return os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)


def test_logs_are_json_lines_for_a_collector_and_human_lines_on_a_terminal() -> None:
    import orjson

    piped = _log_one_line(stderr_is_terminal=False)
    on_terminal = _log_one_line(stderr_is_terminal=True)

    assert orjson.loads(piped)["message"] == "hello"
    assert "hello" in on_terminal
    assert not on_terminal.lstrip().startswith("{")
