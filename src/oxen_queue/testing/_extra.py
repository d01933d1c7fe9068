"""Whether the ``emulator`` extra is installed: the one check, made when the package is
imported.

The emulator serves with uvicorn and renders its result files with Pillow (images) and PyAV
(videos): pyproject's ``emulator`` extra. Without them ``import oxen_queue.testing`` (and so
``Emulator``, ``use_emulator()``, ``run_server``, the CLI's ``--emulator``, ``demo`` and
``emulator``) raises `ModuleNotFoundError` at once, its message the line to install
them, rather than a bare ``No module named 'uvicorn'`` from deep inside a server thread.

The check finds the modules without importing them (``importlib.util.find_spec``), so the
import stays as light as it was: the heavy modules load when a server starts or a file is
rendered. The pytest plugin lives outside this package (``oxen_queue._pytest_plugin``) so
that pytest still starts where the extra is missing.
"""

from __future__ import annotations

import importlib.util
from typing import Final

__all__ = ["EMULATOR_EXTRA_HINT", "missing_distributions", "require_emulator_extra"]

EMULATOR_EXTRA_HINT: Final = "pip install 'oxen-queue[emulator]'"

# module -> the distribution that provides it (what pip names)
_MODULES: Final = {"uvicorn": "uvicorn", "PIL": "Pillow", "av": "PyAV"}


def missing_distributions() -> dict[str, str]:
    """The extra's modules that cannot be found, each with its distribution's name."""
    missing: dict[str, str] = {}
    for module, distribution in _MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install, or sys.modules[module] = None
            found = False
        if not found:
            missing[module] = distribution
    return missing


def require_emulator_extra() -> None:
    """Do nothing when the extra is installed.

    Raises:
        ModuleNotFoundError: One of its modules is missing; the message is one line that
            names them and says ``pip install 'oxen-queue[emulator]'``; ``name`` is the
            first missing module.
    """
    missing = missing_distributions()
    if missing:
        names = ", ".join(missing.values())
        raise ModuleNotFoundError(
            f"the emulator needs the 'emulator' extra (missing: {names}): "
            f"{EMULATOR_EXTRA_HINT}  (or: uv add 'oxen-queue[emulator]')",
            name=next(iter(missing)),
        )
