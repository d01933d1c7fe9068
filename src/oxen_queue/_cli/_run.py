"""The work behind ``generate``, ``batch`` and ``demo``: run, show progress, save, record.

A batch is run as a stream (`run_prompts`): the prompts file is read a second time,
request by request, and fed to ``--concurrency`` workers through a buffer of as many; a
request is held in memory only while it is in flight. What the run learns goes to the
manifest (and its index) as it happens, and the display counts, never walks, the requests.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import anyio
from rich.live import Live

from .._batch import BatchItem, as_completed
from .._exceptions import AmbiguousEnqueueError, BudgetExceededError, DownloadError, OxenError
from .._ledger import LedgerError
from .._money import total
from ._cost import BudgetCursor, Estimate, Pricer, charged_costs, money, parameter_set
from ._dataset import LEFT_OUT, DatasetWriter, MetadataFormat
from ._display import NOT_SENT, BatchView, Tally, failure_message, failure_status, plural
from ._files import RESUME_HINT, OutDirectoryError, WriteFailedError, describe
from ._interrupt import Interrupted
from ._manifest import COMMIT_INTERVAL
from ._scan import requests
from ._shown import assemble, shown

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream
    from rich.console import Console

    from .._client import AsyncClient
    from .._generation import Generation
    from ._interrupt import Interrupts
    from ._manifest import Manifest
    from ._prompts import PromptLine, PromptsReader
    from ._scan import Planned

__all__ = ["BatchOutcome", "into", "run_generate", "run_prompts"]

logger = logging.getLogger("oxen_queue")

_ACTIVE_LIST_LIMIT = 2000  # above this many pending, the display does not poll the list
_CHARGED_IDS: Final = 20_000  # generations whose charge the summary looks up, at most
_OVER_BUDGET: Final = "over the budget (--max-spend)"


@dataclass(slots=True)
class BatchOutcome:
    """What a run produced.

    Attributes:
        total: Requests (or generations) asked for.
        saved: Those whose result file is saved (in this run or an earlier one).
        unsent: Requests the budget (``--max-spend``) left unsent.
        files: The files saved, in order (``generate`` only).
    """

    total: int
    saved: int = 0
    unsent: int = 0
    files: list[Path] = field(default_factory=list)

    @property
    def all_succeeded(self) -> bool:
        return self.saved == self.total


async def _refresh_active(client: AsyncClient, view: BatchView) -> None:
    """Keep the display's queued/processing split fresh: one list request per 1.5 s."""
    while True:
        await anyio.sleep(1.5)
        pending = len(view.running)
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


def request_key(model: str, params: dict[str, Any]) -> str:
    """A request as the ledger's recovered jobs are matched: its model and parameters."""
    return json.dumps([model, params], sort_keys=True, default=str)


async def _recovered(
    client: AsyncClient, manifest: Manifest, looked_up: set[str], named: set[str]
) -> dict[str, list[str]]:
    """Requests an interrupted run sent but never wrote in the manifest, by request.

    The ledger has them (the request was recorded before it left): ``recover()`` hands back
    their jobs with the parameters that made them, and each goes to one line asking for
    exactly those, instead of being enqueued again. A job the manifest already names is its
    line's (reattached by id), never another's: the ledger may still list it when the
    run was killed before the ledger heard how it ended, and an identical line further on
    must get a job of its own. ``looked_up``: ids already looked for in the manifest, of
    which it names ``named`` (the manifest is read again only for the others).
    """
    # No limit on the wait: a limit shorter than twice the request timeout would leave a
    # request that may still land unsettled, and its line would be sent again.
    taken = await client.recover(wait=None, include_own=False)
    generations = [g for g in taken if g.model is not None]
    if not generations:
        return {}
    unseen = {g.id for g in generations} - looked_up
    if unseen:
        named = named | await anyio.to_thread.run_sync(manifest.naming, unseen)
    recovered: dict[str, list[str]] = {}
    for generation in generations:
        if generation.id not in named:
            key = request_key(str(generation.model), generation.params)
            recovered.setdefault(key, []).append(generation.id)
    return recovered


