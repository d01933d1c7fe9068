"""The command line's grammar (argparse only: importing it needs no extra).

The global options (``-v``, ``--base-url``, ``--emulator``, ``--time-scale``) are accepted
before or after the command: the main parser holds their defaults, and each command's parser
repeats them with ``SUPPRESS`` defaults, so a value given after the command overrides one given
before it and an absent one overrides nothing. Options a command would ignore are refused
(`parse`), never silently dropped.

A command or option that does not exist is refused in one line, with the nearest one that
does when there is one (``unknown option --verbse; did you mean --verbose?``): difflib over
the command names and the option strings of the command's parser, which each parser
remembers as they are added (`_Parser`).
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, NoReturn

from .._durations import seconds
from .._exceptions import InvalidParamsError
from .._money import AmountError, amount
from .._version import __version__
from ._dataset import METADATA_FORMATS, PARQUET_EXTRA_HINT
from ._prompts import FORMATS

__all__ = ["EXIT_STATUSES", "UsageError", "parse"]

EXIT_STATUSES: Final = (
    "exit status: 0 everything asked for succeeded; 1 a generation did not succeed, the API "
    "failed, or this machine did (a file that could not be written mid-run, on a full or "
    "read-only disk: mend it and run the same command again, which resumes without sending "
    "anything twice); 2 bad usage or configuration (a prompts file that cannot be read as "
    "text, an --out that is not a writable directory), or a request the API refused (400, "
    "401, 403, 404, 422); 130 interrupted (Ctrl-C). Whatever goes wrong is said in one line "
    "on stderr; -v adds a traceback only to an error of a kind no code path expects."
)

_EMULATOR_COMMANDS: Final = ("demo", "emulator")  # they always run an emulator of their own


class UsageError(Exception):
    """The command line cannot be run as given; argparse has printed why (exit 2)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse's parser, remembering the option strings added to it (for did-you-mean).

    A command's parser is one too: ``add_subparsers`` makes parsers of its parent's class.
    """

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add an argument, as argparse does, and remember its option strings."""
        action = super().add_argument(*args, **kwargs)
        self.remember(action)
        return action

    def remember(self, action: argparse.Action) -> None:
        """Remember the option strings of an action added through a group."""
        # Through __dict__: argparse adds -h/--help from __init__, before any attribute of
        # ours could be set.
        self.__dict__.setdefault("option_names", []).extend(action.option_strings)

    @property
    def option_names(self) -> list[str]:
        """Every option string this parser accepts."""
        names: list[str] = self.__dict__.setdefault("option_names", [])
        return names


class _Unparsable(Exception):
    """The quick look for the command could not read the command line."""


class _Quiet(argparse.ArgumentParser):
    """A parser that raises instead of printing and exiting (for a first look only)."""

    def error(self, message: str) -> NoReturn:
        """Raise `_Unparsable`."""
        raise _Unparsable(message)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where there is a default worth stating (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes, with their defaults (or SUPPRESS, after a command)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options (before or after the command)")
    verbose = group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="debug logs on stderr (never the key)",
    )
    base_url = group.add_argument(
        "--base-url",
        default=default(None),
        metavar="URL",
        help="the hub (default: $OXEN_BASE_URL, else https://hub.oxen.ai)",
    )
    emulator = group.add_argument(
        "--emulator",
        action="store_true",
        default=default(False),
        help="run against the shared local emulator instead of the hub (no key needed): the "
        "first such command (or demo) starts it in the background and later ones use it, so "
        "what one enqueues the next finds; it stops after 15 minutes without a request, or "
        "with `oxen-queue emulator --stop`",
    )
    time_scale = group.add_argument(
        "--time-scale",
        type=_scale,
        default=default(None),
        metavar="X",
        help="an emulator's job durations times X; 0.1 runs ten times faster (default: 1.0). "
        "On the shared emulator it applies to the jobs enqueued from then on, by any "
        "command, until another --time-scale",
    )
    if isinstance(parser, _Parser):
        for action in (verbose, base_url, emulator, time_scale):
            parser.remember(action)


