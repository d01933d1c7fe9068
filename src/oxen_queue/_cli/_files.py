"""The directories and files the CLI writes: what ``--out`` must be, and what a failed write
does to a run.

**``--out``** (`prepare_out`) must be a directory this process can create files in. It
is created (with its parents) when missing. Refused, before anything is sent, with
`OutDirectoryError` (exit status 2): an existing path that is not a directory, a
directory that cannot be created, or one in which a file cannot be created (a read-only file
system, no permission, no space or inodes left).

**A write that fails mid-run** (the manifest, a result file, the ledger: ``EROFS``,
``ENOSPC``, ``EACCES``, ``EIO``...) stops the run with `WriteFailedError` (exit status
1): one line naming the file and the reason. Nothing is sent twice because of it: every
request sent is in the ledger before it leaves, and the manifest records a request as settled
only once its file is saved, so the same command run again once the disk is mended reattaches
what was sent and sends only what was not.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["OutDirectoryError", "WriteFailedError", "describe", "failed_write", "prepare_out"]

RESUME_HINT = "run the same command again with the same --out to resume"


class OutDirectoryError(Exception):
    """``--out`` cannot hold the run's files; nothing was sent (exit status 2)."""


class WriteFailedError(Exception):
    """A file of the run could not be written mid-run; the run stopped (exit status 1)."""


def failed_write(error: BaseException) -> WriteFailedError | None:
    """The `WriteFailedError` in ``error`` (itself, or in a task group's group)."""
    if isinstance(error, WriteFailedError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = failed_write(inner)
            if found is not None:
                return found
    return None


def describe(error: OSError, *, named: bool = True) -> str:
    """An ``OSError`` in words: ``out/manifest.jsonl: No space left on device`` (its file
    first, unless ``named`` is false; never ``[Errno 28]``, which says nothing to a reader)."""
    reason = error.strerror or str(error) or type(error).__name__
    names = [name for name in (error.filename, error.filename2) if name is not None]
    if not names or not named:
        return reason
    return f"{' -> '.join(os.fsdecode(name) for name in names)}: {reason}"


def prepare_out(path: Path, *, option: str = "--out") -> Path:
    """Make ``path`` a directory the run can write in (created when missing); return it.

    Raises:
        OutDirectoryError: It exists and is not a directory, cannot be created, or a file
            cannot be created in it. The message names ``option`` and the path.
    """
    try:
        if path.exists() and not path.is_dir():
            raise OutDirectoryError(f"{option} {path} is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = describe(exc, named=False)
        raise OutDirectoryError(f"{option} {path}: cannot create it: {reason}") from None
    try:
        # A file made and removed at once: the one sure test of "can write here" (permission
        # bits say nothing to root, nor of a read-only mount or a full disk).
        fd, probe = tempfile.mkstemp(prefix=".oxen-queue-probe-", dir=path)
    except OSError as exc:
        reason = describe(exc, named=False)
        raise OutDirectoryError(f"{option} {path}: cannot write in it: {reason}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path
