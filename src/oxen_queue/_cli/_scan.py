"""A pass over a prompts file: each request, with what a run does with it.

A run reads its prompts file twice, as a stream both times: once whole before anything is
sent (every line is judged, so a bad line 900,000 stops the run before the first request,
and the run knows how many there are), then again to send. The dry run reads it once.
`requests` is that pass: the reader's requests, each placed in the
`RequestIndex` (its occurrence counted) and planned from the manifest's
latest entry for it (`plan`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any, Final, Literal

import anyio.lowlevel

from ._files import OutDirectoryError
from ._index import RequestIndex
from ._prompts import PromptLine, PromptsReader

__all__ = ["CHUNK", "Plan", "Planned", "plan", "requests"]

CHUNK: Final = 512
"""Requests read between two checkpoints of the event loop (where Ctrl-C gets in)."""

_SETTLED_BADLY: Final = frozenset({"failed", "cancelled", "error", "ambiguous"})

Plan = Literal["send", "skip", "reattach"]


def plan(previous: dict[str, Any] | None, *, retry_failed: bool) -> Plan:
    """What a run does with a request, given the manifest's latest entry for it: send it,
    skip it (settled in an earlier run), or reattach to its generation by id."""
    if previous is None:
        return "send"
    status, file, generation_id = (
        previous.get("status"),
        previous.get("file"),
        previous.get("generation_id"),
    )
    if status == "succeeded" and isinstance(file, str) and _exists(file):
        return "skip"
    if status in _SETTLED_BADLY and not retry_failed:
        return "skip"
    # Enqueued in an earlier run (or succeeded without its file): reattach by id, never
    # enqueue again. Failed ones are enqueued anew only with --retry-failed.
    if isinstance(generation_id, str) and status not in ("failed", "cancelled"):
        return "reattach"
    return "send"


def _exists(file: str) -> bool:
    """Whether a file a manifest names is there (a name no file system takes is not)."""
    try:
        return os.path.exists(file)
    except (OSError, ValueError):
        return False


@dataclass(slots=True)
class Planned:
    """A request of the prompts file and what a run does with it.

    Attributes:
        line: The request.
        key: Its key in the index.
        action: Send, skip or reattach.
        status: The manifest's latest status for it (``None``: never recorded).
        entry: The manifest's latest entry, when it was read (to reattach, or to see that
            a result is still there); ``None`` when the status sufficed.
    """

    line: PromptLine
    key: int
    action: Plan
    status: str | None
    entry: dict[str, Any] | None


async def requests(
    reader: PromptsReader,
    index: RequestIndex,
    entry_at: Callable[[int], dict[str, Any] | None],
    *,
    retry_failed: bool,
    tee: IO[bytes] | None = None,
) -> AsyncIterator[Planned]:
    """Each request of the prompts file, planned, in file order.

    Args:
        reader: The prompts file.
        index: The manifest's index; this pass counts occurrences in it afresh.
        entry_at: Reads the manifest entry at an offset.
        retry_failed: Whether requests that failed earlier are sent again.
        tee: Gets a copy of the bytes read (standard input, kept for the second pass).

    Raises:
        PromptsFileError: A line is refused.
        OutDirectoryError: The manifest changed under the run (an entry it indexed is no
            longer there).
    """
    index.new_pass()
    for count, line in enumerate(reader.requests(index.occurrence, tee=tee), start=1):
        key = line.digest | line.occurrence << 64
        status, offset = index.state(key)
        entry = None
        if status is None:
            action: Plan = "send"
        elif status in _SETTLED_BADLY and not retry_failed:
            action = "skip"
        else:
            entry = entry_at(offset)
            if entry is None:
                raise OutDirectoryError(
                    f"the manifest changed while this run read it (line {line.number}'s "
                    "entry is gone): run the command again"
                )
            action = plan(entry, retry_failed=retry_failed)
        yield Planned(line, key, action, status, entry)
        if count % CHUNK == 0:
            await anyio.lowlevel.checkpoint()
