"""The batch manifest: a JSONL record of each request's events, which lets a rerun resume.

One JSON line per event (enqueued, finished). The latest valid line of each request tells a
rerun what to do: reattach by id, skip, or enqueue.

**Writes, and what a crash loses.** Each event is written when it happens, in one ``write``
of one whole line: once written, the operating system holds it, and a process that dies
(killed, crashed, out of memory) loses nothing of it. It is made durable on disk (fsync) in
groups: `Manifest.sync` runs at most every `COMMIT_INTERVAL` seconds while a
run writes, and when it ends, so a million requests cost a few thousand fsyncs, not two
million. A machine that loses power can lose the last group (under a second of events):
the ledger beside the manifest covers what that group held. Every request is in the ledger
before it is sent; a rerun reattaches those still running (``recover()``) and never sends
them again. (The ledger keeps SQLite's ``synchronous=NORMAL``: the same bargain.)

**Compaction.** When a run ends, `Manifest.compact` rewrites the manifest with only the
latest entry of each request (in the order they were written), to a temporary file renamed
over it: the manifest never holds less than what it held.

`scan_manifest` is the one reader, and tolerant: a manifest is a file people and
crashes touch. Its docstring says what it takes and what it skips; what it skips is named in
a warning, never fatal. `Manifest` writes it; a write that fails stops the run with
`WriteFailedError`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from .._ids import plausible_id
from ._files import RESUME_HINT, OutDirectoryError, WriteFailedError, describe
from ._index import RequestIndex, key_number
from ._prompts import PromptLine

__all__ = [
    "COMMIT_INTERVAL",
    "EntryReader",
    "Manifest",
    "ManifestRead",
    "ManifestScan",
    "load_index",
    "parse_manifest",
    "read_manifest",
    "scan_manifest",
]

COMMIT_INTERVAL: Final = 0.2
"""Seconds between a run's group commits (fsyncs) of the manifest, at most."""

_WARNINGS_KEPT: Final = 50  # warnings listed one by one; past that, counted

# Each field a line may carry, and the types it may have (None: absent or null). Fields not
# listed are kept and ignored (a later version's).
_FIELDS: Final[Mapping[str, tuple[type, ...]]] = {
    "line": (int,),
    "prompt": (str,),
    "model": (str, type(None)),
    "params": (dict,),
    "generation_id": (str, type(None)),
    "file": (str, type(None)),
    "error": (str, type(None)),
    "cost": (str, type(None)),
    "at": (int, float),
}
_TYPE_NAMES: Final = {
    int: "an integer",
    str: "a string",
    dict: "an object",
    float: "a number",
    list: "an array",
    type(None): "null",
}


@dataclass(slots=True)
class ManifestScan:
    """What reading a manifest found, besides its entries.

    Attributes:
        warnings: One line for each line skipped (its number and why), and for a torn last
            line dropped; past 50, one line counting the rest.
        ends_torn: The file does not end with a newline (a crash tore its last line).
        size: Its size in bytes.
        entries: Its valid entries (superseded ones included).
    """

    warnings: list[str] = field(default_factory=list)
    ends_torn: bool = False
    size: int = 0
    entries: int = 0
    _more: int = 0

    def warn(self, text: str) -> None:
        if len(self.warnings) < _WARNINGS_KEPT:
            self.warnings.append(text)
            return
        self._more += 1
        summary = f"... and {self._more} more manifest lines skipped"
        if self._more == 1:
            self.warnings.append(summary)
        else:
            self.warnings[-1] = summary


@dataclass(slots=True)
class ManifestRead:
    """What a (small) manifest says, whole: see `parse_manifest`.

    Attributes:
        latest: The latest valid entry of each request, by key.
        warnings: As `ManifestScan.warnings`.
        ends_torn: The file does not end with a newline.
    """

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ends_torn: bool = False


