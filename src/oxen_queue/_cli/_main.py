"""Running a parsed command line: the consoles, the emulator, Ctrl-C, and the exit status.

Whatever goes wrong ends in one line on stderr and an exit status (:func:`exit_status`):
bad input, a bad server and a failing file system alike, never a traceback. Only an error
no code path expects (a bug) may print its traceback, and only with ``-v``; without it, the
line names the error and says ``-v`` shows more.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import anyio

from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    InvalidParamsError,
    NotFoundError,
    OxenError,
)
from ._commands import COMMANDS, CommandError, Context
from ._files import OutDirectoryError, WriteFailedError, describe
from ._interrupt import Interrupted, Interrupts
from ._parser import UsageError, parse
from ._prompts import PromptsFileError
from ._shown import DataConsole, DataLogHandler, WarningLines, error_line, shown

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
    PromptsFileError,
    OutDirectoryError,
    InvalidParamsError,
    BadRequestError,  # 400, 422
    AuthenticationError,  # 401, 403
    NotFoundError,  # 404
    ValueError,  # a setting the client refused (InvalidParamsError is one too)
)
"""Bad usage, configuration, or a request the API refused: exit status 2."""

FAILED: tuple[type[Exception], ...] = (OxenError, WriteFailedError, OSError)
"""The API failed, or this machine did (a file that could not be read or written, a port
that could not be bound): exit status 1."""


def exit_status(error: BaseException) -> int:
    """2 for bad usage, configuration or a refused request (:data:`REFUSED`), 1 for anything
    else that went wrong (:data:`FAILED`, and errors of no expected kind)."""
    return 2 if isinstance(error, REFUSED) else 1


@contextlib.contextmanager
def _logging(verbose: bool, console: DataConsole) -> Iterator[None]:
    """The library's log on stderr, for this command only, shown as data.

    With -v: our debug logs and httpx's request lines, tracebacks included. Without: only
    warnings and errors, one ``warning:`` line each, no traceback (Python's last-resort
    handler would print them raw, tracebacks and all).
    """
    handler: logging.Handler
    if verbose:
        handler = DataLogHandler(console=console, show_path=False, rich_tracebacks=False)
        levels = {"oxen_queue": logging.DEBUG, "httpx": logging.INFO}
    else:
        handler = WarningLines(console)
        levels = {"oxen_queue": logging.getLogger("oxen_queue").level}  # as it is
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


def _console(*, stderr: bool) -> DataConsole:
    # Piped into a file or a CI log: no wrapping at 80 columns, so paths stay whole.
    console = DataConsole(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = DataConsole(stderr=stderr, highlight=False, width=160, soft_wrap=True)
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
    try:
        if args.command == "emulator":
            return _serve_emulator(args)
        with _logging(args.verbose, errors), _sigint_restored():
            return _run(args, console, errors)
    except Exception as exc:  # the last resort: whatever escaped, still one line
        return report(exc, errors, verbose=args.verbose)


def report(error: BaseException, errors: DataConsole, *, verbose: bool) -> int:
    """Print the one line an error ends the command with; return its exit status.

    A group of errors (from a task group) is reported by its first: the one that stopped the
    work, the others being its echoes. An error of an unexpected kind prints its traceback
    with ``-v``, one line naming it otherwise.
    """
    error = _first(error)
    if isinstance(error, REFUSED + FAILED):
        message: object = error
        if isinstance(error, OSError) and not isinstance(error, OxenError):
            message = describe(error)  # in words (our timeout errors are OSErrors, and say so)
        errors.print(error_line(message))
        return exit_status(error)
    if verbose:
        errors.print(shown("".join(traceback.format_exception(error)), newlines=True))
    else:
        summary = f"{type(error).__name__}: {error}"
        errors.print(error_line(f"unexpected {summary} (-v shows the traceback)"))
    return 1


def _first(error: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group, or the error itself."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _run(args: argparse.Namespace, console: DataConsole, errors: DataConsole) -> int:
    try:
        with _embedded_emulator(args) as emulator:
            options: dict[str, Any] = {}
            if emulator is not None:
                options = {"base_url": emulator.base_url, "api_key": "emulator"}
                errors.print(f"embedded emulator at {emulator.base_url}", style="dim")
            elif args.base_url:
                options["base_url"] = args.base_url
            if "api_key" not in options and not os.environ.get("OXEN_API_KEY", "").strip():
                errors.print(_KEY_HELP)
                return 2
            context = Context(args, options, console, errors, Interrupts())
            try:
                return anyio.run(_command, context)
            except Interrupted as exc:
                _ignore_sigint()  # the line below is the only one: a second Ctrl-C is moot
                errors.print(exc)
                return 130
    except KeyboardInterrupt:  # outside the command's event loop, or no signals there
        _ignore_sigint()
        errors.print("interrupted.")
        return 130
    except Exception as exc:
        return report(exc, errors, verbose=args.verbose)


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