def _amount(text: str) -> Decimal:
    """An amount of money on the command line, as `oxen_queue._money.amount` reads it:
    a plain decimal from 0 to 10**12 with at most 18 decimal places (argparse makes a refusal
    a one-line usage error, exit status 2)."""
    try:
        return amount(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(
            f"not an amount from 0 to 10**12 with at most 18 decimal places: {exc}"
        ) from None


def _scale(text: str) -> float:
    """A time scale on the command line: a finite number, zero or more."""
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number, zero or more: {text!r}")
    return scale


def _seconds(field: str, *, zero: bool = False) -> Callable[[str], float]:
    """The argparse type of a duration option: a finite number of seconds above zero (or zero
    too, when ``zero``), judged by the duration owner."""
    bound = ", zero or more" if zero else " above zero"

    def parse(text: str) -> float:
        try:
            return seconds(float(text), field=field, zero=zero)
        except (ValueError, InvalidParamsError):
            raise argparse.ArgumentTypeError(
                f"must be a finite number of seconds{bound}: {text!r}"
            ) from None

    return parse


def _directory(text: str) -> Path:
    """An output directory on the command line: any path but an empty one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory (. for this one)")
    return Path(text)


def _port(text: str) -> int:
    """A TCP port on the command line: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {text!r}")
    return port


def _request_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="gpt-image-2", help="model id")
    parser.add_argument(
        "--resolution", help="e.g. 1024x1024 (default: the model's; 1920x1080 for gpt-image-2)"
    )
    parser.add_argument("--quality", help="auto, low, medium or high (gpt-image-2)")
    parser.add_argument("--format", dest="output_format", help="png, jpeg or webp (gpt-image-2)")


def _ledger_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="the enqueue ledger, written before each request so a lost answer or a crash "
        "never loses a billed job: sqlite:///path/ledger.db or postgresql://... "
        f"(default: {default})",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds("--timeout"),
        default=30.0,
        metavar="SECONDS",
        help="seconds for each request, connect to last byte",
    )


