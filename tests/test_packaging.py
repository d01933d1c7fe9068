"""What an installed package promises before any call: a silent import, on every dependency
version it accepts (CI runs this file on the lowest declared versions too)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "modules",
    [
        "oxen_queue",
        "oxen_queue.testing",
        "oxen_queue.testing._pytest_plugin",
        "oxen_queue._cli, oxen_queue._cli._main",
    ],
)
def test_importing_the_package_is_silent_with_warnings_as_errors(modules: str) -> None:
    """``python -W error -c "import ..."`` succeeds and prints nothing: no DeprecationWarning,
    no pydantic warning about the ``model_`` namespace (pydantic 2.7 warns for ``model_name``
    unless the models say otherwise)."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {modules}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""
