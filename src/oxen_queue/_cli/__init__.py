"""The ``oxen-queue`` console script: a thin layer over the public API.

Commands: ``generate``, ``submit``, ``wait``, ``download``, ``batch``, ``status``, ``cancel``,
``models``, ``demo`` (the offline tour, on the shared local emulator) and ``emulator`` (serve
the emulator, or stop the shared one). Global options (``-v``, ``--base-url``,
``--emulator``, ``--time-scale``) go before or after the command. ``--emulator`` commands and
``demo`` share one emulator in the background (``_shared.py``), so what one enqueues the next
finds.

The help's epilog (``_parser.EXIT_STATUSES``) says, and a test keeps the two alike:
exit status: 0 everything asked for succeeded; 1 a generation did not succeed, the API
failed, or this machine did (a file that could not be written mid-run, on a full or
read-only disk: mend it and run the same command again, which resumes without sending
anything twice); 2 bad usage or configuration (a prompts file that cannot be read as
text, an --out that is not a writable directory), or a request the API refused (400,
401, 403, 404, 422); 130 interrupted (Ctrl-C). Whatever goes wrong is said in one line
on stderr; -v adds a traceback only to an error of a kind no code path expects.

Everything it shows that it did not write itself (prompts, file names, the server's
messages, statuses, ids and rows) is data, never markup or terminal control: see
``_shown.py``. The files it reads and writes (prompts files, ``--out``, the manifest, the
dataset) are judged in ``_prompts.py``, ``_files.py``, ``_manifest.py`` and ``_dataset.py``.
A batch is read and run as a stream (``_scan.py``, ``_run.py``), holding a compact index of
its requests (``_index.py``) and pricing each kind of request once (``_cost.py``).

Its display needs ``rich``, which is the ``cli`` extra (``pip install 'oxen-queue[cli]'``): a
library imported by an app should not bring a terminal UI along. This module imports nothing
beyond the standard library until it knows rich is there. What runs an emulator (``demo``,
``emulator``, ``--emulator``) needs the ``emulator`` extra too, and without it says so in one
line, exit status 2 (``_shared.require_emulator_extra``).
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
