"""The ``oxen-queue`` console script: a thin layer over the public API.

Commands: ``generate``, ``batch``, ``status``, ``cancel``, ``models``, ``demo`` (the offline
tour, on the embedded emulator) and ``emulator`` (serve the emulator). Every command but
``emulator`` takes ``--emulator`` to run against an embedded emulator instead of the hub.
Exit status: 0 when everything asked for succeeded, 1 when a generation did not (or the API
failed), 2 for bad usage, configuration or a request the API refused, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.logging import RichHandler

from .._exceptions import BadRequestError, InvalidParamsError, OxenError
from .._version import __version__
from ._commands import COMMANDS, CommandError

if TYPE_CHECKING:
    from ..testing import Emulator

__all__ = ["main"]

_KEY_HELP = (
    "No API key. Set it in the environment:\n\n"
    "    export OXEN_API_KEY=...   # from https://www.oxen.ai, your profile's API keys\n\n"
    "or try everything offline against the embedded emulator: add --emulator, "
    "or run `oxen-queue demo`."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oxen-queue",
        description="Generate images and videos with Oxen.ai's async queue.",
    )
    parser.add_argument("--version", action="version", version=f"oxen-queue {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    common.add_argument(
        "--base-url", help="the hub (default: $OXEN_BASE_URL or https://hub.oxen.ai)"
    )
    common.add_argument(
        "--emulator", action="store_true", help="run against an embedded local emulator"
    )
    common.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="with --emulator: multiply job durations (0.1 runs ten times faster)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def params(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", default="gpt-image-2", help="model id (default gpt-image-2)")
        sub.add_argument("--resolution", help="e.g. 1920x1080 (gpt-image-2)")
        sub.add_argument("--quality", help="auto, low, medium or high (gpt-image-2)")
        sub.add_argument("--format", dest="output_format", help="png, jpeg or webp (gpt-image-2)")

    generate = commands.add_parser(
        "generate", parents=[common], help="generate from one prompt and save the result"
    )
    generate.add_argument("prompt")
    params(generate)
    generate.add_argument("-n", type=int, default=1, help="generations (num_generations)")
    generate.add_argument("--out", type=Path, default=Path("."), help="directory for the files")

    batch = commands.add_parser(
        "batch", parents=[common], help="run a prompts file; resumable with the same --out"
    )
    batch.add_argument("prompts", type=Path, help="one prompt per line, or JSON objects")
    params(batch)
    batch.add_argument("--concurrency", type=int, default=16, help="generations in flight")
    batch.add_argument("--out", type=Path, default=Path("oxen-output"), help="output directory")
    batch.add_argument(
        "--retry-failed", action="store_true", help="enqueue anew what failed in an earlier run"
    )

    status = commands.add_parser("status", parents=[common], help="show a generation's row")
    status.add_argument("generation_id")
    status.add_argument("--json", action="store_true", help="print the raw row as JSON")

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a generation")
    cancel.add_argument("generation_id")

    models = commands.add_parser("models", parents=[common], help="list models, or show one")
    models.add_argument("model_id", nargs="?")

    demo = commands.add_parser(
        "demo", parents=[common], help="the offline tour: a batch on the embedded emulator"
    )
    demo.add_argument("--out", type=Path, default=Path("oxen-demo"), help="output directory")
    demo.add_argument("--concurrency", type=int, default=16, help="generations in flight")
    demo.add_argument("--prompts", type=Path, help="a prompts file (default: the bundled one)")

    emulator = commands.add_parser("emulator", help="serve the local emulator of the Oxen API")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8000)
    emulator.add_argument("--api-key", help="the only key accepted (default: any)")
    emulator.add_argument("--time-scale", type=float, default=1.0, help="job duration factor")
    emulator.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


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
    args = _parser().parse_args(argv)
    console, errors = _console(stderr=False), _console(stderr=True)
    if args.command == "emulator":
        return _serve_emulator(args)
    with _verbose_logging(args.verbose, errors):
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
            if "api_key" not in options and not os.environ.get("OXEN_API_KEY", "").strip():
                errors.print(_KEY_HELP)
                return 2
            return anyio.run(COMMANDS[args.command], args, options, console)
    except KeyboardInterrupt:
        hint = (
            " It resumes where it stopped: run it again with the same --out."
            if args.command in ("batch", "demo")
            else ""
        )
        errors.print(f"\ninterrupted.{hint}")
        return 130
    except (CommandError, InvalidParamsError, BadRequestError, ValueError) as exc:
        errors.print(f"[red]error:[/] {exc}")
        return 2
    except OxenError as exc:
        errors.print(f"[red]error:[/] {exc}")
        return 1


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
