"""The work behind ``generate``, ``batch`` and ``demo``: run, show progress, save, record."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from rich.live import Live

from .._batch import BatchItem, as_completed, run_batch
from .._exceptions import AmbiguousEnqueueError, BudgetExceededError, DownloadError, OxenError
from .._ledger import LedgerError
from .._models import GenerationRecord
from .._money import total
from ._cost import charged_costs, estimate, money, plan_budget, totals
from ._display import (
    BatchView,
    failure_message,
    failure_status,
    plural,
    summary_table,
    unsent,
)
from ._files import RESUME_HINT, WriteFailedError, describe
from ._interrupt import Interrupted
from ._shown import assemble

if TYPE_CHECKING:
    from rich.console import Console

    from .._client import AsyncClient
    from .._generation import Generation
    from ._interrupt import Interrupts
    from ._manifest import Manifest
    from ._prompts import PromptLine

__all__ = ["BatchOutcome", "into", "plan", "run_generate", "run_prompts"]

logger = logging.getLogger("oxen_queue")

_ACTIVE_LIST_LIMIT = 2000  # above this many pending, the display does not poll the list


class BatchOutcome:
    """What a run produced: the items, the files saved, and whether all succeeded."""

    def __init__(self, items: list[BatchItem]) -> None:
        self.items = items
        self.files: dict[int, Path] = {}
        self.unsent = 0
        """Requests the budget (``--max-spend``) left unsent."""

    @property
    def all_succeeded(self) -> bool:
        return all(i in self.files for i in range(len(self.items)))


async def _refresh_active(client: AsyncClient, view: BatchView) -> None:
    """Keep the display's queued/processing split fresh: one list request per 1.5 s."""
    while True:
        await anyio.sleep(1.5)
        pending = sum(1 for i in view.items if i.generation is not None and not i.finished)
        if not pending or pending > _ACTIVE_LIST_LIMIT:
            view.active = {}
            continue
        try:
            rows = await client.list_queue()
        except OxenError as exc:
            logger.debug("display refresh failed: %s", exc)
            continue
        view.active = {row.generation_id: row.status for row in rows}


def into(out: Path) -> str:
    """``out`` as a directory path (ending with a separator), for ``client.download``.

    Every result the CLI saves goes into a directory, named by the download's own rule (one
    name per generation id). Said with the trailing separator, not left to ``out.is_dir()``:
    were ``out`` gone or a file when a download lands, every generation would otherwise be
    saved to that one path, each over the last.
    """
    return os.path.join(out, "")


async def _save(client: AsyncClient, item: BatchItem, out: Path) -> Path | None:
    if item.record is None:
        return None
    try:
        return await client.download(item.record, into(out))
    except OxenError as exc:
        item.error = exc
        return None


def _stopping(item: BatchItem, out: Path) -> WriteFailedError | None:
    """The error that stops a batch, when an item failed because of this machine rather than
    the request: its result could not be written in ``out`` (the download's cause is an
    ``OSError``: a full or read-only disk...), or the ledger failed. Recording such an item
    as failed would make a rerun skip it; the run stops instead, and a rerun reattaches it."""
    error = item.error
    if isinstance(error, DownloadError) and isinstance(error.__cause__, OSError):
        reason = describe(error.__cause__, named=False)
        message = f"cannot save generation {item.generation_id} in {out}: {reason}"
    elif isinstance(error, LedgerError):
        message = f"the ledger failed: {error}"
    else:
        return None
    stopped = WriteFailedError(f"{message}; the run stopped: {RESUME_HINT}")
    stopped.__cause__ = error
    return stopped


Plan = Literal["send", "skip", "reattach"]


async def plan(previous: dict[str, Any] | None, *, retry_failed: bool) -> Plan:
    """What a run does with a request, given the manifest's latest entry for it: send it,
    skip it (settled in an earlier run), or reattach to its generation by id."""
    if previous is None:
        return "send"
    status, file, generation_id = (
        previous.get("status"),
        previous.get("file"),
        previous.get("generation_id"),
    )
    if status == "succeeded" and isinstance(file, str) and await _exists(file):
        return "skip"
    if status in ("failed", "cancelled", "error", "ambiguous") and not retry_failed:
        return "skip"
    # Enqueued in an earlier run (or succeeded without its file): reattach by id, never
    # enqueue again. Failed ones are enqueued anew only with --retry-failed.
    if isinstance(generation_id, str) and status not in ("failed", "cancelled"):
        return "reattach"
    return "send"


