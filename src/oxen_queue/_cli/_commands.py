"""The commands of the console script. Each takes the `Context` of the run and returns
the exit status, by the rule the help states (``_parser.EXIT_STATUSES``): 0 everything asked
for succeeded, 1 a generation did not succeed (or the API or this machine failed), 2 a
request was refused or could not be made as given. Per command:

- ``generate``, ``wait``, ``batch``, ``demo``: 1 when a generation failed or was cancelled;
  2 when one's id is unknown (404).
- ``download``: 1 for a generation without a result (not succeeded, or not yet).
- ``status``: 1 when a generation shown has failed or was cancelled (still running is 0:
  nothing has gone wrong yet); 2 for an unknown id.
- ``cancel``: 0 when each generation is cancelled or had already finished (it is not running,
  which is what was asked); 2 for an unknown id.
- ``batch --dry-run``: 2 when a request has parameters the client refuses (it would be
  refused, costing nothing); 1 when a price is unknown; 0 otherwise.
- ``submit``, ``models``, ``recover``: 0, or the error's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
from rich.table import Table

from .._batch import as_completed
from .._client import AsyncClient
from .._exceptions import (
    AuthenticationError,
    GenerationCancelledError,
    GenerationFailedError,
    NotFoundError,
    OxenError,
)
from .._ids import check_id
from .._models import TERMINAL_STATUSES
from ._connection import connect_failure
from ._cost import BudgetCursor, DryRun, Pricer, money, parameter_set
from ._dataset import MetadataFormat, import_pyarrow
from ._display import failure_message, plural
from ._files import OutDirectoryError, WriteFailedError, describe, failed_write, prepare_out
from ._index import RequestIndex
from ._interrupt import Interrupted, Interrupts
from ._manifest import EntryReader, Manifest, load_index
from ._prompts import PromptsFileError, PromptsReader
from ._run import into, run_generate, run_prompts
from ._scan import requests
from ._shown import assemble, error_line, json_line, shown, warning_line

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

    from .._generation import Generation
    from .._models import GenerationRecord, Model

__all__ = ["COMMANDS", "CommandError", "Context", "bundled_prompts"]


class CommandError(Exception):
    """Bad usage or configuration, reported in one line with exit status 2."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a command runs with."""

    args: argparse.Namespace
    options: dict[str, Any]
    """``AsyncClient`` keyword arguments (base URL and key of the shared emulator)."""
    console: Console
    """Standard output: results, one plain line each when it is not a terminal."""
    errors: Console
    """Standard error: what went wrong."""
    interrupts: Interrupts


def _refused(error: OxenError) -> bool:
    """Whether the API refused the request (exit status 2) rather than failed."""
    return isinstance(error, NotFoundError | AuthenticationError)


def _request_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("resolution", "quality", "output_format")
    return {name: getattr(args, name) for name in names if getattr(args, name, None)}


def _generation_ids(args: argparse.Namespace) -> list[str]:
    """The ids given on the command line, each once, in order.

    Every one is checked before anything is done, so one bad id among several stops the
    command before it touches the others (``InvalidParamsError``: one line, exit status 2).
    """
    return [check_id(generation_id) for generation_id in dict.fromkeys(args.generation_ids)]


