"""The command line's grammar and exit statuses: global options anywhere, defaults in --help,
ignored options refused, every refused request exiting 2, and the ``cli`` extra."""

from __future__ import annotations

import functools
import subprocess
import sys
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
        (["demo", "--base-url", "http://127.0.0.1:9"], "demo always runs on its embedded emulator"),
        (["--base-url", "http://127.0.0.1:9", "demo"], "demo always runs on its embedded emulator"),
        (["emulator", "--base-url", "http://127.0.0.1:9"], "serves an emulator"),
        (["emulator", "--emulator"], "serves an emulator"),
        (["models", "--emulator", "--base-url", "http://127.0.0.1:9"], "exclude each other"),
        (["models", "--time-scale", "0.1"], "--time-scale applies only to an emulator"),
        (["status", "x", "--time-scale", "-1", "--emulator"], "zero or more"),
        (["generate"], "required: prompt"),
        (["frobnicate"], "invalid choice"),
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


def test_the_library_imports_without_rich() -> None:
    """rich is the CLI's extra: ``import oxen_queue`` and ``oxen_queue.testing`` work where it
    cannot be imported."""
    code = "import sys; sys.modules['rich'] = None\nimport oxen_queue, oxen_queue.testing"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_importing_the_library_loads_no_rich() -> None:
    """``import oxen_queue`` (and its testing module) never loads rich itself.

    httpx loads rich for its own command line when click, rich and pygments are all installed
    (as in this dev environment, where uvicorn brings click); that import is disabled here so
    the check sees only ours. A fresh install without the extra (CI's wheel check) has no rich
    at all.
    """
    code = (
        "import sys; sys.modules['httpx._main'] = None\n"
        "import oxen_queue, oxen_queue.testing, oxen_queue.testing._pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