async def _exists(file: str) -> bool:
    """Whether a file a manifest names is there (a name no file system takes is not)."""
    try:
        return await anyio.Path(file).exists()
    except (OSError, ValueError):
        return False


async def _adopt_recovered(
    client: AsyncClient, model: str, to_run: list[BatchItem], manifest: Manifest
) -> None:
    """Reattach requests an interrupted run sent but never wrote in the manifest.

    The ledger has them (the request was recorded before it left): ``recover()`` hands back
    their jobs with the parameters that made them, and each goes to one line asking for
    exactly those, instead of being enqueued again.
    """
    recovered: dict[str, list[str]] = {}
    for generation in await client.recover():
        if generation.model is not None:
            recovered.setdefault(_request_key(generation.model, generation.params), []).append(
                generation.id
            )
    for item in to_run:
        if item.generation_id is not None:
            continue
        ids = recovered.get(_request_key(item.model or model, item.params))
        if ids:
            item.generation_id = ids.pop(0)
            _, line = item.tag
            manifest.append(line, generation_id=item.generation_id, status="queued")


def _request_key(model: str, params: Mapping[str, Any]) -> str:
    return json.dumps([model, params], sort_keys=True, default=str)


async def run_prompts(
    client: AsyncClient,
    *,
    model: str,
    lines: list[PromptLine],
    defaults: dict[str, Any],
    out: Path,
    manifest: Manifest,
    concurrency: int,
    retry_failed: bool,
    console: Console,
    interrupts: Interrupts,
    title: str,
    max_spend: Decimal | None = None,
) -> BatchOutcome:
    """Run a prompts file through ``run_batch``, resuming from the manifest.

    With ``max_spend``, requests are sent in file order while their estimates fit it (see
    ``plan_budget``): the first that does not stops the run, and it and those after it are
    left unsent, with no manifest line, for a later run. The client's own budget (the same
    amount) backs this up: it refuses, before sending, whatever would pass it.

    Every finished request is recorded, and printed as one plain line when the output is not a
    terminal. Ctrl-C leaves the generations in flight running upstream, recorded as enqueued:
    a rerun with the same manifest reattaches them.

    Raises:
        Interrupted: Ctrl-C, with the line that says how to resume.
    """
    items: list[BatchItem] = []
    to_run: list[BatchItem] = []
    outcome = BatchOutcome(items)
    for index, line in enumerate(lines):
        item = BatchItem(params={**defaults, **line.params}, model=line.model, tag=(index, line))
        items.append(item)
        previous = manifest.latest.get(line.key)
        action = await plan(previous, retry_failed=retry_failed)
        if action == "send":
            to_run.append(item)
            continue
        assert previous is not None
        status, generation_id = previous.get("status"), previous.get("generation_id")
        if action == "reattach":
            item.generation_id = generation_id
            to_run.append(item)
        elif status == "succeeded":
            item.finished = True
            item.generation_id = generation_id
            item.record = GenerationRecord(generation_id=str(generation_id), status="succeeded")
            outcome.files[index] = Path(str(previous.get("file")))
        else:
            item.finished = True
            item.generation_id = generation_id
            item.error = OxenError(f"{status} in an earlier run: {previous.get('error')}")
    await _adopt_recovered(client, model, to_run, manifest)
    resumed = sum(1 for i in to_run if i.generation_id)
    if resumed or len(to_run) < len(items):
        console.print(
            f"Resuming: {len(items) - len(to_run)} already settled, {resumed} reattached by id."
        )
    if max_spend is not None:
        to_run = await _within_budget(client, model, to_run, max_spend)

    def on_enqueued(item: BatchItem) -> None:
        _, line = item.tag
        assert item.generation is not None
        manifest.append(line, generation_id=item.generation.id, status="queued")

    async def on_finished(item: BatchItem) -> None:
        index, line = item.tag
        if isinstance(item.error, BudgetExceededError):
            # Not sent: no manifest line, so a later run sends it.
            _plain_progress(console, view, item, "unsent: the budget (--max-spend) is reached")
            return
        path = await _save(client, item, out)
        stopped = _stopping(item, out)
        if stopped is not None:  # no line: the manifest (or the ledger) keeps it as enqueued
            raise stopped
        if path is not None:
            outcome.files[index] = path
            manifest.append(
                line, generation_id=item.generation_id, status="succeeded", file=str(path)
            )
            _plain_progress(console, view, item, f"saved {path}")
            return
        ambiguous = isinstance(item.error, AmbiguousEnqueueError)
        status = "ambiguous" if ambiguous else failure_status(item)
        manifest.append(
            line, generation_id=item.generation_id, status=status, error=failure_message(item.error)
        )
        _plain_progress(console, view, item, f"{status}: {failure_message(item.error)}")

    view = BatchView(title, items)
    if not console.is_terminal:
        console.print(title)
    with _live(view, console, transient=False), interrupts.scope() as work:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(_refresh_active, client, view)
            await run_batch(
                client,
                model,
                to_run,
                concurrency=concurrency,
                on_enqueued=on_enqueued,
                on_finished=on_finished,
            )
            task_group.cancel_scope.cancel()
    if work.cancelled_caught:
        running = sum(1 for i in items if i.generation is not None and not i.finished)
        raise Interrupted(
            f"interrupted: {plural(running, 'generation')} left running upstream. It resumes "
            "where it stopped: run it again with the same --out."
        )
    console.print()
    console.print(summary_table(items, outcome.files, width=console.width))
    outcome.unsent = sum(1 for item in items if unsent(item))
    await _print_costs(client, model, items, console)
    return outcome