def scan_manifest(
    stream: IO[bytes], *, name: str, found: Callable[[int, dict[str, Any]], None]
) -> ManifestScan:
    """Read a manifest as a stream, calling ``found(offset, entry)`` for each valid line.

    **Taken**: each line (ending at ``\\n``) that is UTF-8 JSON: an object with a non-empty
    string ``key``, a string ``status`` (``queued``, ``succeeded``, ``failed``, ``cancelled``,
    ``error``, ``ambiguous``, or a status the server made up, which a rerun reattaches by
    id), and, when present, ``generation_id``
    a plausible id (`oxen_queue._ids.plausible_id`) or null, ``file`` a string without
    NUL or null, ``error`` and ``cost`` a string or null, ``line`` an integer, ``prompt`` a
    string, ``model`` a string or null, ``params`` an object, ``at`` a number. The latest
    taken line of a request wins.

    **Skipped, with a warning naming the line**: any other line (not UTF-8, torn mid-character
    or mid-JSON, not JSON, too deeply nested, not an object, a field missing or of the wrong
    type: a number where a file name belongs, an id no server would make). Of a skipped line
    with a valid ``key`` and a plausible ``generation_id``, those two are kept: the request
    counts as enqueued with that id (reattached, never sent again). A last line
    without its newline that is not a whole entry is the one a crash tore: dropped, with a
    warning saying so. Blank lines are skipped silently. Never raises but for the stream's
    own ``OSError``.
    """
    scan = ManifestScan()
    offset = 0
    for number, chunk in enumerate(stream, start=1):
        size = len(chunk)
        torn = not chunk.endswith(b"\n")
        body = chunk if torn else chunk[:-1]
        if body.strip():
            entry, problem = _entry(body)
            if entry is not None:
                scan.entries += 1
                found(offset, entry)
            if problem is None:
                pass
            elif entry is not None:
                scan.warn(
                    f"{name}:{number}: skipped: {problem}; its generation id is kept, to reattach"
                )
            elif torn:  # no newline after it: written when the run stopped
                scan.warn(f"{name}:{number}: dropped a torn last line: {problem}")
            else:
                scan.warn(f"{name}:{number}: skipped: {problem}")
        scan.ends_torn = torn
        offset += size
    scan.size = offset
    return scan


def read_manifest(path: Path) -> ManifestRead:
    """Read a (small) manifest whole (none: an empty answer); see `parse_manifest`.

    Raises:
        OutDirectoryError: It exists but is not a regular file, or cannot be read.
    """
    try:
        data = _read_whole(path)
    except FileNotFoundError:
        return ManifestRead()
    return parse_manifest(data, name=str(path))


def _read_whole(path: Path) -> bytes:
    with _open_for_reading(path) as stream:
        return stream.read()


def _open_for_reading(path: Path) -> IO[bytes]:
    """The manifest, open for reading.

    Raises:
        FileNotFoundError: There is none (nor is ``--out`` a directory).
        OutDirectoryError: It is not a regular file, or cannot be read.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OutDirectoryError(f"{path} is not a regular file: move it out of the way")
        return path.open("rb")
    except FileNotFoundError:
        raise
    except NotADirectoryError:  # --out is a file: prepare_out says so when it matters
        raise FileNotFoundError(path) from None
    except OSError as exc:
        raise OutDirectoryError(f"cannot read the manifest {describe(exc)}") from None


def parse_manifest(data: bytes, *, name: str) -> ManifestRead:
    """What a manifest's bytes say, the latest entry of each request by key; never raises.
    What is taken and skipped: `scan_manifest`."""
    read = ManifestRead()

    def found(_: int, entry: dict[str, Any]) -> None:
        read.latest[entry["key"]] = entry

    scan = scan_manifest(io.BytesIO(data), name=name, found=found)
    read.warnings, read.ends_torn = scan.warnings, scan.ends_torn
    return read


def load_index(path: Path, index: RequestIndex) -> ManifestScan:
    """Read the manifest at ``path`` (if any) into ``index``; see `scan_manifest`.

    Raises:
        OutDirectoryError: It exists but is not a regular file, or cannot be read.
    """
    try:
        stream = _open_for_reading(path)
    except FileNotFoundError:
        return ManifestScan()

    def found(offset: int, entry: dict[str, Any]) -> None:
        index.record(key_number(entry["key"]), entry["status"], offset)

    try:
        with stream:
            return scan_manifest(stream, name=str(path), found=found)
    except OSError as exc:
        raise OutDirectoryError(f"cannot read the manifest {describe(exc)}") from None


def _entry(chunk: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A line's entry, or why it is none; or both, when a line that is not an entry still
    names its request (a valid ``key``) and its generation (a plausible ``generation_id``):
    then its entry is that request, enqueued with that id, and no more, so a rerun
    reattaches it by id rather than send it again (a compacted manifest holds one line per
    request: that line damaged by hand must not cost a second job)."""
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte 0x{chunk[exc.start]:02x} at offset {exc.start})"
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    except (ValueError, RecursionError) as exc:  # a number past int's limit, deep nesting
        return None, f"not usable JSON ({type(exc).__name__})"
    if not isinstance(entry, dict):
        return None, f"not an object but {_TYPE_NAMES.get(type(entry), type(entry).__name__)}"
    problem = _entry_problem(entry)
    if problem is None:
        return entry, None
    key, generation_id = entry.get("key"), entry.get("generation_id")
    named = isinstance(key, str) and key and isinstance(generation_id, str)
    if named and plausible_id(generation_id):
        return {"key": key, "generation_id": generation_id, "status": "queued"}, problem
    return None, problem