@dataclass(slots=True)
class _Recovery:
    """The jobs an interrupted run sent and never wrote in the manifest (`_recovered`), by
    request, found while the run sends its other requests.

    ``recover()`` may wait up to twice the request timeout for requests the interrupted run
    had sent and never heard back from (they may still reach the server). Meanwhile, of the
    lines asking for a request the ledger lists (``orphaned_requests()``), as many are held
    back as it lists generations the manifest does not name; every other line is sent at
    once.

    Attributes:
        held: Lines still to hold back, by request key.
        found: The jobs recovered and not given to a line yet, by request key; ``None`` while
            recovering.
        waiting: The lines held back: line, model and parameters.
    """

    held: Counter[str] = field(default_factory=Counter)
    found: dict[str, list[str]] | None = None
    waiting: list[tuple[PromptLine, str, dict[str, Any]]] = field(default_factory=list)
    looked_up: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)

    async def hold_for(self, client: AsyncClient, manifest: Manifest) -> None:
        """Count the lines to hold back: one for each generation of the gone clients'
        requests that the manifest does not name (the lines it names are reattached). The
        ids looked for, and those it names, are kept for `_recovered`."""
        orphaned = await client.orphaned_requests()
        self.looked_up = {i for _, _, i in orphaned if i is not None}
        if self.looked_up:
            self.named = await anyio.to_thread.run_sync(manifest.naming, self.looked_up)
        self.held.update(
            request_key(m, p) for m, p, i in orphaned if i is None or i not in self.named
        )

    async def recover(self, client: AsyncClient, manifest: Manifest) -> None:
        """Find the jobs (`_recovered`): from now on, lines take them and none is held."""
        self.found = await _recovered(client, manifest, self.looked_up, self.named)

    def hold(self, line: PromptLine, model: str, params: dict[str, Any]) -> bool:
        """Hold back a line that may get a job still being recovered. A request whose lines
        are all held is dropped from ``held``: once none is left, no line is keyed."""
        if self.found is not None or not self.held:
            return False
        key = request_key(model, params)
        if key not in self.held:
            return False
        self.held[key] -= 1
        if not self.held[key]:
            del self.held[key]
        self.waiting.append((line, model, params))
        return True

    def take(self, model: str, params: dict[str, Any]) -> str | None:
        """A recovered job for a request, given to the line asking (once). A request whose
        jobs are all given is dropped: once none is left, no line is keyed."""
        if not self.found:
            return None
        key = request_key(model, params)
        ids = self.found.get(key)
        if not ids:
            return None
        generation_id = ids.pop(0)
        if not ids:
            del self.found[key]
        return generation_id


@dataclass(slots=True)
class _Work:
    """What a worker needs of a request besides its [`BatchItem`][oxen_queue.BatchItem]."""

    line: PromptLine
    model: str
    estimate: Estimate | None


@dataclass(slots=True)
class _Costs:
    """The estimated cost of the generations a batch made, and their ids (the first
    `_CHARGED_IDS`, whose charges the summary looks up)."""

    amounts: list[Decimal] = field(default_factory=list)
    unknown: int = 0
    made: int = 0
    ids: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)

    def add(self, generation_id: object, model: str, one: Estimate | None) -> None:
        self.made += 1
        if one is None or one.amount is None:
            self.unknown += 1
        else:
            if len(self.amounts) > 1000:  # summed now and then: exact, and bounded
                self.amounts = [total(self.amounts)]
            self.amounts.append(one.amount)
        if isinstance(generation_id, str) and len(self.ids) < _CHARGED_IDS:
            self.ids.add(generation_id)
            self.models.add(model)


async def _commit_every(manifest: Manifest) -> None:
    """The manifest's group commit: one fsync of what was written, every
    `COMMIT_INTERVAL` seconds at most."""
    while True:
        await anyio.sleep(COMMIT_INTERVAL)
        await anyio.to_thread.run_sync(manifest.sync)