def build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The main parser, and each command's parser by name."""
    parser = _Parser(
        prog="oxen-queue",
        description="Generate images and videos with Oxen.ai's async queue.",
        epilog=EXIT_STATUSES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"oxen-queue {__version__}")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description or summary,
            epilog=EXIT_STATUSES,
            formatter_class=_Formatter,
        )
        _global_options(sub, suppress=True)
        subparsers[name] = sub
        return sub

    generate = command(
        "generate",
        "generate from one prompt, wait, and save the results",
        "Generate from one prompt, wait, and save each result in --out. Ctrl-C cancels the "
        "generations upstream (nobody will collect them) and exits 130.",
    )
    generate.add_argument("prompt")
    _request_options(generate)
    generate.add_argument("-n", type=int, default=1, help="generations (num_generations)")
    generate.add_argument(
        "--out", type=_directory, default=Path("."), help="directory for the files"
    )
    _ledger_option(generate, "$OXEN_LEDGER, else this process's memory")

    submit = command(
        "submit",
        "enqueue and print the generation ids, without waiting",
        "Enqueue one request and print its generation ids, one per line, without waiting. "
        "Follow them with `status`, `wait` and `download`.",
    )
    submit.add_argument("prompt")
    _request_options(submit)
    submit.add_argument("-n", type=int, default=1, help="generations (num_generations)")
    _ledger_option(submit, "$OXEN_LEDGER, else this process's memory")

    wait = command(
        "wait",
        "wait for generations; one line each as it finishes",
        "Wait for generations by id and print one line each as it finishes: the id, its "
        "status, and its result URL or error. Ctrl-C stops waiting; the generations carry on "
        "upstream (stop them with `cancel`).",
    )
    wait.add_argument("generation_ids", nargs="+", metavar="ID")

    download = command(
        "download",
        "save finished generations' results",
        "Save the result of each finished generation in --out, named after its id.",
    )
    download.add_argument("generation_ids", nargs="+", metavar="ID")
    download.add_argument(
        "--out", type=_directory, default=Path("."), help="directory for the files"
    )

    batch = command(
        "batch",
        "run a prompts file; resumable with the same --out",
        "Run a prompts file (one prompt per line or JSON objects of parameters; JSON Lines; "
        "CSV with a prompt column; - for standard input), read as a stream, saving the results, "
        "OUT/manifest.jsonl, and the dataset: OUT/metadata.jsonl (Hugging Face ImageFolder; "
        "metadata.parquet with --metadata parquet) and OUT/not_generated.jsonl. Ctrl-C leaves "
        "the enqueued generations running upstream: run the same command again with the same "
        "--out to resume, reattaching them by id without enqueueing anything twice. --dry-run "
        "prints what the run would cost, per model and parameter set, from the models' "
        "published prices, and sends nothing; --max-spend stops enqueueing before the run's "
        "estimated cost passes the amount, and a later run with the same --out sends what was "
        "left.",
    )
    batch.add_argument(
        "prompts",
        help="the prompts file: one prompt per line, JSON objects, JSON Lines or CSV; "
        "- reads standard input",
    )
    batch.add_argument(
        "--input-format",
        choices=FORMATS,
        help="how to read the prompts file (default: csv for .csv, jsonl for .jsonl and "
        ".ndjson, else text: plain prompts, JSON objects and # comments)",
    )
    _request_options(batch)
    batch.add_argument("--concurrency", type=int, default=16, help="generations in flight")
    batch.add_argument(
        "--out", type=_directory, default=Path("oxen-output"), help="output directory"
    )
    batch.add_argument(
        "--metadata",
        choices=METADATA_FORMATS,
        default="jsonl",
        help="the dataset's metadata file: OUT/metadata.jsonl, or OUT/metadata.parquet "
        f"(needs pyarrow: {PARQUET_EXTRA_HINT})",
    )
    _ledger_option(batch, "OUT/ledger.db, beside the manifest")
    batch.add_argument(
        "--retry-failed", action="store_true", help="enqueue anew what failed in an earlier run"
    )
    batch.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the run would cost, per model and parameter set, and the total; "
        "send nothing",
    )
    batch.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run: one JSON object per request on stdout (the summary on stderr)",
    )
    batch.add_argument(
        "--max-spend",
        type=_amount,
        metavar="AMOUNT",
        help="stop enqueueing before this run commits more than AMOUNT (estimated, then "
        "charged); what is left stays unsent for a later run",
    )

    status = command(
        "status",
        "show generations' rows",
        "Show each generation's row. Exit status 1 when one has failed or was cancelled (one "
        "still queued or processing has not failed yet), 2 for an id the hub does not know.",
    )
    status.add_argument("generation_ids", nargs="+", metavar="ID")
    status.add_argument("--json", action="store_true", help="one JSON row per line")

    cancel = command(
        "cancel",
        "cancel generations",
        "Cancel generations upstream. One that had already finished stays as it was and "
        "counts as done: it is not running, which is what was asked (exit status 0); an id "
        "the hub does not know exits 2.",
    )
    cancel.add_argument("generation_ids", nargs="+", metavar="ID")

    models = command("models", "list models, or show one's parameters")
    models.add_argument("model_id", nargs="?")

    demo = command(
        "demo",
        "the offline tour: a batch on the shared local emulator",
        "Run a prompts file through `batch` on the shared local emulator (the one --emulator "
        "commands use, started if none runs): no key, no hub. Resumable like `batch`.",
    )
    demo.add_argument("--out", type=_directory, default=Path("oxen-demo"), help="output directory")
    demo.add_argument("--concurrency", type=int, default=16, help="generations in flight")
    demo.add_argument("--prompts", help="a prompts file (default: the bundled one)")
    _ledger_option(demo, "OUT/ledger.db, beside the manifest")

    recover = command(
        "recover",
        "pick up the unfinished jobs a crashed client left in a ledger",
        "Take over the unfinished jobs of clients that are gone (a crashed process's), from "
        "a shared enqueue ledger, and print one line each: its id and status. Requests whose "
        "answer never arrived are first settled against the server, once they can no longer "
        "land. Follow the ids with `wait` and `download`.",
    )
    _ledger_option(recover, "$OXEN_LEDGER")
    recover.add_argument(
        "--wait",
        type=_seconds("--wait", zero=True),
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for requests of gone clients that may still land",
    )

    emulator = command(
        "emulator",
        "serve the local emulator of the Oxen API, or stop the shared one",
        "Serve the local emulator of the Oxen API until Ctrl-C; or, with --stop, stop the "
        "shared emulator that --emulator commands and demo started (its jobs and files go "
        "with it).",
    )
    # Defaults of None, stated in the help: --stop refuses them only when given.
    emulator.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    emulator.add_argument("--port", type=_port, help="port to listen on (default: 8000)")
    emulator.add_argument("--api-key", help="the only key accepted (default: any key)")
    emulator.add_argument(
        "--stop",
        action="store_true",
        help="stop the shared emulator of --emulator and demo instead of serving one",
    )
    return parser, subparsers


