"""The shared emulator's server process: ``python -m oxen_queue._cli._daemon``.

Started by `_shared.attach` (never by hand), it serves an [`Emulator`][oxen_queue.testing.Emulator]
on two loopback ports, writes its `_shared.Record` once it accepts connections, and runs
until one of:

- its record is gone or names another server (``oxen-queue emulator --stop``; a newer server
  that replaced a record it found stale), checked every 0.2 s;
- no request for ``--idle-timeout`` seconds: nothing new in its counters (API and file
  requests, event streams opened), no event stream open, and no command that reused it
  (each one touches the record). The decision is taken under the state directory's lock and
  the record removed under it, so a command that found the server running a moment ago has
  already counted as a use, and one that comes after starts a new server;
- SIGTERM or SIGINT.

Its output (the log a failed start is reported from) is ``emulator.log`` in the state
directory.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .._version import __version__
from ._shared import (
    Paths,
    Record,
    SharedEmulatorError,
    locked,
    read_record,
    remove_record,
    write_note,
    write_record,
)

if TYPE_CHECKING:
    from ..testing import Emulator

__all__ = ["main"]

# Its stderr is the state directory's emulator.log: a failed start's last line there is what
# the command that started it reports (as data, through the CLI's one owner of what it shows).
logger = logging.getLogger("oxen_queue.shared_emulator")

_CHECK_EVERY: Final = 0.2  # seconds between looks at the record: how soon --stop takes effect
_SAMPLE_EVERY: Final = 1.0  # seconds between looks at the counters


class _Use:
    """When the server was last used: a request seen in its counters, an event stream
    open, or its record touched by a command that reused it."""

    def __init__(self, emulator: Emulator, paths: Paths, token: str) -> None:
        self._emulator = emulator
        self._paths = paths
        self._token = token
        self._mtime: int | None = None
        self._counters: tuple[int, ...] | None = None
        self.last = time.monotonic()

    def ours(self) -> bool:
        """Whether the record still names this server (a touch counts as a use)."""
        try:
            mtime = os.stat(self._paths.record).st_mtime_ns
        except OSError:
            return False
        if mtime != self._mtime:
            record = read_record(self._paths)
            if record is None or record.token != self._token:
                return False
            self._mtime = mtime
            self.last = time.monotonic()
        return True

    def idle_for(self) -> float:
        """Seconds since the last use, looking at the counters now."""
        stats = self._emulator.stats()
        files = stats["file_requests"]
        counters = (
            sum(stats["requests"].values()),
            files["with_authorization"] + files["without_authorization"],
            stats["sse_connections"],
            stats["sync_generations"],
        )
        if counters != self._counters or stats["sse_open"]:
            self._counters = counters
            self.last = time.monotonic()
        return time.monotonic() - self.last


def _serve(use: _Use, paths: Paths, token: str, idle_timeout: float, stop: threading.Event) -> str:
    """Serve until told to stop; why it stopped."""
    next_sample = time.monotonic() + _SAMPLE_EVERY
    while not stop.wait(_CHECK_EVERY):
        if not use.ours():
            return "its record was removed or replaced"
        if time.monotonic() < next_sample:
            continue
        next_sample = time.monotonic() + _SAMPLE_EVERY
        if use.idle_for() < idle_timeout:
            continue
        with locked(paths, timeout=0) as held:
            # Under the lock, looked at again: a command that reused the server before we
            # had the lock has touched the record by now.
            if not held:
                continue
            if not use.ours():
                return "its record was removed or replaced"
            if use.idle_for() < idle_timeout:
                continue
            remove_record(paths, token)
            write_note(paths, f"after {idle_timeout:g} s without a request")
            return f"no request for {idle_timeout:g} s"
    with contextlib.suppress(SharedEmulatorError), locked(paths, timeout=5.0):
        if remove_record(paths, token):
            write_note(paths, "on a signal")
    return "signalled"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the shared emulator until it is stopped or idle; its exit status."""
    parser = argparse.ArgumentParser(prog="python -m oxen_queue._cli._daemon")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--time-scale", type=float, required=True)
    parser.add_argument("--idle-timeout", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    paths = Paths(args.state_dir)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        from ..testing import Emulator, EmulatorConfig

        emulator = Emulator(config=EmulatorConfig(time_scale=args.time_scale))
        emulator.start()
    except Exception as exc:
        logger.error("error: %s", exc)  # one line, no traceback: the reason to report
        return 1
    why = "stopped"
    try:
        write_record(
            paths,
            Record(
                pid=os.getpid(),
                token=args.token,
                base_url=emulator.base_url,
                idle_timeout=args.idle_timeout,
                started=time.time(),
                version=__version__,
            ),
        )
        logger.info("serving at %s (pid %d)", emulator.base_url, os.getpid())
        why = _serve(_Use(emulator, paths, args.token), paths, args.token, args.idle_timeout, stop)
    finally:
        with contextlib.suppress(SharedEmulatorError), locked(paths, timeout=5.0):
            remove_record(paths, args.token)  # else left stale: the next command replaces it
        emulator.stop()
        logger.info("stopped: %s", why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