async def run_prompts(
    client: AsyncClient,
    *,
    model: str,
    reader: PromptsReader,
    defaults: dict[str, Any],
    out: Path,
    manifest: Manifest,
    concurrency: int,
    retry_failed: bool,
    console: Console,
    interrupts: Interrupts,
    title: str,
    to_run: int,
    max_spend: Decimal | None = None,
    metadata: MetadataFormat = "jsonl",
) -> BatchOutcome:
    """Run a prompts file, resuming from the manifest, and write the dataset.

    With ``max_spend``, new requests are sent in file order while their estimates fit it
    (`BudgetCursor`): the first that does not stops the run, and it and those
    after it are left unsent, with no manifest line, for a later run. The client's own
    budget (the same amount) backs this up: it refuses, before sending, whatever would pass
    it.

    Every finished request is recorded, and printed as one plain line when the output is
    not a terminal, numbered from 1 to ``to_run`` (the requests this run sends or
    reattaches), one more each line. Ctrl-C leaves the generations in flight running
    upstream, recorded as enqueued: a rerun with the same manifest reattaches them. A run
    that ends (not interrupted) compacts the manifest and writes ``metadata.jsonl`` (or
    ``metadata.parquet``, as ``metadata`` says) and ``not_generated.jsonl`` (`_dataset`).

    Raises:
        Interrupted: Ctrl-C, with the line that says how to resume.
        WriteFailedError: A file of the run could not be written; the run stopped.
    """
    view = BatchView(title, to_run)
    tally = Tally()
    costs = _Costs()
    outcome = BatchOutcome(0)
    pricer = Pricer(client)
    cursor = BudgetCursor(max_spend) if max_spend is not None else None
    recovery = _Recovery()
    if max_spend is None:  # a budget is decided in file order: recovered first, then sent
        await recovery.hold_for(client, manifest)
    if not recovery.held:
        await recovery.recover(client, manifest)
    adopted = 0
    over_budget = False
    dataset = DatasetWriter(out, manifest.index, model=model, metadata=metadata)
    send, receive = anyio.create_memory_object_stream[BatchItem](concurrency)

    def not_generated(line: PromptLine, line_model: str, params: dict[str, Any]) -> None:
        outcome.unsent += 1
        tally.add("unsent", number=line.number, prompt=line.prompt, detail=_OVER_BUDGET)
        request = dataset.request(line_model, params)
        dataset.not_generated(line=line.number, request=request, status="unsent", error=NOT_SENT)

    async def settled(planned: Planned, line_model: str, params: dict[str, Any]) -> None:
        """A request settled in an earlier run: counted, nothing sent."""
        line, entry = planned.line, planned.entry
        status = str(planned.status)
        tally.earlier += 1
        if status == "succeeded":
            outcome.saved += 1
            tally.add(status, number=line.number, prompt=line.prompt, detail=None)
        else:
            entry = entry or manifest.entry(planned.key)
            error = entry.get("error") if entry else None
            detail = f"in an earlier run: {error}" if error else "in an earlier run"
            tally.add(status, number=line.number, prompt=line.prompt, detail=detail)
        generation_id = entry.get("generation_id") if entry else None
        if generation_id is not None:
            rest = parameter_set(params)
            costs.add(generation_id, line_model, await pricer.price(line_model, params, rest))

    async def produce() -> None:
        async with send:
            async for planned in requests(
                reader, manifest.index, manifest.entry_at, retry_failed=retry_failed
            ):
                line = planned.line
                params = {**defaults, **line.params}
                line_model = line.model or model
                if planned.action == "skip":
                    await settled(planned, line_model, params)
                    continue
                if planned.action == "reattach":
                    assert planned.entry is not None
                    item = BatchItem(params=params, model=line.model)
                    item.generation_id = planned.entry.get("generation_id")
                    item.tag = _Work(line, line_model, None)
                    await send.send(item)
                elif not recovery.hold(line, line_model, params):
                    await new_request(send, line, line_model, params)

    async def new_request(
        send: MemoryObjectSendStream[BatchItem],
        line: PromptLine,
        line_model: str,
        params: dict[str, Any],
    ) -> None:
        """A request no run has sent: given a recovered job, else sent if the budget lets it."""
        nonlocal adopted
        item = BatchItem(params=params, model=line.model)
        one: Estimate | None = None
        if (generation_id := recovery.take(line_model, params)) is not None:
            item.generation_id = generation_id
            adopted += 1
            manifest.append(
                line, generation_id=generation_id, status="queued", model=line_model, params=params
            )
        else:
            one = await pricer.price(line_model, params, parameter_set(params))
            fits = cursor is None or cursor.take(one, line=line.number)
            if over_budget or not fits:
                not_generated(line, line_model, params)
                return
        item.tag = _Work(line, line_model, one)
        await send.send(item)

    async def recover_meanwhile(send: MemoryObjectSendStream[BatchItem]) -> None:
        """Recover the interrupted run's jobs, then place the lines held back for them."""
        async with send:
            if recovery.found is None:
                try:
                    await recovery.recover(client, manifest)
                except (LedgerError, OutDirectoryError) as exc:
                    # Lines were sent meanwhile: the run stops as when a write fails mid-run
                    # (the lines held back stay unsent: a rerun recovers them).
                    raise WriteFailedError(
                        f"could not recover what the interrupted run sent: {exc}; the run "
                        f"stopped: {RESUME_HINT}"
                    ) from exc
            held, recovery.waiting = recovery.waiting, []
            for line, line_model, params in held:
                await new_request(send, line, line_model, params)

    async def finished(item: BatchItem) -> None:
        nonlocal over_budget
        work: _Work = item.tag
        line = work.line
        if isinstance(item.error, BudgetExceededError):
            # Not sent: no manifest line, so a later run sends it.
            over_budget = True
            not_generated(line, work.model, item.params)
            return
        path = await _save(client, item, out)
        stopped = _stopping(item, out)
        if stopped is not None:  # no line: the manifest (or the ledger) keeps it as enqueued
            raise stopped
        if item.generation_id is not None:
            one = work.estimate
            if one is None:  # reattached: priced now
                one = await pricer.price(work.model, item.params, parameter_set(item.params))
            costs.add(item.generation_id, work.model, one)
        common = {"generation_id": item.generation_id, "model": work.model, "params": item.params}
        if path is not None:
            outcome.saved += 1
            cost = work.estimate.amount if work.estimate is not None else None
            manifest.append(
                line,
                **common,
                status="succeeded",
                file=str(path),
                cost=None if cost is None else money(cost),
            )
            tally.add("succeeded", number=line.number, prompt=line.prompt, detail=None)
            _plain_progress(plain, view, line.prompt, f"saved {path}", succeeded=True)
            return
        ambiguous = isinstance(item.error, AmbiguousEnqueueError)
        status = "ambiguous" if ambiguous else failure_status(item)
        message = failure_message(item.error)
        manifest.append(line, **common, status=status, error=message)
        tally.add(status, number=line.number, prompt=line.prompt, detail=message)
        _plain_progress(plain, view, line.prompt, f"{status}: {message}", succeeded=False)

    async def one(item: BatchItem) -> None:
        work: _Work = item.tag
        if item.generation_id is None and over_budget:  # the client refused one before it
            not_generated(work.line, work.model, item.params)
            return
        view.running.add(item)
        try:
            if item.generation_id is not None:
                item.generation = client.generation(item.generation_id)
            else:
                item.generation = await client.enqueue(work.model, **item.params)
                item.generation_id = item.generation.id
                manifest.append(
                    work.line,
                    generation_id=item.generation_id,
                    status="queued",
                    model=work.model,
                    params=item.params,
                )
            item.record = await item.generation
        except OxenError as exc:
            item.error = exc
        item.finished = True
        await finished(item)
        view.running.discard(item)

    async def worker() -> None:
        async for item in receive:
            await one(item)

    plain = None if console.is_terminal else console.file
    if plain is not None:
        console.print(title)
    try:
        with _live(view, console, transient=False), interrupts.scope() as work:
            async with anyio.create_task_group() as task_group:
                if console.is_terminal:  # the queued/processing split is the display's only
                    task_group.start_soon(_refresh_active, client, view)
                task_group.start_soon(_commit_every, manifest)
                with receive:  # closed once every worker is done with it
                    async with anyio.create_task_group() as workers:
                        for _ in range(concurrency):
                            workers.start_soon(worker)
                        workers.start_soon(recover_meanwhile, send.clone())
                        await produce()
                task_group.cancel_scope.cancel()
        if work.cancelled_caught:
            running = sum(1 for item in view.running if item.generation is not None)
            raise Interrupted(
                f"interrupted: {plural(running, 'generation')} left running upstream. It "
                "resumes where it stopped: run it again with the same --out."
            )
        manifest.compact(dataset.entry)
        dataset.commit()
    finally:
        dataset.discard()
    outcome.total = outcome.saved + sum(
        count for status, count in tally.statuses.items() if status != "succeeded"
    )
    console.print()
    tally.print(console, total=outcome.total)
    if adopted:
        console.print(
            f"{plural(adopted, 'request')} an interrupted run had sent were found in the "
            "ledger and reattached"
        )
    console.print(
        f"dataset: {dataset.metadata} ({plural(dataset.rows, 'row')}); "
        f"not generated: {out / LEFT_OUT} ({plural(dataset.left_out, 'line')})"
    )
    await _print_costs(client, costs, console)
    return outcome