def _refusal(args: argparse.Namespace) -> str | None:
    """Why the options given do not fit the command, or ``None``."""
    if args.command == "emulator" and args.stop:
        given = {
            "--host": args.host,
            "--port": args.port,
            "--api-key": args.api_key,
            "--time-scale": args.time_scale,
        }
        for option, value in given.items():
            if value is not None:
                return f"{option} does not apply to --stop"
    if args.command == "demo" and args.base_url:
        return "--base-url does not apply: demo always runs on the shared emulator"
    if args.command == "emulator" and (args.base_url or args.emulator):
        option = "--base-url" if args.base_url else "--emulator"
        return f"{option} does not apply: the emulator command serves an emulator"
    if args.base_url and args.emulator:
        return "--base-url and --emulator exclude each other"
    if args.time_scale is not None and not args.emulator and args.command not in _EMULATOR_COMMANDS:
        return "--time-scale applies only to an emulator: add --emulator"
    if args.command == "batch" and args.json and not args.dry_run:
        return "--json applies only to --dry-run"
    return None


def _command_given(argv: list[str]) -> str | None:
    """The command word of a command line (its first argument that is not a global option
    or an option's value), or ``None`` when there is none or the line cannot be read."""
    quick = _Quiet(add_help=False)
    _global_options(quick, suppress=False)
    quick.add_argument("command", nargs="?")
    try:
        known, _ = quick.parse_known_args(argv)
    except (_Unparsable, argparse.ArgumentError):
        return None
    command = known.command
    return command if isinstance(command, str) else None


def _nearest(word: str, choices: list[str]) -> str:
    """``; did you mean X?`` for the choice nearest ``word``, or nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown(extras: list[str], parser: _Parser) -> str:
    """One line about the first of the arguments argparse could not place."""
    see = f"(`{parser.prog} --help` lists what it takes)"
    for extra in extras:
        if extra.startswith("-") and extra != "-":
            option = extra.split("=", 1)[0]
            return f"unknown option {option}{_nearest(option, parser.option_names)} {see}"
    return f"unexpected argument {extras[0]!r} {see}"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a command line; refuse options the command would ignore.

    An unknown command or option is refused in one line, naming the nearest one that exists.

    Raises:
        UsageError: Bad usage (status 2), or ``--help``/``--version`` printed (status 0).
    """
    parser, subparsers = build()
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        command = _command_given(arguments)
        if command is not None and command not in subparsers:
            nearest = _nearest(command, list(subparsers))
            parser.exit(
                2,
                f"{parser.prog}: error: unknown command {command!r}{nearest} "
                f"(`{parser.prog} --help` lists the commands)\n",
            )
        args, extras = parser.parse_known_args(arguments)
        if extras:
            sub = subparsers[args.command]
            assert isinstance(sub, _Parser)
            parser.exit(2, f"{sub.prog}: error: {_unknown(extras, sub)}\n")
        refusal = _refusal(args)
        if refusal is not None:
            subparsers[args.command].error(refusal)
    except SystemExit as exc:  # argparse's way to stop, after printing
        raise UsageError(exc.code if isinstance(exc.code, int) else 2) from None
    return args
