"""The developer scripts as the README gives them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_installed_checkout_installs_again_without_any_package_index() -> None:
    # scripts/serve runs scripts/install first: with everything installed, starting the
    # server must not need the network (the test suite ran scripts/install before).
    assert (ROOT / ".venv" / ".parley-installed").exists(), "run scripts/install first"
    unreachable = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}

    result = subprocess.run(
        [str(ROOT / "scripts" / "install")],
        env=os.environ | unreachable,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "pip" not in result.stderr