def _count(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CommandError("-n must be at least 1")
    return int(args.n)


async def generate(context: Context) -> int:
    args = context.args
    count = _count(args)
    params = {"prompt": args.prompt, **_request_params(args)}
    await anyio.to_thread.run_sync(prepare_out, args.out)
    async with AsyncClient(**context.options, ledger=args.ledger, timeout=args.timeout) as client:
        outcome = await run_generate(
            client,
            model=args.model,
            params=params,
            count=count,
            out=args.out,
            console=context.console,
            interrupts=context.interrupts,
        )
    return 0 if outcome.all_succeeded else 1


async def submit(context: Context) -> int:
    args = context.args
    count = _count(args)
    params = {"prompt": args.prompt, **_request_params(args)}
    # "poll": nothing is waited for, so no event stream is worth opening; the client closes
    # before a first poll is due, and the enqueue is the only request.
    options = {**context.options, "ledger": args.ledger, "timeout": args.timeout}
    async with AsyncClient(**options, completion="poll") as client:
        if count == 1:
            generations = [await client.enqueue(args.model, **params)]
        else:
            generations = await client.enqueue_many(args.model, count, **params)
    for generation in generations:  # plain, one per line: for `xargs oxen-queue wait`
        context.console.out(generation.id)
    return 0


def _finished_line(generation: Generation) -> tuple[str, int]:
    """How a finished generation ended, in one plain line, and its exit status."""
    try:
        record = generation.result()
    except GenerationFailedError as exc:
        return f"{generation.id} failed: {exc.error_message or exc}", 1
    except GenerationCancelledError:
        return f"{generation.id} cancelled", 1
    except OxenError as exc:
        return f"{generation.id} error: {connect_failure(exc) or exc}", 2 if _refused(exc) else 1
    if record.status != "succeeded":  # pragma: no cover - an unknown final status
        return f"{generation.id} {record.status}", 1
    return f"{generation.id} succeeded {record.result_url or ''}".rstrip(), 0


async def wait(context: Context) -> int:
    statuses: list[int] = []
    generation_ids = _generation_ids(context.args)
    async with AsyncClient(**context.options) as client:
        generations = [client.generation(i) for i in generation_ids]
        with context.interrupts.scope() as work:
            async for generation in as_completed(generations):
                line, status = _finished_line(generation)
                context.console.out(line)
                statuses.append(status)
        if work.cancelled_caught:
            left = sum(1 for g in generations if not g.done())
            raise Interrupted(
                f"interrupted: stopped waiting; {plural(left, 'generation')} still running "
                "upstream (stop them with `oxen-queue cancel`)."
            )
    return max(statuses, default=0)


async def download(context: Context) -> int:
    args = context.args
    statuses: list[int] = []
    generation_ids = _generation_ids(args)
    await anyio.to_thread.run_sync(prepare_out, args.out)
    async with AsyncClient(**context.options) as client:
        for generation_id in generation_ids:
            try:
                record = await client.get_generation(generation_id)
                if record.status != "succeeded":
                    hint = "" if record.status in TERMINAL_STATUSES else " yet (`oxen-queue wait`)"
                    context.console.out(f"{generation_id} {record.status}: no result{hint}")
                    statuses.append(1)
                    continue
                path = await client.download(record, into(args.out))
            except OxenError as exc:
                said = connect_failure(exc) or failure_message(exc)
                context.console.out(f"{generation_id} error: {said}")
                statuses.append(2 if _refused(exc) else 1)
                continue
            context.console.out(f"{generation_id} saved {path}")
            statuses.append(0)
    return max(statuses, default=0)


async def _prompts_command(
    context: Context,
    *,
    prompts: str,
    model: str,
    defaults: dict[str, Any],
    retry_failed: bool,
    label: str,
) -> int:
    args, console = context.args, context.console
    if args.concurrency < 1:
        raise CommandError("--concurrency must be at least 1")
    reader = PromptsReader(prompts, prompts_format=getattr(args, "input_format", None))
    if getattr(args, "dry_run", False):
        return await _dry_run(
            context, reader=reader, model=model, defaults=defaults, retry_failed=retry_failed
        )
    metadata: MetadataFormat = getattr(args, "metadata", "jsonl")
    if metadata == "parquet":  # its extra missing: said before anything is read or sent
        await anyio.to_thread.run_sync(import_pyarrow)
    out: Path = args.out
    manifest_path = out / "manifest.jsonl"
    max_spend = getattr(args, "max_spend", None)
    index = RequestIndex()
    read = await anyio.to_thread.run_sync(load_index, manifest_path, index)
    with contextlib.ExitStack() as stack:
        spool: IO[bytes] | None = None
        if reader.is_stdin:  # read twice: the first pass keeps a copy beside the results
            await anyio.to_thread.run_sync(prepare_out, out)
            spool = stack.enter_context(_spool(out))
        judged = await _judge(reader, index, manifest_path, retry_failed=retry_failed, tee=spool)
        if spool is not None:
            spool.seek(0)
            reader = reader.replay(spool)
        await anyio.to_thread.run_sync(prepare_out, out)
        manifest = Manifest(manifest_path, index, read=read)
        stack.callback(manifest.close)
        for warning in manifest.warnings:
            context.errors.print(warning_line(warning))
        if judged.settled or judged.reattached:
            console.print(
                f"Resuming: {judged.settled} already settled, {judged.reattached} reattached by id."
            )
        # The ledger lives beside the manifest: a run killed between sending a request and
        # writing its manifest line leaves the request there, and the next run picks its
        # job up.
        ledger = args.ledger or f"sqlite:///{await anyio.Path(out).resolve()}/ledger.db"
        stopped: WriteFailedError | None = None
        total = judged.requests
        try:
            options = {**context.options, "ledger": ledger, "timeout": args.timeout}
            async with AsyncClient(**options, max_spend=max_spend) as client:
                try:
                    outcome = await run_prompts(
                        client,
                        model=model,
                        reader=reader,
                        defaults=defaults,
                        out=out,
                        manifest=manifest,
                        concurrency=args.concurrency,
                        retry_failed=retry_failed,
                        console=console,
                        interrupts=context.interrupts,
                        title=f"oxen-queue {label} · {model} · {total} prompts → {out}/",
                        to_run=total - judged.settled,
                        max_spend=max_spend,
                        metadata=metadata,
                    )
                except Exception as exc:
                    stopped = failed_write(exc)
                    raise
        except Exception:
            # Closing the client may fail in the wake of the stop (its ledger is on the same
            # full disk): the stop is what to report, with how to resume.
            if stopped is not None:
                raise stopped from None
            raise
    console.print(f"{outcome.saved} of {total} saved in {out}/, manifest {manifest.path}")
    if outcome.unsent:
        console.print(
            f"budget reached (--max-spend {money(Decimal(max_spend or 0))}): "
            f"{plural(outcome.unsent, 'request')} left unsent. Run again with the same --out "
            "(and a larger --max-spend) to send them."
        )
    return 0 if outcome.saved == total else 1


@contextlib.contextmanager
def _spool(out: Path) -> Iterator[IO[bytes]]:
    """A file beside the results holding standard input's bytes, gone when closed."""
    try:
        spool = tempfile.TemporaryFile(dir=out, prefix=".stdin-")  # noqa: SIM115 - below
    except OSError as exc:
        raise OutDirectoryError(f"--out {out}: cannot write in it: {describe(exc)}") from None
    with spool:
        yield spool


@dataclass(slots=True)
class _Judged:
    requests: int = 0
    settled: int = 0
    reattached: int = 0


async def _judge(
    reader: PromptsReader,
    index: RequestIndex,
    manifest_path: Path,
    *,
    retry_failed: bool,
    tee: IO[bytes] | None,
) -> _Judged:
    """The first pass: every line judged before anything is made or sent, and counted.

    Raises:
        CommandError: A line is refused, or the file holds no request.
    """
    judged = _Judged()
    entries = EntryReader(manifest_path)
    try:
        async for planned in requests(
            reader, index, entries.at, retry_failed=retry_failed, tee=tee
        ):
            judged.requests += 1
            if planned.action == "skip":
                judged.settled += 1
            elif planned.action == "reattach":
                judged.reattached += 1
    except PromptsFileError as exc:
        raise CommandError(str(exc)) from None
    finally:
        entries.close()
    if not judged.requests:
        raise CommandError(f"{reader.name} holds no prompts")
    return judged


async def _dry_run(
    context: Context,
    *,
    reader: PromptsReader,
    model: str,
    defaults: dict[str, Any],
    retry_failed: bool,
) -> int:
    """Price what a run would send, and summarise it; send nothing.

    Requests the manifest shows settled or enqueued are not counted (a run would not send
    them). The only requests made are one ``GET /api/ai/models/{id}`` per model (its prices
    and schema): no enqueue, no event stream, and no manifest written. With ``--json``, one
    JSON object per request goes to stdout, and the summary to stderr.
    """
    args = context.args
    manifest_path = args.out / "manifest.jsonl"
    index = RequestIndex()
    read = await anyio.to_thread.run_sync(load_index, manifest_path, index)
    for warning in read.warnings:
        context.errors.print(warning_line(warning))
    max_spend = getattr(args, "max_spend", None)
    tally = DryRun(budget=None if max_spend is None else BudgetCursor(max_spend))
    as_json = getattr(args, "json", False)
    out = context.console.file
    entries = EntryReader(manifest_path)
    try:
        # "poll": nothing is waited for, so nothing (not even the event stream) is opened.
        async with AsyncClient(**context.options, completion="poll") as client:
            pricer = Pricer(client)
            async for planned in requests(reader, index, entries.at, retry_failed=retry_failed):
                line = planned.line
                params = {**defaults, **line.params}
                line_model = line.model or model
                row: dict[str, Any] = {"line": line.number, "model": line_model, "params": params}
                if planned.action != "send":
                    tally.not_sent += 1
                    if as_json:
                        out.write(json_line({**row, "action": planned.action}) + "\n")
                    continue
                rest = parameter_set(params)
                one = await pricer.price(line_model, params, rest)
                fits = tally.add(number=line.number, model=line_model, rest=rest, one=one)
                if as_json:
                    row.update(
                        action="send",
                        estimate=None if one.amount is None else money(one.amount),
                        problem=one.problem,
                        within_budget=fits,
                    )
                    out.write(json_line(row) + "\n")
    except PromptsFileError as exc:
        raise CommandError(str(exc)) from None
    finally:
        entries.close()
    if not tally.requests and not tally.not_sent:
        raise CommandError(f"{reader.name} holds no prompts")
    report = context.errors if as_json else context.console
    report.print(f"oxen-queue batch --dry-run · {plural(tally.requests, 'request')} to send")
    return tally.report(report)


async def batch(context: Context) -> int:
    args = context.args
    return await _prompts_command(
        context,
        prompts=args.prompts,
        model=args.model,
        defaults=_request_params(args),
        retry_failed=args.retry_failed,
        label="batch",
    )


def bundled_prompts() -> str:
    """The demo's prompts: ``examples/prompts.txt``, which the wheel carries as package data."""
    packaged = resources.files("oxen_queue._cli").joinpath("prompts.txt")
    if packaged.is_file():
        return str(packaged)
    return str(Path(__file__).resolve().parents[3] / "examples" / "prompts.txt")


async def demo(context: Context) -> int:
    return await _prompts_command(
        context,
        prompts=context.args.prompts or bundled_prompts(),
        model="gpt-image-2",
        defaults={},
        retry_failed=False,
        label="demo",
    )


async def recover(context: Context) -> int:
    args = context.args
    ledger = args.ledger or os.environ.get("OXEN_LEDGER")
    if not ledger:
        raise CommandError("no ledger: pass --ledger URL or set OXEN_LEDGER")
    options = {**context.options, "ledger": ledger, "timeout": args.timeout}
    async with AsyncClient(**options, completion="poll") as client:
        generations = await client.recover(wait=args.wait)
        for generation in generations:
            record = await client.get_generation(generation.id)
            context.console.out(f"{record.generation_id} {record.status}")
    return 0


async def status(context: Context) -> int:
    args, console = context.args, context.console
    statuses: list[int] = []
    generation_ids = _generation_ids(args)
    async with AsyncClient(**context.options) as client:
        for generation_id in generation_ids:
            try:
                record = await client.get_generation(generation_id)
            except NotFoundError as exc:
                context.errors.print(error_line(exc))
                statuses.append(2)
                continue
            statuses.append(1 if _ended_unsuccessfully(record) else 0)
            if args.json:  # one row per line (JSON Lines), whatever the number of ids
                console.out(json_line(record.model_dump(mode="json")))
            else:
                if len(statuses) > 1:
                    console.print()
                console.print(_row_table(record))
    return max(statuses, default=0)


def _ended_unsuccessfully(record: GenerationRecord) -> bool:
    """Failed or cancelled: a generation that did not succeed and never will."""
    return record.status in TERMINAL_STATUSES and record.status != "succeeded"


def _row_table(record: GenerationRecord) -> Table:
    table = Table(show_header=False, show_edge=False)
    for key, value in record.model_dump().items():  # the row's fields, then the request's
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            table.add_row(key, _when(key, value) or text)
    return table


async def cancel(context: Context) -> int:
    statuses: list[int] = []
    generation_ids = _generation_ids(context.args)
    async with AsyncClient(**context.options) as client:
        for generation_id in generation_ids:
            try:
                await client.cancel(generation_id)
                record = await client.get_generation(generation_id)
            except NotFoundError as exc:
                context.errors.print(error_line(exc))
                statuses.append(2)
                continue
            if record.status == "cancelled":
                context.console.print(f"{record.generation_id}: cancelled")
                statuses.append(0)
            else:
                # "Cancelling a generation that has already reached a terminal state has no
                # effect." It is not running, which is what was asked: exit status 0.
                context.console.print(
                    f"{record.generation_id}: already {record.status}; nothing to cancel"
                )
                statuses.append(0)
    return max(statuses, default=0)


async def models(context: Context) -> int:
    console = context.console
    async with AsyncClient(**context.options) as client:
        if context.args.model_id:
            _show_model(await client.get_model(context.args.model_id), console)
            return 0
        listed = await client.list_models()
    table = Table(show_edge=False, header_style="bold")
    table.add_column("id", overflow="fold")
    for column in ("output", "endpoint", "name"):
        table.add_column(column)
    for model in listed:
        table.add_row(
            model.id, model.media_type or "text", model.endpoint or "", model.display_name or ""
        )
    console.print(table)
    return 0


def _show_model(model: Model, console: Console) -> None:
    console.print(assemble((model.id, "bold"), "  ", model.display_name or ""))
    if model.description:
        console.print(shown(model.description, newlines=True))
    schema = model.parameter_schema or {}
    properties: dict[str, Any] = schema.get("properties") or {}
    if not properties:
        console.print("no parameter schema published")
        return
    required = set(schema.get("required") or ())
    table = Table(show_edge=False, header_style="bold")
    for column in ("parameter", "type", "default", "allowed"):
        table.add_column(column)
    for name, spec in properties.items():
        allowed = ", ".join(map(str, spec.get("enum", ()))) or _range(spec)
        table.add_row(
            f"{name}{' *' if name in required else ''}",
            str(spec.get("type", "")),
            json.dumps(spec["default"]) if "default" in spec else "",
            allowed,
        )
    console.print(table)
    console.print("* required", style="dim")


def _when(key: str, value: object) -> str | None:
    """Unix timestamps of a row, shown readably (UTC)."""
    if key.endswith("_at") and isinstance(value, int):
        try:
            return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):  # a server's nonsense: show it raw
            return None
    return None


def _range(spec: dict[str, Any]) -> str:
    low, high = spec.get("minimum"), spec.get("maximum")
    return f"{low}..{high}" if low is not None or high is not None else ""


Command = Callable[[Context], Awaitable[int]]

COMMANDS: dict[str, Command] = {
    "generate": generate,
    "submit": submit,
    "wait": wait,
    "download": download,
    "batch": batch,
    "demo": demo,
    "status": status,
    "cancel": cancel,
    "models": models,
    "recover": recover,
}
