"""The live progress display of ``generate``, ``batch`` and ``demo`` (rich), and the summary
of how a batch's requests ended.

Prompts, statuses, messages and file names in them are data: shown by `_shown.shown`.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Final

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table

from .._exceptions import BudgetExceededError, DownloadError
from ._files import describe
from ._shown import assemble, shown

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from .._batch import BatchItem

__all__ = [
    "NOT_SENT",
    "BatchView",
    "Tally",
    "failure_message",
    "failure_status",
    "plural",
    "unsent",
]

_FAILED = frozenset({"failed", "cancelled", "error"})
NOT_SENT: Final = "not sent: over the budget (--max-spend)"
_LISTED: Final = 20  # requests without a file listed in the summary


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
    """The live display's state, kept as counters: it never walks the requests (a batch may
    have a million); only the generations in flight are looked at, each refresh.

    Args:
        title: The first line.
        total: Requests this view counts to (``generate``: its generations; ``batch``: the
            requests this run sends or reattaches).
    """

    def __init__(self, title: str, total: int) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self.failed = 0
        self.running: set[BatchItem] = set()
        """The items in flight (enqueued or reattached, not finished)."""
        self.active: dict[str, str] = {}
        """Id -> status of the active rows, refreshed by the caller from the queue's list."""
        self.started = time.monotonic()

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def finish(self, *, succeeded: bool) -> int:
        """Count a finished request; its number, one more than the last one's."""
        if succeeded:
            self.done += 1
        else:
            self.failed += 1
        return self.finished

    def counts(self) -> Counter[str]:
        counts = Counter(bucket(item, self.active) for item in list(self.running))
        counts["done"] = self.done
        counts["failed"] += self.failed
        counts["waiting"] = max(0, self.total - self.finished - len(self.running))
        return counts

    def __rich__(self) -> RenderableType:
        counts = self.counts()
        total = self.total
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


class Tally:
    """How each request of a batch ended, counted, with the first few that made no file
    (the rest are in ``not_generated.jsonl``)."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.earlier = 0
        """Requests settled in an earlier run (counted in ``statuses`` too)."""
        self.listed: list[RenderableType] = []
        self._more = 0

    def add(self, status: str, *, number: int, prompt: str, detail: str | None) -> None:
        """A request's end (``number``: its line; ``detail``: why it made no file)."""
        self.statuses[status] += 1
        if status == "succeeded":
            return
        if len(self.listed) < _LISTED:
            self.listed.append(
                assemble(
                    f"  line {number} ",
                    (repr(prompt[:40]), "dim"),
                    " ",
                    (status, "red"),
                    f": {detail[:200]}" if detail else "",
                )
            )
        else:
            self._more += 1

    def print(self, console: Console, *, total: int) -> None:
        order = ["succeeded", "failed", "cancelled", "error", "ambiguous", "unsent"]
        order += sorted(set(self.statuses) - set(order))
        parts = [f"{self.statuses[s]:,} {s}" for s in order if self.statuses[s]]
        earlier = f" ({self.earlier:,} settled in an earlier run)" if self.earlier else ""
        console.print(
            assemble(
                ("Summary", "bold"), f": {plural(total, 'request')}: ", ", ".join(parts), earlier
            )
        )
        for line in self.listed:
            console.print(line)
        if self._more:
            console.print(f"  ... and {self._more:,} more (listed in not_generated.jsonl)")


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
        return NOT_SENT
    if isinstance(error, DownloadError) and isinstance(error.__cause__, OSError):
        return f"could not save it: {describe(error.__cause__, named=False)}"
    return getattr(error, "error_message", None) or str(error)


def plural(count: int, noun: str) -> str:
    """``1 generation``, ``2 generations``, ``1,000,000 requests``."""
    return f"{count:,} {noun}{'s' * (count != 1)}"
