"""The live progress display of ``generate``, ``batch`` and ``demo`` (rich), and the summary.

Prompts, statuses, messages and file names in them are data: shown by :func:`._shown.shown`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table

from .._exceptions import BudgetExceededError, DownloadError
from ._files import describe
from ._shown import assemble, shown

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .._batch import BatchItem

__all__ = [
    "BatchView",
    "failure_message",
    "failure_status",
    "plural",
    "summary_table",
    "unsent",
]

_FAILED = frozenset({"failed", "cancelled", "error"})
_NOT_SENT = "not sent: over the budget (--max-spend)"


def bucket(item: BatchItem, active: dict[str, str]) -> str:
    """Which column of the display an item counts in."""
    if item.finished:
        return "done" if item.record is not None else "failed"
    if item.generation is None:
        return "failed" if item.error is not None else "waiting"
    # The queue's active list is fresher than the handle's status between completions.
    status = active.get(item.generation.id, item.generation.status)
    return status if status in ("queued", "processing") else "queued"


class BatchView:
    """A renderable that recounts the items every time rich refreshes it."""

    def __init__(self, title: str, items: Sequence[BatchItem]) -> None:
        self.title = title
        self.items = items
        self.active: dict[str, str] = {}
        """Id -> status of the active rows, refreshed by the caller from the queue's list."""
        self.started = time.monotonic()

    def counts(self) -> Counter[str]:
        return Counter(bucket(item, self.active) for item in self.items)

    def __rich__(self) -> RenderableType:
        counts = self.counts()
        total = len(self.items)
        finished = counts["done"] + counts["failed"]
        elapsed = time.monotonic() - self.started
        rate = counts["done"] / elapsed if elapsed > 0 else 0.0
        line = assemble(
            ("waiting ", "dim"),
            (f"{counts['waiting']}", "bold"),
            ("  queued ", "dim"),
            (f"{counts['queued']}", "bold yellow"),
            ("  processing ", "dim"),
            (f"{counts['processing']}", "bold cyan"),
            ("  done ", "dim"),
            (f"{counts['done']}", "bold green"),
            ("  failed ", "dim"),
            (f"{counts['failed']}", "bold red" if counts["failed"] else "bold"),
            (f"  {rate:.1f}/s  {_clock(elapsed)}", "dim"),
        )
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=finished, width=48), f"{finished}/{total}"
        )
        return Group(shown(self.title, "bold"), bar, line)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def summary_table(items: Sequence[BatchItem], files: dict[int, Path], *, width: int) -> Table:
    """One row per request: what it asked for, how it ended, which file holds it.

    The file name matters more than the prompt: the prompt gets what the console's ``width``
    leaves (rich never narrows a column that does not wrap).
    """
    table = Table(title="Summary", title_justify="left", show_edge=False, header_style="bold")
    table.add_column("#", justify="right", no_wrap=True)
    widest_file = max((len(path.name) for path in files.values()), default=12)
    others = len(str(len(items))) + 9 + 9 + widest_file + 13  #  #, size, status, file, rules
    prompt_width = max(8, min(34, width - others))
    table.add_column("prompt", no_wrap=True, overflow="ellipsis", width=prompt_width)
    table.add_column("size", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("file / error", overflow="fold", min_width=widest_file)
    for index, item in enumerate(items):
        status = "succeeded" if index in files else failure_status(item)
        path = files.get(index)
        table.add_row(
            str(index + 1),
            shown(item.params.get("prompt", "")),
            shown(item.params.get("resolution", "default")),
            shown(status, "green" if path else "red"),
            shown(
                path.name
                if path
                else (failure_message(item.error) or _NOT_SENT * unsent(item))[:200]
            ),
        )
    return table


def unsent(item: BatchItem) -> bool:
    """Whether a request was never sent: refused by the budget, or left after it was."""
    if isinstance(item.error, BudgetExceededError):
        return True
    return item.generation is None and item.generation_id is None and item.error is None


def failure_status(item: BatchItem) -> str:
    """How an item that produced no file ended: ``failed``, ``cancelled``, ``error``, or
    ``unsent`` (the budget stopped the run first)."""
    if unsent(item):
        return "unsent"
    if item.generation is not None and item.generation.status in _FAILED:
        return item.generation.status
    return "error" if item.error is not None else item.status


def failure_message(error: BaseException | None) -> str | None:
    """The server's text for a failed generation, else the error itself (a file this
    machine could not write said as such: ``could not save it: No space left on device``)."""
    if error is None:
        return None
    if isinstance(error, BudgetExceededError):
        return _NOT_SENT
    if isinstance(error, DownloadError) and isinstance(error.__cause__, OSError):
        return f"could not save it: {describe(error.__cause__, named=False)}"
    return getattr(error, "error_message", None) or str(error)


def plural(count: int, noun: str) -> str:
    """``1 generation``, ``2 generations``."""
    return f"{count} {noun}{'s' * (count != 1)}"
