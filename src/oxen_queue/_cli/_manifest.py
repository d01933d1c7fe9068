"""The batch manifest: a JSONL record of each request's events, which lets a rerun resume.

The manifest is appended one JSON line per event (enqueued, finished) and fsynced, so a crash
loses at most the line being written. The latest valid line of each request tells a rerun
what to do: reattach by id, skip, or enqueue.

:func:`read_manifest` is the one reader, and tolerant: a manifest is a file people and
crashes touch. Its docstring says what it takes and what it skips; what it skips is named in
a warning, never fatal. :class:`Manifest` writes it; a write that fails stops the run with
:class:`~._files.WriteFailedError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .._ids import plausible_id
from ._files import RESUME_HINT, OutDirectoryError, WriteFailedError, describe
from ._prompts import PromptLine

__all__ = ["Manifest", "ManifestRead", "parse_manifest", "read_manifest"]

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
class ManifestRead:
    """What a manifest says.

    Attributes:
        latest: The latest valid entry of each request, by key.
        warnings: One line for each line skipped (its number and why), and for a torn last
            line dropped.
        ends_torn: The file does not end with a newline (a crash tore its last line).
    """

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ends_torn: bool = False


def read_manifest(path: Path) -> ManifestRead:
    """Read a manifest (none: an empty answer); see :func:`parse_manifest`.

    Raises:
        OutDirectoryError: It exists but is not a regular file, or cannot be read.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OutDirectoryError(f"{path} is not a regular file: move it out of the way")
        data = path.read_bytes()
    except FileNotFoundError:
        return ManifestRead()
    except NotADirectoryError:  # --out is a file: prepare_out says so when it matters
        return ManifestRead()
    except OSError as exc:
        raise OutDirectoryError(f"cannot read the manifest {describe(exc)}") from None
    return parse_manifest(data, name=str(path))


def parse_manifest(data: bytes, *, name: str) -> ManifestRead:
    """What a manifest's bytes say; never raises.

    **Taken**: each line (ending at ``\\n``) that is UTF-8 JSON: an object with a non-empty
    string ``key``, a string ``status`` (``queued``, ``succeeded``, ``failed``, ``cancelled``,
    ``error``, ``ambiguous``, or a status the server made up, which a rerun reattaches by
    id), and, when present, ``generation_id``
    a plausible id (:func:`oxen_queue._ids.plausible_id`) or null, ``file`` a string without
    NUL or null, ``error`` a string or null, ``line`` an integer, ``prompt`` a string,
    ``model`` a string or null, ``params`` an object, ``at`` a number. The latest taken line
    of a request wins.

    **Skipped, with a warning naming the line**: any other line (not UTF-8, torn mid-character
    or mid-JSON, not JSON, too deeply nested, not an object, a field missing or of the wrong
    type: a number where a file name belongs, an id no server would make). A last line
    without its newline that is not a whole entry is the one a crash tore: dropped, with a
    warning saying so. Blank lines are skipped silently.
    """
    read = ManifestRead(ends_torn=bool(data) and not data.endswith(b"\n"))
    chunks = data.split(b"\n")
    last = len(chunks)
    for number, chunk in enumerate(chunks, start=1):
        if not chunk.strip():
            continue
        entry, problem = _entry(chunk)
        if entry is not None:
            read.latest[entry["key"]] = entry
        elif number == last:  # no newline after it: written when the run stopped
            read.warnings.append(f"{name}:{number}: dropped a torn last line: {problem}")
        else:
            read.warnings.append(f"{name}:{number}: skipped: {problem}")
    return read


def _entry(chunk: bytes) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """A line's entry, or why it is none."""
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
    return (None, problem) if problem is not None else (entry, None)


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
    """An append-only JSONL record of a batch, in its output directory."""

    def __init__(self, path: Path) -> None:
        """Read the manifest at ``path`` and open it for appending.

        Raises:
            OutDirectoryError: It is not a regular file, or cannot be read or opened.
        """
        self.path = path
        read = read_manifest(path)
        self.latest = read.latest
        self.warnings = read.warnings
        """What reading it skipped, one line each (for the caller to show)."""
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutDirectoryError(f"cannot open the manifest {describe(exc)}") from None
        if read.ends_torn:
            # A crash tore the last line: end it, so the next event starts a line of its own.
            try:
                os.write(self._fd, b"\n")
            except OSError as exc:
                self.close()
                reason = describe(exc, named=False)
                raise OutDirectoryError(f"cannot write {path}: {reason}") from None

    def append(self, line: PromptLine, **fields: Any) -> None:
        """Record an event of a request: one ``write`` of one whole line, then fsync.

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
        self._write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self.latest[line.key] = entry

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
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.close()
            raise WriteFailedError(
                f"cannot write {self.path}: {describe(exc, named=False)}; the run stopped: "
                f"{RESUME_HINT}"
            ) from exc

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