async def _print_costs(client: AsyncClient, costs: _Costs, console: Console) -> None:
    """The run's estimated cost (its models' published prices) and what its rows say it was
    charged (looked up for the first 20,000 generations)."""
    if not costs.made:
        return
    line = (
        f"cost of {plural(costs.made, 'generation')}: estimated {money(total(costs.amounts))}"
        f"{f' (+{costs.unknown} unknown)' if costs.unknown else ''}, charged "
    )
    charged = await charged_costs(client, costs.ids, costs.models)
    known = [cost for cost in charged.values() if cost is not None]
    line += money(total(known))
    pending = len(costs.ids) - len(known)
    if pending:
        line += f" ({pending} not charged yet or not found)"
    if costs.made > len(costs.ids):
        line += f" (of the first {len(costs.ids):,} only)"
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
    outcome = BatchOutcome(count)
    view = BatchView(f"{model} · {plural(count, 'generation')}", count)
    with interrupts.scope() as work:
        # A Ctrl-C while the request is in flight waits for its answer: the jobs it made are
        # then known, and cancelled with the others (a second Ctrl-C stops waiting).
        with interrupts.landing() as sending:
            if count == 1:
                generations: list[Generation] = [await client.enqueue(model, **params)]
            else:
                generations = await client.enqueue_many(model, count, **params)
        items = [BatchItem(params=params, generation=g, generation_id=g.id) for g in generations]
        by_id = {item.generation_id: item for item in items}
        view.running.update(items)
        with _live(view, console, transient=True):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_refresh_active, client, view)
                async for generation in as_completed(generations):
                    item = by_id[generation.id]
                    try:
                        item.record = generation.result()
                    except OxenError as exc:
                        item.error = exc
                    path = await _save(client, item, out)
                    item.finished = True
                    view.running.discard(item)
                    view.finish(succeeded=path is not None)
                    if path is not None:
                        outcome.saved += 1
                        outcome.files.append(path)
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


def _plain_progress(
    plain: IO[str] | None, view: BatchView, prompt: str, detail: str, *, succeeded: bool
) -> None:
    """Count a finished request; when the output is not a terminal (``plain``), print its
    line there, whose number is one more than the last one's (counted and printed in one
    step: no await between them, so concurrent requests cannot print the same number).

    The line is made safe by `shown`, as the console would print it, without rich's
    rendering (which cost a batch more than its own bookkeeping per line), and flushed: a
    log that follows the run sees each line as it comes."""
    number = view.finish(succeeded=succeeded)
    if plain is not None:
        plain.write(f"{shown(f'[{number}/{view.total}] {prompt[:40]!r} {detail}').plain}\n")
        plain.flush()
