"""The ``oxen-queue`` console script: a thin layer over the public API.

Commands: ``generate``, ``submit``, ``wait``, ``download``, ``batch``, ``status``, ``cancel``,
``models``, ``demo`` (the offline tour, on the embedded emulator) and ``emulator`` (serve the
emulator). Global options (``-v``, ``--base-url``, ``--emulator``, ``--time-scale``) go before
or after the command. Exit status: 0 when everything asked for succeeded, 1 when a generation
did not (or the API failed), 2 for bad usage, configuration or a request the API refused
(400, 401, 403, 404, 422), 130 when interrupted.

Its display needs ``rich``, which is the ``cli`` extra (``pip install 'oxen-queue[cli]'``): a
library imported by an app should not bring a terminal UI along. This module imports nothing
beyond the standard library until it knows rich is there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

MISSING_RICH = (
    "oxen-queue: the command line needs the 'cli' extra (rich, for its display).\n"
    "Install it with:  pip install 'oxen-queue[cli]'   (or: uv add 'oxen-queue[cli]')\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; return its exit status (2 when the ``cli`` extra is missing)."""
    try:
        import rich  # noqa: F401 - only whether it can be imported
    except ImportError:
        sys.stderr.write(MISSING_RICH)
        return 2
    from ._main import main as run

    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
