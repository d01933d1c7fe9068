"""The command line's grammar and exit statuses: global options anywhere, defaults in --help,
ignored options refused, every refused request exiting 2, and the ``cli`` extra."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from oxen_queue import AsyncClient, RetryPolicy
from oxen_queue.testing import Emulator

from .support import run


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "models"],
        ["models", "-v"],
        ["--base-url", "{url}", "models"],
        ["models", "--base-url", "{url}"],
        ["-v", "--base-url", "{url}", "models", "gpt-image-2"],
    ],
    ids=" ".join,
)
def test_global_options_work_before_or_after_the_command(
    oxen_emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    """``-v`` and ``--base-url`` are accepted on either side of the command, and take effect:
    the hub named by --base-url is the one asked (the environment points elsewhere)."""
    monkeypatch.setenv("OXEN_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    argv = [arg.format(url=oxen_emulator.base_url) for arg in argv]
    if "--base-url" not in argv:
        argv = [*argv, "--base-url", oxen_emulator.base_url]
    status, stdout, stderr = run(argv, capsys)

    assert status == 0, stderr
    assert "gpt-image-2" in stdout
    assert oxen_emulator.stats()["requests"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_takes_effect_before_or_after_the_command(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """``-v`` on either side turns on the debug logs on stderr."""
    argv = ["-v", "models"] if where == "before" else ["models", "-v"]
    status, _, stderr = run(argv, capsys)
    assert status == 0
    assert "HTTP Request" in stderr


def test_an_option_after_the_command_overrides_the_same_option_before_it(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--base-url A models --base-url B`` asks B."""
    dead = "http://127.0.0.1:9"
    status, stdout, stderr = run(
        ["--base-url", dead, "models", "--base-url", oxen_emulator.base_url], capsys
    )
    assert status == 0, stderr
    assert "gpt-image-2" in stdout


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` exits 0 and states the defaults, for the global options and a command's."""
    assert run(["--help"], capsys)[0] == 0  # run() returns; argparse's exit is caught
    status, stdout, _ = run(["batch", "--help"], capsys)
    assert status == 0
    assert "(default: 16)" in stdout  # --concurrency
    assert "(default: oxen-output)" in stdout  # --out
    assert "(default: gpt-image-2)" in stdout  # --model
    assert "(default: 1.0)" in stdout  # --time-scale
    assert "https://hub.oxen.ai" in stdout  # --base-url
    assert "same --out" in stdout  # what Ctrl-C leaves behind


def test_help_says_what_ctrl_c_does_for_each_waiting_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """generate cancels upstream; wait and batch leave the generations running."""
    _, generate_help, _ = run(["generate", "--help"], capsys)
    _, wait_help, _ = run(["wait", "--help"], capsys)
    assert "Ctrl-C cancels the generations upstream" in " ".join(generate_help.split())
    assert "the generations carry on" in " ".join(wait_help.split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--base-url", "http://127.0.0.1:9"], "demo always runs on the shared emulator"),
        (["--base-url", "http://127.0.0.1:9", "demo"], "demo always runs on the shared emulator"),
        (["emulator", "--base-url", "http://127.0.0.1:9"], "serves an emulator"),
        (["emulator", "--emulator"], "serves an emulator"),
        (["models", "--emulator", "--base-url", "http://127.0.0.1:9"], "exclude each other"),
        (["models", "--time-scale", "0.1"], "--time-scale applies only to an emulator"),
        (["status", "x", "--time-scale", "-1", "--emulator"], "zero or more"),
        (["generate"], "required: prompt"),
        (["emulator", "--stop", "--port", "8001"], "--port does not apply to --stop"),
        (["emulator", "--stop", "--time-scale", "2"], "--time-scale does not apply to --stop"),
        (["models", "--emulator", "--time-scale", "nan"], "finite number, zero or more"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_options_a_command_would_ignore_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad usage, including an option the command would ignore: exit 2, the reason on stderr,
    and nothing run."""
    status, stdout, stderr = run(argv, capsys)
    assert status == 2
    assert message in stderr
    assert "usage: oxen-queue" in stderr
    assert stdout == ""


# --- every refusal exits 2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [(400, 2), (401, 2), (403, 2), (404, 2), (422, 2), (500, 1), (502, 1)],
)
def test_every_refused_request_exits_2_and_a_failure_1(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    expected: int,
) -> None:
    """400, 401, 403, 404 and 422 are refusals (exit 2); a server error is a failure (exit 1).
    Each is one line naming the status, without a traceback."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json={"error": {"message": f"status {code}"}})

    client = functools.partial(
        AsyncClient, transport=httpx.MockTransport(answer), retry=RetryPolicy.no_wait(attempts=1)
    )
    monkeypatch.setattr("oxen_queue._cli._commands.AsyncClient", client)
    monkeypatch.setenv("OXEN_API_KEY", "k")
    status, stdout, stderr = run(["models", "--base-url", "https://hub.oxen.test"], capsys)

    assert status == expected
    assert str(code) in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr
    assert stdout == ""


@pytest.mark.parametrize("installed", [True, False])
def test_the_command_carries_its_requests_on_aiohttp_when_the_extra_brings_it(
    oxen_emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    installed: bool,
) -> None:
    """An application may choose for itself: the cli extra brings aiohttp, and the command
    uses it; without it, httpx's own transport."""
    chosen: list[str] = []

    def client(**options: Any) -> AsyncClient:
        chosen.append(options.get("http_backend", "httpx"))
        return AsyncClient(**options)

    monkeypatch.setattr("oxen_queue._cli._main.aiohttp_installed", lambda: installed)
    monkeypatch.setattr("oxen_queue._cli._commands.AsyncClient", client)
    status, _, stderr = run(["models", "--base-url", oxen_emulator.base_url], capsys)
    assert status == 0, stderr
    assert chosen == ["aiohttp" if installed else "httpx"]


# --- the cli extra ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_line_without_rich_says_to_install_the_cli_extra() -> None:
    """Without rich, ``oxen-queue`` (any command, even --help) exits 2 with the install line,
    and no traceback."""
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from oxen_queue._cli import main\n"
        "raise SystemExit(main(['models']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "pip install 'oxen-queue[cli]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_the_library_imports_without_rich() -> None:
    """rich is the CLI's extra: ``import oxen_queue`` and ``oxen_queue.testing`` work where it
    cannot be imported."""
    code = "import sys; sys.modules['rich'] = None\nimport oxen_queue, oxen_queue.testing"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_importing_the_library_loads_no_rich() -> None:
    """``import oxen_queue`` (and its testing module) never loads rich itself.

    httpx loads rich for its own command line when click, rich and pygments are all installed
    (as in this dev environment, where uvicorn brings click); that import is disabled here so
    the check sees only ours. A fresh install without the extra (CI's wheel check) has no rich
    at all.
    """
    code = (
        "import sys; sys.modules['httpx._main'] = None\n"
        "import oxen_queue, oxen_queue.testing, oxen_queue._pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_exit_statuses_in_help_and_in_the_module_docstring_agree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The help's epilog states the exit statuses; the CLI module's docstring states the same
    text (one is the other's copy, kept alike here); ``--help`` prints it."""
    import oxen_queue._cli
    from oxen_queue._cli._parser import EXIT_STATUSES

    def words(text: str) -> str:
        return " ".join(text.split())

    assert words(EXIT_STATUSES) in words(oxen_queue._cli.__doc__ or "")
    status, stdout, _ = run(["batch", "--help"], capsys)
    assert status == 0
    assert words(EXIT_STATUSES) in words(stdout)
    for code in ("0 everything", "1 a generation", "2 bad usage", "130 interrupted"):
        assert code in words(EXIT_STATUSES)


# --- did you mean ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["modles"],
            "oxen-queue: error: unknown command 'modles'; did you mean models? "
            "(`oxen-queue --help` lists the commands)",
        ),
        (
            ["-v", "--base-url", "https://hub.oxen.test", "stauts", "x"],
            "oxen-queue: error: unknown command 'stauts'; did you mean status? "
            "(`oxen-queue --help` lists the commands)",
        ),
        (
            ["frobnicate"],
            "oxen-queue: error: unknown command 'frobnicate' "
            "(`oxen-queue --help` lists the commands)",
        ),
        (
            ["models", "--verbse"],
            "oxen-queue models: error: unknown option --verbse; did you mean --verbose? "
            "(`oxen-queue models --help` lists what it takes)",
        ),
        (
            ["--emulatr", "models"],
            "oxen-queue models: error: unknown option --emulatr; did you mean --emulator? "
            "(`oxen-queue models --help` lists what it takes)",
        ),
        (
            ["batch", "p.txt", "--concurency=4"],
            "oxen-queue batch: error: unknown option --concurency; did you mean --concurrency? "
            "(`oxen-queue batch --help` lists what it takes)",
        ),
        (
            ["generate", "an ox", "--modle", "gpt-image-2"],
            "oxen-queue generate: error: unknown option --modle; did you mean --model? "
            "(`oxen-queue generate --help` lists what it takes)",
        ),
        (
            ["models", "--frobnicate"],
            "oxen-queue models: error: unknown option --frobnicate "
            "(`oxen-queue models --help` lists what it takes)",
        ),
        (
            ["models", "a", "b"],
            "oxen-queue models: error: unexpected argument 'b' "
            "(`oxen-queue models --help` lists what it takes)",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_an_unknown_command_or_option_is_one_line_naming_the_nearest(
    capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    """A mistyped command or option: exit 2, nothing run, and exactly one line on stderr,
    with the nearest command or option of that command when one is close."""
    status, stdout, stderr = run(argv, capsys)
    assert status == 2
    assert stderr == f"{line}\n"
    assert stdout == ""


def test_every_option_a_command_takes_is_one_did_you_mean_can_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The option strings did-you-mean looks among include every option the usage line
    shows, for every command (one added without being remembered would never be
    suggested)."""
    from oxen_queue._cli._parser import _Parser, build

    _, subparsers = build()
    for name, parser in subparsers.items():
        assert isinstance(parser, _Parser)
        options = set(re.findall(r"\[(-{1,2}[\w-]+)", parser.format_usage()))
        assert "--base-url" in options
        assert options <= set(parser.option_names), (name, options - set(parser.option_names))


# --- a missing emulator extra ----------------------------------------------------------------

_WITHOUT = "import sys\nfor name in {names!r}: sys.modules[name] = None\n"


def _run_without(names: tuple[str, ...], code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which the modules ``names`` cannot be imported
    (as where the extra is not installed)."""
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT.format(names=names) + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["--emulator", "models"],
        ["demo"],
        ["emulator", "--port", "0"],
        ["submit", "x", "--emulator"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("missing", [("uvicorn",), ("PIL",), ("av",), ("uvicorn", "PIL", "av")])
def test_emulator_commands_without_the_emulator_extra_say_what_to_install(
    state_dir: Path, argv: list[str], missing: tuple[str, ...]
) -> None:
    """With only the cli extra, ``--emulator``, ``demo`` and ``emulator`` exit 2 with one line
    naming what is missing and the install command: no traceback, no server started."""
    code = f"from oxen_queue._cli import main\nraise SystemExit(main({argv!r}))"
    result = _run_without(missing, code)

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: the emulator needs the 'emulator' extra (")
    assert "pip install 'oxen-queue[emulator]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (state_dir / "emulator.json").exists()


# --- a missing parquet extra -----------------------------------------------------------------


@pytest.mark.slow
def test_parquet_metadata_without_pyarrow_is_refused_before_anything_is_sent(
    oxen_emulator: Emulator, tmp_path: Path
) -> None:
    """``batch --metadata parquet`` where pyarrow cannot be imported exits 2 with one line
    naming the option and the install command, no traceback, before anything is read, made
    or sent. The default (``metadata.jsonl``) runs there as it always did: pyarrow is
    imported for ``--metadata parquet`` only."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("an ox\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    code = "from oxen_queue._cli import main\nraise SystemExit(main({argv!r}))"
    result = _run_without(("pyarrow",), code.format(argv=[*argv, "--metadata", "parquet"]))

    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "error: --metadata parquet needs the 'parquet' extra (pyarrow): "
        "pip install 'oxen-queue[parquet]'  (or: uv add 'oxen-queue[parquet]')\n"
    )
    assert result.stdout == ""
    assert oxen_emulator.stats()["jobs_created"] == 0
    assert not out.exists()

    result = _run_without(("pyarrow",), code.format(argv=argv))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.glob("metadata.*")) == ["metadata.jsonl"]
    assert oxen_emulator.stats()["jobs_created"] == 1