async def _within_budget(
    client: AsyncClient, model: str, to_run: list[BatchItem], max_spend: Decimal
) -> list[BatchItem]:
    """The requests to run under the budget: reattached ones all, and new ones in file
    order until the first that does not fit (as ``--dry-run`` says)."""
    fresh = [item for item in to_run if item.generation_id is None]
    estimates = [await estimate(client, item.model or model, item.params) for item in fresh]
    sent = dict(zip(map(id, fresh), plan_budget(estimates, max_spend).sent, strict=True))
    return [item for item in to_run if sent.get(id(item), True)]


async def _print_costs(
    client: AsyncClient, model: str, items: list[BatchItem], console: Console
) -> None:
    """The run's estimated cost (its models' published prices) and what its rows say it was
    charged."""
    made = [item for item in items if item.generation_id is not None]
    if not made:
        return
    estimates = [await estimate(client, item.model or model, item.params) for item in made]
    estimated, unknown = totals(estimates)
    ids = {str(item.generation_id) for item in made}
    charged = await charged_costs(client, ids, {item.model or model for item in made})
    known = [cost for cost in charged.values() if cost is not None]
    line = (
        f"cost of {plural(len(made), 'generation')}: estimated {money(estimated)}"
        f"{f' (+{unknown} unknown)' if unknown else ''}, charged "
        f"{money(total(known))}"
    )
    pending = len(ids) - len(known)
    if pending:
        line += f" ({pending} not charged yet or not found)"
    console.print(line)


