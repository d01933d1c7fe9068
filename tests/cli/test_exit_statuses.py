"""Every command's exit status, row by row of the rule the help states (``EXIT_STATUSES``):
0 everything asked for succeeded; 1 a generation did not succeed (or the API or this
machine failed); 2 bad usage or a request the hub refused.

The generations are made on an emulator on a manual clock, reached like a real hub: one
succeeded, one still queued, one cancelled, and an id the hub does not know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock

from ..helpers import TLS
from .support import SECRET_KEY, enqueue_directly, run, write_prompts

UNKNOWN = "3f2a0000-0000-4000-8000-00000000dead"


@dataclass(frozen=True)
class Hub:
    emulator: Emulator
    succeeded: str
    queued: str
    cancelled: str


@pytest.fixture
def hub(manual_hub: tuple[Emulator, ManualClock]) -> Hub:
    emulator, clock = manual_hub
    succeeded = enqueue_directly(emulator, "an ox that finishes")
    clock.advance(3600)  # long past any job's duration
    emulator.state.advance()
    queued = enqueue_directly(emulator, "an ox still queued")
    cancelled = enqueue_directly(emulator, "an ox cancelled")
    response = httpx.delete(
        f"{emulator.base_url}/api/ai/queue/{cancelled}",
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
        verify=TLS,
    )
    response.raise_for_status()
    jobs = emulator.state.jobs
    assert (jobs[succeeded].status, jobs[queued].status) == ("succeeded", "queued")
    assert jobs[cancelled].status == "cancelled"
    return Hub(emulator, succeeded, queued, cancelled)


# (command, the generations it is given, the exit status the rule gives)
ROWS = [
    ("status", ["succeeded"], 0),
    ("status", ["queued"], 0),  # not failed (yet): nothing has gone wrong
    ("status", ["cancelled"], 1),
    ("status", ["succeeded", "cancelled"], 1),
    ("status", [UNKNOWN], 2),
    ("status", ["cancelled", UNKNOWN], 2),
    ("cancel", ["queued"], 0),
    ("cancel", ["succeeded"], 0),  # already finished: not running, which is what was asked
    ("cancel", ["cancelled"], 0),
    ("cancel", [UNKNOWN], 2),
    ("wait", ["succeeded"], 0),
    ("wait", ["cancelled"], 1),
    ("wait", [UNKNOWN], 2),
    ("download", ["succeeded"], 0),
    ("download", ["queued"], 1),  # no result yet
    ("download", ["cancelled"], 1),
    ("download", [UNKNOWN], 2),
]


@pytest.mark.parametrize(
    ("command", "which", "expected"),
    ROWS,
    ids=[f"{command} {' '.join(which)} -> {expected}" for command, which, expected in ROWS],
)
def test_each_command_on_generations_exits_as_the_rule_says(
    hub: Hub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    which: list[str],
    expected: int,
) -> None:
    """status, cancel, wait and download: 0 all asked for succeeded, 1 a generation that did
    not succeed, 2 an id the hub refuses (404); never a traceback."""
    ids = [getattr(hub, name, name) for name in which]
    argv = [command, *ids]
    if command == "download":
        argv += ["--out", str(tmp_path)]
    status, _, stderr = run(argv, capsys)
    assert status == expected, stderr
    assert "Traceback" not in stderr


def test_cancel_of_a_finished_generation_says_so_and_leaves_it_as_it_was(
    hub: Hub, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cancelling a generation that already succeeded: exit 0, one line saying there was
    nothing to cancel, and the generation still succeeded."""
    status, stdout, _ = run(["cancel", hub.succeeded], capsys)
    assert status == 0
    assert stdout.strip() == f"{hub.succeeded}: already succeeded; nothing to cancel"
    assert hub.emulator.state.jobs[hub.succeeded].status == "succeeded"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["models"], 0),
        (["models", "gpt-image-2"], 0),
        (["models", "no-such-model"], 2),
        (["submit", "an ox"], 0),
        (["submit", "an ox", "--quality", "ultra"], 2),  # refused before anything is sent
        (["submit", "an ox", "-n", "0"], 2),
        (["recover"], 2),  # no ledger: configuration
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_commands_without_generations_exit_as_the_rule_says(
    hub: Hub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    expected: int,
) -> None:
    """models, submit and recover: 0 done, 2 refused (unknown model, bad parameter, no
    ledger)."""
    monkeypatch.delenv("OXEN_LEDGER", raising=False)
    status, _, stderr = run(argv, capsys)
    assert status == expected, stderr


@pytest.mark.parametrize("timeout", ["inf", "nan", "0", "-1", "1e999", "soon"])
@pytest.mark.parametrize("command", [["submit", "an ox"], ["generate", "an ox"]])
def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_a_usage_error(
    hub: Hub, capsys: pytest.CaptureFixture[str], command: list[str], timeout: str
) -> None:
    """Before: ``--timeout inf`` ended in "unexpected OverflowError" (aiohttp's), NaN in
    anyio's ``ValueError``, and 0 or -1 in every line "ambiguous", never sent."""
    requests = hub.emulator.stats()["requests"]
    status, _, stderr = run([*command, "--timeout", timeout], capsys)
    assert status == 2, stderr
    assert "--timeout" in stderr and "finite number of seconds" in stderr
    assert "Traceback" not in stderr
    assert hub.emulator.stats()["requests"] == requests


def test_an_empty_out_is_a_usage_error(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out ""`` was taken as the current directory: the run's files landed there."""
    prompts = write_prompts(tmp_path, "an ox")
    status, _, stderr = run(["batch", str(prompts), "--out", ""], capsys)
    assert status == 2, stderr
    assert "--out" in stderr


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["an ox", '{"prompt": "a yak", "quality": "low"}'], 0),
        (["an ox", '{"prompt": "a yak", "quality": "ultra"}'], 2),  # would be refused
        (["an ox", '{"prompt": "a yak", "resolution": "999x999"}'], 2),
    ],
    ids=["priced", "a bad quality", "a bad resolution"],
)
def test_a_dry_run_with_bad_parameters_exits_2(
    hub: Hub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    expected: int,
) -> None:
    """``batch --dry-run``: 0 when every request is priced; 2 when one has parameters the
    client refuses (a run would have it refused: bad input, not a failure). Nothing sent."""
    prompts = write_prompts(tmp_path, *lines)
    jobs_before = hub.emulator.stats()["jobs_created"]
    status, _, stderr = run(
        ["batch", str(prompts), "--dry-run", "--out", str(tmp_path / "out")], capsys
    )
    assert status == expected, stderr
    assert hub.emulator.stats()["jobs_created"] == jobs_before


@pytest.mark.parametrize("failed", [True, False])
def test_generate_exits_1_when_a_generation_fails_and_0_when_all_succeed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failed: bool,
) -> None:
    """``generate``: 0 when every generation succeeded, 1 when one failed on the hub."""
    config = EmulatorConfig(time_scale=0, failure_rate=1.0 if failed else 0.0)
    with Emulator(config=config) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        status, _, stderr = run(["generate", "an ox", "--out", str(tmp_path)], capsys)
    assert status == (1 if failed else 0), stderr


@pytest.mark.parametrize("wait", ["inf", "nan", "-1", "1e999", "soon"])
def test_a_recover_wait_that_is_not_seconds_zero_or_more_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, wait: str
) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    status, _, stderr = run(["recover", "--ledger", ledger, "--wait", wait], capsys)
    assert status == 2, stderr
    assert "--wait" in stderr and "finite number of seconds, zero or more" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "ledger.db").exists()  # refused before the ledger was opened
