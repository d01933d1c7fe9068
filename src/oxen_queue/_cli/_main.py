"""Running a parsed command line: the consoles, the emulator, Ctrl-C, and the exit status.

Whatever goes wrong ends in one line on stderr and an exit status (`exit_status`):
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
from typing import Any

import anyio

from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    InvalidParamsError,
    NotFoundError,
    OxenError,
)
from .._transport import aiohttp_installed
from ._commands import COMMANDS, CommandError, Context
from ._connection import connect_failure
from ._files import OutDirectoryError, WriteFailedError, describe
from ._interrupt import Interrupted, Interrupts
from ._parser import UsageError, parse
from ._prompts import PromptsFileError
from ._shared import (
    EMULATOR_KEY,
    IDLE_TIMEOUT,
    Attached,
    MissingExtraError,
    SharedEmulatorError,
    attach,
    require_emulator_extra,
    stop,
)
from ._shown import DataConsole, DataLogHandler, WarningLines, error_line, shown

__all__ = ["exit_status", "main"]

_KEY_HELP = (
    "No API key. Set it in the environment:\n\n"
    "    export OXEN_API_KEY=...   # from https://www.oxen.ai, your profile's API keys\n\n"
    "or try everything offline against a local emulator: add --emulator to each command "
    f"(they share one, which stops after {IDLE_TIMEOUT / 60:g} minutes without a request), "
    "or run `oxen-queue demo`."
)

REFUSED: tuple[type[Exception], ...] = (
    CommandError,
    MissingExtraError,  # the emulator extra, or parquet's: configuration
    PromptsFileError,
    OutDirectoryError,
    InvalidParamsError,
    BadRequestError,  # 400, 422
    AuthenticationError,  # 401, 403
    NotFoundError,  # 404
    ValueError,  # a setting the client refused (InvalidParamsError is one too)
)
"""Bad usage, configuration, or a request the API refused: exit status 2."""

FAILED: tuple[type[Exception], ...] = (OxenError, WriteFailedError, SharedEmulatorError, OSError)
"""The API failed, or this machine did (a file that could not be read or written, a port
that could not be bound, the shared emulator that could not be started): exit status 1."""


def exit_status(error: BaseException) -> int:
    """2 for bad usage, configuration or a refused request (`REFUSED`), 1 for anything
    else that went wrong (`FAILED`, and errors of no expected kind)."""
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


def _hub(args: argparse.Namespace, errors: DataConsole) -> dict[str, Any]:
    """``AsyncClient`` options for the hub the command runs against: the shared emulator
    (``--emulator``, ``demo``: started now, or the one earlier commands started), a
    ``--base-url``, or the environment's."""
    if args.emulator or args.command == "demo":
        attached = attach(args.time_scale)
        errors.print(_attached_line(attached), style="dim")
        return {"base_url": attached.base_url, "api_key": EMULATOR_KEY}
    if args.base_url:
        return {"base_url": args.base_url}
    return {}


def _attached_line(attached: Attached) -> str:
    url, scale = attached.base_url, attached.time_scale
    if attached.started:
        minutes = f"{attached.idle_timeout / 60:g}"
        line = (
            f"started the shared emulator at {url} (time scale {scale:g}): later --emulator "
            f"commands and demo use it too; it stops after {minutes} minutes without a "
            "request, or with `oxen-queue emulator --stop`"
        )
        if attached.before is not None:  # a rerun's ids from then are unknown to this one
            line += f". The one before it {attached.before}: the generations it made are gone"
        return line
    if attached.previous_scale is not None:
        return (
            f"shared emulator at {url}: time scale {scale:g} for the jobs enqueued from now "
            f"on (was {attached.previous_scale:g})"
        )
    return f"shared emulator at {url} (time scale {scale:g})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; return its exit status."""
    try:
        args = parse(argv)
    except UsageError as exc:
        return exc.status
    console, errors = _console(stderr=False), _console(stderr=True)
    try:
        if args.command == "emulator":
            return _serve_emulator(args, console)
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
        message: object = connect_failure(error) or error
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
        options = _hub(args, errors)
        if aiohttp_installed():
            # An application may choose for itself: the cli extra brings aiohttp, whose pool
            # costs about half the CPU per request (batches of thousands show it).
            options["http_backend"] = "aiohttp"
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


def _serve_emulator(args: argparse.Namespace, console: DataConsole) -> int:
    """``emulator``: serve one in the foreground, or (``--stop``) stop the shared one."""
    if args.stop:
        record = stop()
        if record is None:
            console.print("no shared emulator is running")
        else:
            console.print(f"stopped the shared emulator at {record.base_url} (pid {record.pid})")
        return 0
    require_emulator_extra()
    from ..testing import EmulatorConfig, run_server

    time_scale = 1.0 if args.time_scale is None else args.time_scale
    # uvicorn handles Ctrl-C itself and returns; a second Ctrl-C may still raise.
    with contextlib.suppress(KeyboardInterrupt):
        run_server(
            host="127.0.0.1" if args.host is None else args.host,
            port=8000 if args.port is None else args.port,
            api_key=args.api_key,
            config=EmulatorConfig(time_scale=time_scale),
            access_log=args.verbose,
        )
    return 0
