"""Point code that reads ``OXEN_BASE_URL`` and ``OXEN_API_KEY`` at a local emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ._config import EmulatorConfig
from ._server import Emulator

__all__ = ["use_emulator"]

_VARIABLES = ("OXEN_BASE_URL", "OXEN_API_KEY")


@contextmanager
def use_emulator(
    *, config: EmulatorConfig | None = None, unless_key_set: bool = False
) -> Iterator[Emulator | None]:
    """Run an emulator and point the environment at it for the duration of the block.

    Sets ``OXEN_BASE_URL`` to the emulator and ``OXEN_API_KEY`` to a dummy key, and restores
    both afterwards, so code that builds ``AsyncClient()`` from the environment runs offline:

    ```python
    with use_emulator():
        anyio.run(main)
    ```

    Args:
        config: The emulator's settings (real-time defaults).
        unless_key_set: When ``OXEN_API_KEY`` is already set, run nothing and yield ``None``:
            the code then talks to the real hub. Handy for examples.
    """
    if unless_key_set and os.environ.get("OXEN_API_KEY", "").strip():
        yield None
        return
    saved = {name: os.environ.get(name) for name in _VARIABLES}
    with Emulator(config=config) as emulator:
        os.environ["OXEN_BASE_URL"] = emulator.base_url
        os.environ["OXEN_API_KEY"] = "emulator-key"
        try:
            yield emulator
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
