"""The command line's shared emulator: one background server for every ``--emulator``
command and ``demo``, so that what one command enqueues the next one finds.

Decisions, each with its reason:

- **One server per state directory.** ``$OXEN_QUEUE_STATE_DIR``, else
  ``$XDG_STATE_HOME/oxen-queue``, else ``~/.local/state/oxen-queue`` (`state_dir`). It
  holds ``emulator.json`` (the server's pid, address and a token: `Record`),
  ``emulator.lock`` and ``emulator.log`` (the server's output).
- **The first command starts it, later ones reuse it** (`attach`), under the lock, so
  commands started at once end up on one server. A record whose server does not answer is
  stale: a new server replaces it.
- **It stops itself** after `IDLE_TIMEOUT` seconds (15 minutes) without a request (an
  open event stream counts as one going on), and when its record is removed or names
  another server: ``oxen-queue emulator --stop`` (`stop`) removes it and waits for the
  server to exit. Its jobs and files go with it; a command that starts a new one says so.
  No signal is sent to a pid read from a file, which may by then be another program's.
- **``--time-scale`` given to a command that reuses the server** sets the scale of the jobs
  enqueued from then on (``POST /_emulator/clock``); jobs already enqueued keep their times,
  and a command without ``--time-scale`` leaves the scale as it is. Restarting would lose
  the jobs the emulator is shared to keep, and refusing would make every scripted
  ``--time-scale`` depend on what ran before. Commands running at once share the one scale.
- **The server is a grandchild** (POSIX: started through a launcher that forks and exits),
  in a session of its own: a Ctrl-C in the terminal stops the command, not the server, and
  no process is left for the command to reap.

The server's side is ``_daemon.py``. This module needs only the standard library and httpx,
and the ``emulator`` extra only to start a server (`require_emulator_extra`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Final

import httpx

__all__ = [
    "EMULATOR_KEY",
    "IDLE_TIMEOUT",
    "Attached",
    "MissingExtraError",
    "Paths",
    "Record",
    "SharedEmulatorError",
    "alive",
    "attach",
    "locked",
    "read_record",
    "remove_record",
    "require_emulator_extra",
    "state_dir",
    "stop",
    "write_note",
    "write_record",
]

IDLE_TIMEOUT: Final = 900.0
"""Seconds without a request after which the shared emulator stops itself (15 minutes)."""

EMULATOR_KEY: Final = "emulator"
"""The key every command sends to the shared emulator: one key, so one user, whose jobs each
command sees (the emulator makes each distinct key a user of its own)."""

START_TIMEOUT: Final = 60.0  # a first start imports the SDK, uvicorn, Pillow and PyAV
LOCK_TIMEOUT: Final = START_TIMEOUT + 30.0  # the lock is held while a server starts
STOP_TIMEOUT: Final = 20.0  # the server closes its streams, then waits 2 s for answers
_PROBE_TIMEOUT: Final = 5.0

# POSIX: fork, print the child's pid on stdout (a pipe to the command) and exit; the child
# points its stdout at the log (its stderr) and becomes the server. The command waits for
# the launcher only, and the server, an orphan, is reaped by init, never left a zombie.
_LAUNCHER: Final = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid:\n"
    "    print(pid)\n"
    "else:\n"
    "    os.dup2(2, 1)\n"
    "    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)
# Windows has no fork: a detached process, its handle kept so it is never reported as a
# process left running (nothing on Windows is left a zombie).
_DETACHED: list[subprocess.Popen[bytes]] = []


class SharedEmulatorError(Exception):
    """The shared emulator could not be started, reached or stopped (exit status 1)."""


class MissingExtraError(Exception):
    """An extra the command needs is not installed (the ``emulator`` extra, or ``parquet`` for
    ``batch --metadata parquet``); the message says how to install it (exit status 2)."""


def require_emulator_extra() -> None:
    """Do nothing when ``oxen_queue.testing`` can be imported.

    Raises:
        MissingExtraError: The ``emulator`` extra is missing: one line, with the install
            command (the message of the package's own ``ModuleNotFoundError``).
    """
    try:
        import oxen_queue.testing  # noqa: F401 - whether it imports
    except ModuleNotFoundError as exc:
        raise MissingExtraError(str(exc)) from None


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the shared emulator's files live: ``$OXEN_QUEUE_STATE_DIR``, else
    ``$XDG_STATE_HOME/oxen-queue``, else ``~/.local/state/oxen-queue``.

    A relative ``$XDG_STATE_HOME`` is ignored, as the XDG Base Directory specification says.
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get("OXEN_QUEUE_STATE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "oxen-queue"
    return Path.home() / ".local" / "state" / "oxen-queue"


@dataclass(frozen=True, slots=True)
class Paths:
    """The files of the shared emulator in one state directory."""

    directory: Path

    @property
    def record(self) -> Path:
        """``emulator.json``: the running server's `Record`."""
        return self.directory / "emulator.json"

    @property
    def lock(self) -> Path:
        """``emulator.lock``: held while a command looks for, starts or stops the server."""
        return self.directory / "emulator.lock"

    @property
    def log(self) -> Path:
        """``emulator.log``: what the last server started wrote (why it failed, if it did)."""
        return self.directory / "emulator.log"

    @property
    def note(self) -> Path:
        """``emulator.stopped``: when and why the last server stopped, for the command that
        starts the next one to say (its generations are gone with it)."""
        return self.directory / "emulator.stopped"

    def create(self) -> None:
        """Make the directory (private to this user) if missing."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SharedEmulatorError(
                f"cannot create the state directory {self.directory} ({reason}): set "
                "OXEN_QUEUE_STATE_DIR to a directory you can write in"
            ) from None


def _paths(directory: Path | None) -> Paths:
    # Absolute: the server runs in the state directory, and is told where it is.
    return Paths((directory if directory is not None else state_dir()).absolute())


@dataclass(frozen=True, slots=True)
class Record:
    """What ``emulator.json`` says of the running server.

    Attributes:
        pid: The server's process id.
        token: Drawn by the command that started it: the server runs while the record holds
            its token, and stops once it holds none or another.
        base_url: The API's origin.
        idle_timeout: Seconds without a request after which it stops.
        started: When it started (Unix time).
        version: The oxen-queue version that started it.
    """

    pid: int
    token: str
    base_url: str
    idle_timeout: float
    started: float
    version: str

    @classmethod
    def parse(cls, raw: bytes) -> Record | None:
        """The record in ``raw``, or ``None`` for anything else (torn, hand-edited...)."""
        try:
            data = json.loads(raw)
            record = cls(
                pid=data["pid"],
                token=data["token"],
                base_url=data["base_url"],
                idle_timeout=float(data["idle_timeout"]),
                started=float(data["started"]),
                version=data["version"],
            )
        except (ValueError, TypeError, KeyError):
            return None
        fields_ok = (
            type(record.pid) is int
            and record.pid > 0
            and isinstance(record.token, str)
            and isinstance(record.base_url, str)
            and record.base_url.startswith("http://")
            and isinstance(record.version, str)
        )
        return record if fields_ok else None


def read_record(paths: Paths) -> Record | None:
    """The record in the state directory, or ``None`` when there is none (or it is unreadable)."""
    try:
        raw = paths.record.read_bytes()
    except OSError:
        return None
    return Record.parse(raw)


def write_record(paths: Paths, record: Record) -> None:
    """Write the record whole (a temporary file renamed over it), readable by this user only."""
    temporary = paths.record.with_name(f".{paths.record.name}.{record.token}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(asdict(record), file)
    os.replace(temporary, paths.record)


def write_note(paths: Paths, why: str) -> None:
    """Leave the note that the server stopped now, and why (``after 900 s without a
    request``)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    with contextlib.suppress(OSError):  # a note only: nothing depends on it
        paths.note.write_text(f"stopped at {when} {why}", encoding="utf-8")


def _take_note(paths: Paths) -> str | None:
    """The note a stopped server left (removed as it is read), or ``None``."""
    try:
        note = paths.note.read_text(encoding="utf-8", errors="replace").strip()
        paths.note.unlink()
    except OSError:
        return None
    return note[:200] or None


def remove_record(paths: Paths, token: str | None = None) -> bool:
    """Remove the record (only if it holds ``token``, when one is given); whether it did.

    The caller holds the lock (`locked`): a record is never removed under a command
    that is reading it.
    """
    if token is not None:
        record = read_record(paths)
        if record is None or record.token != token:
            return False
    try:
        paths.record.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def locked(paths: Paths, *, timeout: float = LOCK_TIMEOUT) -> Iterator[bool]:
    """Hold the state directory's lock; yields whether it was had.

    With ``timeout=0``, one try: yields ``False`` when another process holds it (the server
    checking whether it may stop uses this, so a command is never kept waiting by it).

    Raises:
        SharedEmulatorError: Still held by another process after ``timeout`` seconds.
    """
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                if timeout == 0:
                    yield False
                    return
                raise SharedEmulatorError(
                    f"another oxen-queue process has held {paths.lock} for {timeout:.0f} s"
                )
            time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # which releases the lock


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    else:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has ended).

    On Windows it cannot be told without a handle (``os.kill`` there would end the process):
    always ``True``, and callers rely on whether the server answers.
    """
    if os.name == "nt":  # pragma: no cover - Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # Linux: a zombie (ended, not yet reaped) still has a pid
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _http() -> httpx.Client:
    # trust_env=False: a proxy from the environment must not be asked for a loopback address.
    return httpx.Client(timeout=_PROBE_TIMEOUT, trust_env=False)


def _time_scale(base_url: str) -> float | None:
    """The time scale the server at ``base_url`` runs at, or ``None`` if it does not answer
    as an emulator."""
    try:
        with _http() as http:
            response = http.get(f"{base_url}/_emulator/clock")
        scale = response.json()["time_scale"] if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return float(scale) if isinstance(scale, int | float) and not isinstance(scale, bool) else None


def _set_time_scale(base_url: str, time_scale: float) -> None:
    try:
        with _http() as http:
            response = http.post(f"{base_url}/_emulator/clock", json={"time_scale": time_scale})
    except httpx.HTTPError as exc:
        raise SharedEmulatorError(
            f"the shared emulator at {base_url} stopped answering: {exc}"
        ) from None
    if response.status_code != 200:
        raise SharedEmulatorError(
            f"the shared emulator at {base_url} refused --time-scale {time_scale}"
        )


@dataclass(frozen=True, slots=True)
class Attached:
    """The shared emulator a command runs against.

    Attributes:
        base_url: Its API's origin.
        pid: Its process id.
        started: Whether this command started it (it knows no earlier generation).
        time_scale: The scale of the jobs enqueued from now on.
        previous_scale: The scale before this command changed it, if it did.
        idle_timeout: Seconds without a request after which it stops.
        before: When started now, how the one before it stopped (``stopped at 2026-05-11
            14:02 after 900 s without a request``), if one left a note.
    """

    base_url: str
    pid: int
    started: bool
    time_scale: float
    previous_scale: float | None
    idle_timeout: float
    before: str | None = None


def attach(
    time_scale: float | None,
    *,
    directory: Path | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> Attached:
    """The running shared emulator, or one started now; never two at once.

    Args:
        time_scale: The scale of the jobs enqueued from now on; ``None`` keeps the running
            server's (a new one runs at 1.0).
        directory: The state directory (default: `state_dir`).
        idle_timeout: Seconds without a request after which a server started now stops.

    Raises:
        MissingExtraError: The ``emulator`` extra is missing.
        SharedEmulatorError: It could not be started (the reason from its log) or reached.
    """
    require_emulator_extra()
    paths = _paths(directory)
    paths.create()
    with locked(paths):
        record = read_record(paths)
        if record is not None:
            current = _time_scale(record.base_url) if alive(record.pid) else None
            if current is not None:
                os.utime(paths.record)  # a use: the server's idle time starts again
                previous = None
                if time_scale is not None and time_scale != current:
                    _set_time_scale(record.base_url, time_scale)
                    previous, current = current, time_scale
                return Attached(
                    record.base_url, record.pid, False, current, previous, record.idle_timeout
                )
            # Stale: its server is gone (or is not the one the record names, which on
            # finding its record replaced stops itself).
            remove_record(paths)
        scale = 1.0 if time_scale is None else time_scale
        before = _take_note(paths)
        record = _start(paths, time_scale=scale, idle_timeout=idle_timeout)
        return Attached(record.base_url, record.pid, True, scale, None, idle_timeout, before)


def _start(paths: Paths, *, time_scale: float, idle_timeout: float) -> Record:
    """Start a server and wait for its record (the lock is held)."""
    token = secrets.token_hex(16)
    server = [
        "-m",
        "oxen_queue._cli._daemon",
        "--state-dir",
        str(paths.directory),
        "--token",
        token,
        "--time-scale",
        repr(time_scale),
        "--idle-timeout",
        repr(idle_timeout),
    ]
    fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log:
        pid = _spawn(server, log, paths=paths)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        record = read_record(paths)
        if record is not None and record.token == token:
            return record
        if not alive(pid):
            raise SharedEmulatorError(
                f"the shared emulator did not start: {_last_line(paths.log)} (its log: {paths.log})"
            )
        time.sleep(0.02)
    raise SharedEmulatorError(
        f"the shared emulator did not start in {START_TIMEOUT:.0f} s (pid {pid}, its log: "
        f"{paths.log})"
    )


def _spawn(server: list[str], log: IO[bytes], *, paths: Paths) -> int:
    """Start ``python <server...>`` detached from this process and its terminal; its pid.

    It runs in the state directory, so it holds no directory of the user's open.
    """
    if os.name == "nt":  # pragma: no cover - Windows
        flags = (
            subprocess.DETACHED_PROCESS  # type: ignore[attr-defined,unused-ignore]
            | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined,unused-ignore]
        )
        process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
            [sys.executable, *server],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=paths.directory,
            creationflags=flags,
        )
        _DETACHED.append(process)
        return process.pid
    launcher = subprocess.run(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-c", _LAUNCHER, *server],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=paths.directory,
        start_new_session=True,  # a Ctrl-C in the terminal is not the server's
        timeout=START_TIMEOUT,
        check=False,
    )
    try:
        return int(launcher.stdout)
    except ValueError:
        raise SharedEmulatorError(
            f"the shared emulator could not be started (exit status {launcher.returncode}; "
            f"its log: {paths.log})"
        ) from None


def _last_line(path: Path) -> str:
    """The last non-empty line of a log, or a word saying there is none."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no log"
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else "it exited without a word"


