"""Running a parsed command line: the consoles, the emulator, Ctrl-C, and the exit status."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.logging import RichHandler

from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    InvalidParamsError,
    NotFoundError,
    OxenError,
)
from .._transport import aiohttp_installed
from ._commands import COMMANDS, CommandError, Context
from ._interrupt import Interrupted, Interrupts
from ._parser import UsageError, parse

if TYPE_CHECKING:
    from ..testing import Emulator

__all__ = ["exit_status", "main"]

_KEY_HELP = (
    "No API key. Set it in the environment:\n\n"
    "    export OXEN_API_KEY=...   # from https://www.oxen.ai, your profile's API keys\n\n"
    "or try everything offline against the embedded emulator: add --emulator, "
    "or run `oxen-queue demo`."
)

REFUSED: tuple[type[Exception], ...] = (
    CommandError,
    InvalidParamsError,
    BadRequestError,  # 400, 422
    AuthenticationError,  # 401, 403
    NotFoundError,  # 404
    ValueError,
)
"""Bad usage, configuration, or a request the API refused: exit status 2."""


def exit_status(error: BaseException) -> int:
    """2 for bad usage or a refused request, 1 for anything else that went wrong."""
    return 2 if isinstance(error, REFUSED) else 1


@contextlib.contextmanager
def _verbose_logging(verbose: bool, console: Console) -> Iterator[None]:
    """With -v: our debug logs and httpx's request lines on stderr, for this command only."""
    if not verbose:
        yield
        return
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    levels = {"oxen_queue": logging.DEBUG, "httpx": logging.INFO}
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(level)


def _console(*, stderr: bool) -> Console:
    # Piped into a file or a CI log: no wrapping at 80 columns, so paths stay whole.
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=160, soft_wrap=True)
    return console


def _embedded_emulator(args: argparse.Namespace) -> AbstractContextManager[Emulator | None]:
    if not (args.emulator or args.command == "demo"):
        return nullcontext()
    try:
        from ..testing import Emulator, EmulatorConfig
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CommandError(
            f"the emulator needs its extra: pip install 'oxen-queue[emulator]' ({exc.name} missing)"
        ) from None
    return Emulator(config=EmulatorConfig(time_scale=args.time_scale))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; return its exit status."""
    try:
        args = parse(argv)
    except UsageError as exc:
        return exc.status
    console, errors = _console(stderr=False), _console(stderr=True)
    if args.command == "emulator":
        return _serve_emulator(args)
    with _verbose_logging(args.verbose, errors), _sigint_restored():
        return _run(args, console, errors)


def _run(args: argparse.Namespace, console: Console, errors: Console) -> int:
    try:
        with _embedded_emulator(args) as emulator:
            options: dict[str, Any] = {}
            if emulator is not None:
                options = {"base_url": emulator.base_url, "api_key": "emulator"}
                errors.print(f"[dim]embedded emulator at {emulator.base_url}[/]")
            elif args.base_url:
                options["base_url"] = args.base_url
            if aiohttp_installed():
                # An application may choose for itself: the cli extra brings aiohttp, whose
                # pool costs about half the CPU per request (batches of thousands show it).
                options["http_backend"] = "aiohttp"
            if "api_key" not in options and not os.environ.get("OXEN_API_KEY", "").strip():
                errors.print(_KEY_HELP)
                return 2
            context = Context(args, options, console, errors, Interrupts())
            try:
                return anyio.run(_command, context)
            except Interrupted as exc:
                _ignore_sigint()  # the line below is the only one: a second Ctrl-C is moot
                errors.print(str(exc), markup=False)
                return 130
    except KeyboardInterrupt:  # outside the command's event loop, or no signals there
        _ignore_sigint()
        errors.print("interrupted.")
        return 130
    except OxenError as exc:
        errors.print(f"[red]error:[/] {exc}")
        return exit_status(exc)
    except REFUSED as exc:
        errors.print(f"[red]error:[/] {exc}")
        return 2


async def _command(context: Context) -> int:
    """Run the command, with Ctrl-C delivered as a cancellation when the platform allows."""
    command = COMMANDS[context.args.command]
    interrupts = context.interrupts
    if not interrupts.supported():
        return await command(context)
    outcome: list[int | Exception] = []
    root = anyio.CancelScope()
    async with anyio.create_task_group() as task_group:
        await task_group.start(interrupts.listen, root)
        with root:
            try:
                outcome.append(await command(context))
            except Exception as exc:  # raised below, outside the task group's wrapping
                outcome.append(_unwrap(exc))
        task_group.cancel_scope.cancel()
    if not outcome:
        raise Interrupted("interrupted.")
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return result


def _unwrap(error: Exception) -> Exception:
    """A task group's group of one error, as that error (what the user should read)."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigint_restored() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGINT) if _main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _ignore_sigint() -> None:
    """After the one line about an interrupt, further Ctrl-Cs only stop the emulator sooner."""
    if _main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _serve_emulator(args: argparse.Namespace) -> int:
    from ..testing import EmulatorConfig, run_server

    # uvicorn handles Ctrl-C itself and returns; a second Ctrl-C may still raise.
    with contextlib.suppress(KeyboardInterrupt):
        run_server(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            config=EmulatorConfig(time_scale=args.time_scale),
            access_log=args.verbose,
        )
    return 0