async def run_generate(
    client: AsyncClient,
    *,
    model: str,
    params: dict[str, Any],
    count: int,
    out: Path,
    console: Console,
    interrupts: Interrupts,
) -> BatchOutcome:
    """Enqueue one request (``count`` generations), show progress, save every result, and
    print one line for each as it finishes.

    Raises:
        Interrupted: Ctrl-C; the generations not finished were cancelled upstream, since
            nobody will collect them.
    """
    items: list[BatchItem] = []
    outcome = BatchOutcome(items)
    view = BatchView(f"{model} · {plural(count, 'generation')}", items)
    with interrupts.scope() as work:
        # A Ctrl-C while the request is in flight waits for its answer: the jobs it made are
        # then known, and cancelled with the others (a second Ctrl-C stops waiting).
        with interrupts.landing() as sending:
            if count == 1:
                generations: list[Generation] = [await client.enqueue(model, **params)]
            else:
                generations = await client.enqueue_many(model, count, **params)
        items += [BatchItem(params=params, generation=g, generation_id=g.id) for g in generations]
        by_id = {item.generation_id: (index, item) for index, item in enumerate(items)}
        with _live(view, console, transient=True):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_refresh_active, client, view)
                async for generation in as_completed(generations):
                    index, item = by_id[generation.id]
                    try:
                        item.record = generation.result()
                    except OxenError as exc:
                        item.error = exc
                    path = await _save(client, item, out)
                    item.finished = True
                    if path is not None:
                        outcome.files[index] = path
                    _report(console, item, path)
                task_group.cancel_scope.cancel()
    if work.cancelled_caught:
        raise Interrupted(
            await _cancel_upstream(client, interrupts, landed=not sending.cancel_called)
        )
    return outcome


async def _cancel_upstream(client: AsyncClient, interrupts: Interrupts, *, landed: bool) -> str:
    """Cancel what the client still watches; say so in one line.

    ``landed``: the enqueue's answer was awaited, so its jobs are among those watched; a
    second Ctrl-C that cut the wait short leaves jobs whose ids never arrived, and the line
    says so rather than "nothing". Bounded in time, and cut short by another Ctrl-C.
    """
    pending = [generation.id for generation in client.pending.values()]
    if not landed:
        cancelled = await _cancel(client, interrupts, pending)
        return (
            f"interrupted while enqueueing: {plural(len(cancelled), 'generation')} cancelled "
            "upstream; the request's jobs may still be running (look for them with "
            "`oxen-queue status ID` or in the history)"
        )
    if not pending:  # interrupted while saving the last result: nothing runs upstream
        return "interrupted: nothing left running upstream."
    cancelled = await _cancel(client, interrupts, pending)
    if len(cancelled) == len(pending):
        return f"interrupted: {plural(len(pending), 'generation')} cancelled upstream."
    unconfirmed = [i for i in pending if i not in cancelled]
    return (
        f"interrupted: {len(cancelled)} of {plural(len(pending), 'generation')} cancelled "
        f"upstream; not confirmed: {' '.join(unconfirmed)} (see `oxen-queue status ID`)"
    )


async def _cancel(client: AsyncClient, interrupts: Interrupts, ids: list[str]) -> list[str]:
    """Cancel each generation upstream, all at once; the ids whose cancellation was confirmed."""
    cancelled: list[str] = []

    async def cancel(generation_id: str) -> None:
        try:
            await client.cancel(generation_id)
        except OxenError as exc:
            logger.debug("could not cancel %s: %s", generation_id, exc)
        else:
            cancelled.append(generation_id)

    with interrupts.cleanup():
        async with anyio.create_task_group() as task_group:
            for generation_id in ids:
                task_group.start_soon(cancel, generation_id)
    return cancelled


def _report(console: Console, item: BatchItem, path: Path | None) -> None:
    """One line for a generation of ``generate``, as it finishes: where it went, or why not."""
    if path is not None:
        console.print(assemble(("saved", "green"), " ", path, "  (", item.generation_id, ")"))
    else:
        reason = failure_message(item.error) or ""
        status = failure_status(item)
        console.print(assemble((status, "red"), " ", item.generation_id, ": ", reason))


def _live(view: BatchView, console: Console, *, transient: bool) -> AbstractContextManager[Any]:
    """The live display on a terminal; nothing elsewhere (logs get one line per item)."""
    if console.is_terminal:
        return Live(view, console=console, refresh_per_second=4, transient=transient)
    return nullcontext()


def _plain_progress(console: Console, view: BatchView, item: BatchItem, detail: str) -> None:
    if console.is_terminal:
        return
    finished = sum(1 for i in view.items if i.finished)
    prompt = str(item.params.get("prompt", ""))
    console.print(f"[{finished}/{len(view.items)}] {prompt[:40]!r} {detail}", soft_wrap=True)
