"""The commands of the console script. Each takes the parsed arguments, the client options and
the console, and returns the exit status."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from rich.table import Table

from .._client import AsyncClient
from ._manifest import Manifest, PromptsFileError, read_prompts
from ._run import run_generate, run_prompts

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

    from .._models import Model

__all__ = ["COMMANDS", "CommandError", "bundled_prompts"]


class CommandError(Exception):
    """Bad usage or configuration, reported in one line with exit status 2."""


def _request_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("resolution", "quality", "output_format")
    return {name: getattr(args, name) for name in names if getattr(args, name, None)}


async def generate(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    if args.n < 1:
        raise CommandError("-n must be at least 1")
    params = {"prompt": args.prompt, **_request_params(args)}
    await anyio.Path(args.out).mkdir(parents=True, exist_ok=True)
    async with AsyncClient(**options) as client:
        outcome = await run_generate(
            client, model=args.model, params=params, count=args.n, out=args.out, console=console
        )
    return 0 if outcome.all_succeeded else 1


async def _prompts_command(
    args: argparse.Namespace,
    options: dict[str, Any],
    console: Console,
    *,
    prompts: Path,
    model: str,
    defaults: dict[str, Any],
    retry_failed: bool,
    label: str,
) -> int:
    if args.concurrency < 1:
        raise CommandError("--concurrency must be at least 1")
    try:
        lines = read_prompts(prompts)
    except (OSError, PromptsFileError) as exc:
        raise CommandError(str(exc)) from None
    if not lines:
        raise CommandError(f"{prompts} holds no prompts")
    manifest = Manifest(args.out / "manifest.jsonl")
    try:
        async with AsyncClient(**options) as client:
            outcome = await run_prompts(
                client,
                model=model,
                lines=lines,
                defaults=defaults,
                out=args.out,
                manifest=manifest,
                concurrency=args.concurrency,
                retry_failed=retry_failed,
                console=console,
                title=f"oxen-queue {label} · {model} · {len(lines)} prompts → {args.out}/",
            )
    finally:
        manifest.close()
    saved = len(outcome.files)
    console.print(f"{saved} of {len(lines)} saved in {args.out}/, manifest {manifest.path}")
    return 0 if outcome.all_succeeded else 1


async def batch(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    return await _prompts_command(
        args,
        options,
        console,
        prompts=args.prompts,
        model=args.model,
        defaults=_request_params(args),
        retry_failed=args.retry_failed,
        label="batch",
    )


def bundled_prompts() -> Path:
    """The demo's prompts: ``examples/prompts.txt``, which the wheel carries as package data."""
    packaged = resources.files("oxen_queue._cli").joinpath("prompts.txt")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "examples" / "prompts.txt"


async def demo(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    return await _prompts_command(
        args,
        options,
        console,
        prompts=args.prompts or bundled_prompts(),
        model="gpt-image-2",
        defaults={},
        retry_failed=False,
        label="demo",
    )


async def status(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    async with AsyncClient(**options) as client:
        record = await client.get_generation(args.generation_id)
    if args.json:
        console.print_json(record.model_dump_json())
        return 0
    table = Table(show_header=False, show_edge=False)
    for key, value in record.model_dump().items():  # the row's fields, then the request's
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            table.add_row(key, _when(key, value) or text)
    console.print(table)
    return 0 if record.status != "failed" else 1


async def cancel(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    async with AsyncClient(**options) as client:
        await client.cancel(args.generation_id)
        record = await client.get_generation(args.generation_id)
    if record.status == "cancelled":
        console.print(f"{record.generation_id}: cancelled")
        return 0
    # "Cancelling a generation that has already reached a terminal state has no effect."
    console.print(f"{record.generation_id}: already {record.status}; nothing to cancel")
    return 1


async def models(args: argparse.Namespace, options: dict[str, Any], console: Console) -> int:
    async with AsyncClient(**options) as client:
        if args.model_id:
            _show_model(await client.get_model(args.model_id), console)
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
    console.print(f"[bold]{model.id}[/]  {model.display_name or ''}")
    if model.description:
        console.print(model.description)
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
    console.print("[dim]* required[/]")


def _when(key: str, value: object) -> str | None:
    """Unix timestamps of a row, shown readably (UTC)."""
    if key.endswith("_at") and isinstance(value, int):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return None


def _range(spec: dict[str, Any]) -> str:
    low, high = spec.get("minimum"), spec.get("maximum")
    return f"{low}..{high}" if low is not None or high is not None else ""


Command = Callable[["argparse.Namespace", dict[str, Any], "Console"], Awaitable[int]]

COMMANDS: dict[str, Command] = {
    "generate": generate,
    "batch": batch,
    "demo": demo,
    "status": status,
    "cancel": cancel,
    "models": models,
}