def stop(*, directory: Path | None = None, timeout: float = STOP_TIMEOUT) -> Record | None:
    """Stop the shared emulator: remove its record, then wait for it to exit.

    Returns:
        The record of the server stopped, or ``None`` if none was running.

    Raises:
        SharedEmulatorError: It was still running ``timeout`` seconds later.
    """
    paths = _paths(directory)
    if not paths.directory.is_dir():
        return None
    with locked(paths):
        record = read_record(paths)
        if record is None:
            return None
        running = alive(record.pid) and _time_scale(record.base_url) is not None
        remove_record(paths)  # the server sees it gone and stops; a stale one just goes
        if running:
            write_note(paths, "by `oxen-queue emulator --stop`")
    if not running:
        return None
    deadline = time.monotonic() + timeout
    while not _gone(record):
        if time.monotonic() >= deadline:
            raise SharedEmulatorError(
                f"the shared emulator (pid {record.pid}) was still running {timeout:.0f} s "
                f"after being asked to stop; its log: {paths.log}"
            )
        time.sleep(0.05)
    return record


def _gone(record: Record) -> bool:
    """Whether the server of ``record`` has exited (where a pid cannot be checked: whether
    it no longer answers)."""
    if os.name == "nt":  # pragma: no cover - Windows
        return _time_scale(record.base_url) is None
    return not alive(record.pid)