def _entry_problem(entry: dict[str, Any]) -> str | None:
    key, status = entry.get("key"), entry.get("status")
    if not isinstance(key, str) or not key:
        return '"key" is missing or not a string'
    if not isinstance(status, str) or not status:
        return '"status" is missing or not a string'
    for name, types in _FIELDS.items():
        value = entry.get(name)
        if name in entry and (not isinstance(value, types) or isinstance(value, bool)):
            allowed = " or ".join(_TYPE_NAMES[kind] for kind in types)
            return f'"{name}" must be {allowed}, not {_kind(value)}'
    generation_id = entry.get("generation_id")
    if generation_id is not None and not plausible_id(generation_id):
        return '"generation_id" is not an id a server makes'
    file = entry.get("file")
    if file is not None and (not file or "\x00" in file):
        return '"file" is not a file name'
    return None


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class Manifest:
    """The manifest of a batch, in its output directory: appended as events happen, synced
    in groups, compacted when a run ends (see the module)."""

    def __init__(
        self, path: Path, index: RequestIndex | None = None, *, read: ManifestScan | None = None
    ) -> None:
        """Open the manifest at ``path`` for appending.

        Args:
            path: The manifest.
            index: The index its entries go to; a new one when ``None``.
            read: What `load_index` found reading it into ``index``; ``None`` reads it
                now.

        Raises:
            OutDirectoryError: It is not a regular file, or cannot be read or opened.
        """
        self.path = path
        self.index = index if index is not None else RequestIndex()
        if read is None:
            read = load_index(path, self.index)
        self.warnings = read.warnings
        """What reading it skipped, one line each (for the caller to show)."""
        self._fd: int | None = None
        self._open(read)

    def _open(self, read: ManifestScan) -> None:
        path = self.path
        self._entries = read.entries
        self._unsynced = 0
        try:
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
            self._fd = os.open(path, flags, 0o644)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise OutDirectoryError(f"cannot open the manifest {describe(exc)}") from None
        if read.ends_torn:
            # A crash tore the last line: end it, so the next event starts a line of its own.
            try:
                self._size += os.write(self._fd, b"\n")
            except OSError as exc:
                self.close()
                reason = describe(exc, named=False)
                raise OutDirectoryError(f"cannot write {path}: {reason}") from None

    def append(self, line: PromptLine, **fields: Any) -> None:
        """Record an event of a request: one ``write`` of one whole line (made durable by
        the next `sync`). ``fields`` may override ``model`` and ``params`` (with the
        command line's defaults applied).

        Raises:
            WriteFailedError: The line could not be written (the manifest then takes no
                more: a line half written must not be followed by another).
        """
        entry = {
            "key": line.key,
            "line": line.number,
            "prompt": line.prompt,
            "model": line.model,
            "params": line.params,
            **fields,
            "at": round(time.time(), 3),
        }
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        offset = self._size
        self._write(data)
        self._size += len(data)
        self._entries += 1
        self._unsynced += 1
        self.index.record(key_number(entry["key"]), str(entry["status"]), offset)

    def naming(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` some entry of the manifest (superseded ones included) names as its
        generation: read as a stream, one pass.

        Raises:
            OutDirectoryError: It cannot be read.
        """
        named: set[str] = set()
        if not ids:
            return named

        def found(_: int, entry: dict[str, Any]) -> None:
            if entry.get("generation_id") in ids:
                named.add(entry["generation_id"])

        try:
            with _open_for_reading(self.path) as stream:
                scan_manifest(stream, name=str(self.path), found=found)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutDirectoryError(f"cannot read the manifest {describe(exc)}") from None
        return named

    def entry(self, key: int) -> dict[str, Any] | None:
        """The latest entry of a request (by its index key), or ``None``."""
        status, offset = self.index.state(key)
        return None if status is None else self.entry_at(offset)

    def entry_at(self, offset: int) -> dict[str, Any] | None:
        """The entry at ``offset`` (an offset the index holds), or ``None``."""
        if self._fd is None:
            return None
        return _entry_at(self._fd, offset, self.path)

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        """Every request's latest entry, by key (read back from the file: for small
        manifests and tests)."""
        reader = EntryReader(self.path)
        try:
            found = (reader.at(offset) for offset in self.index.offsets())
            return {entry["key"]: entry for entry in found if entry is not None}
        finally:
            reader.close()

    def sync(self) -> None:
        """Make every event written so far durable (one fsync), if any is not yet.

        Raises:
            WriteFailedError: The disk refused.
        """
        if self._fd is None or not self._unsynced:
            return
        self._unsynced = 0
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise WriteFailedError(f"{self.path} is closed; {RESUME_HINT}")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write: the disk filled up as it wrote
                more = os.write(self._fd, data[written:])
                if more == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += more
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        with contextlib.suppress(OSError):
            self._close_fd()
        raise WriteFailedError(
            f"cannot write {self.path}: {describe(exc, named=False)}; the run stopped: "
            f"{RESUME_HINT}"
        ) from exc

    def latest_entries(self) -> Iterator[dict[str, Any]]:
        """Each request's latest entry, in the order they were written, read as a stream."""
        if self._fd is None:
            return
        wanted = self.index.offsets()
        if not wanted:
            return
        with self.path.open("rb") as stream:
            offset, position = 0, 0
            for chunk in stream:
                if offset == wanted[position]:
                    entry, _ = _entry(chunk.rstrip(b"\n"))
                    if entry is not None:
                        yield entry
                    position += 1
                    if position == len(wanted):
                        return
                offset += len(chunk)

    def compact(self, visit: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Rewrite the manifest with only each request's latest entry, then reopen it.

        Written to a temporary file beside it, synced, and renamed over it: a crash at any
        point leaves the old manifest or the new one, whole. ``visit`` is called with each
        entry kept, in order (how the dataset is written in the same pass).

        Raises:
            WriteFailedError: A write failed (the old manifest stays as it was).
        """
        self.sync()
        temporary = self.path.with_name(f".{self.path.name}.compacting")
        try:
            with temporary.open("wb") as out:
                for entry in self.latest_entries():
                    out.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
                    if visit is not None:
                        visit(entry)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            _sync_directory(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise WriteFailedError(
                f"cannot compact {self.path}: {describe(exc, named=False)}"
            ) from exc
        self._close_fd()
        self.index = RequestIndex()
        self._open(load_index(self.path, self.index))

    def close(self) -> None:
        """Sync what is not yet durable, and close.

        Raises:
            WriteFailedError: The last sync failed.
        """
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class EntryReader:
    """Reads entries of a manifest by offset, without opening it for writing (the dry run).

    Raises:
        OutDirectoryError: It exists but cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):  # none (--out is checked later)
            self._fd = None
        except OSError as exc:
            raise OutDirectoryError(f"cannot read the manifest {describe(exc)}") from None

    def at(self, offset: int) -> dict[str, Any] | None:
        """The entry at ``offset``, or ``None``."""
        return None if self._fd is None else _entry_at(self._fd, offset, self.path)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _entry_at(fd: int, offset: int, path: Path) -> dict[str, Any] | None:
    """The entry whose line starts at ``offset``, or ``None`` if that is no entry."""
    size = 4096
    while True:
        try:
            data = os.pread(fd, size, offset)
        except OSError as exc:
            raise OutDirectoryError(
                f"cannot read the manifest {path}: {describe(exc, named=False)}"
            ) from None
        end = data.find(b"\n")
        if end >= 0 or len(data) < size:
            entry, _ = _entry(data if end < 0 else data[:end])
            return entry
        size *= 4


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be
    opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
