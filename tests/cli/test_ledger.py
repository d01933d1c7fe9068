"""The CLI on an enqueue ledger: a batch killed with requests in flight resumes without making
a job twice, and ``recover`` hands back what a killed run left running."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from oxen_queue._cli._prompts import PromptLine
from oxen_queue._cli._run import _Recovery, request_key
from oxen_queue.testing import Emulator, EmulatorConfig

from .support import (
    finish,
    latest_by_line,
    posix_only,
    run,
    spawn,
    wait_for_queued,
    wait_until,
    write_prompts,
)

SECRET_KEY = "sk-cli-ledger-test"
PROMPTS = [f"an ox, number {i}" for i in range(12)]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    config = EmulatorConfig(seed=5, time_scale=0.02, unrelated_event_rate=0)
    with Emulator(config=config) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        monkeypatch.delenv("OXEN_LEDGER", raising=False)
        yield emulator


def _kill_mid_flight(hub: Emulator, prompts: Path, out: Path, *, timeout: str = "1") -> None:
    """Run the batch with every answer 0.6 s late, and SIGKILL it with requests in flight."""
    hub.faults.update({"slow_rate": 1.0, "slow_seconds": 0.6})
    process = spawn(
        "batch", str(prompts), "--out", str(out), "--concurrency", "6", "--timeout", timeout
    )
    wait_for_queued(process, out, 2)

    def unrecorded() -> bool:  # a job made, its answer still on the way: the manifest lacks it
        recorded = {entry.get("generation_id") for entry in latest_by_line(out).values()}
        return bool(set(hub.state.jobs) - recorded)

    wait_until(unrecorded, process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=10)
    hub.faults.reset()
    recorded = {entry.get("generation_id") for entry in latest_by_line(out).values()}
    assert set(hub.state.jobs) - recorded  # jobs the manifest never heard of


@pytest.mark.slow
@posix_only
def test_a_batch_killed_mid_flight_resumes_without_making_a_job_twice(
    hub: Emulator, tmp_path: Path
) -> None:
    prompts, out = write_prompts(tmp_path, *PROMPTS), tmp_path / "out"
    _kill_mid_flight(hub, prompts, out)
    status, stdout, stderr = finish(spawn("batch", str(prompts), "--out", str(out)))
    assert status == 0, stderr
    assert hub.stats()["jobs_created"] == len(PROMPTS)  # each line made exactly one job
    assert {e["status"] for e in latest_by_line(out).values()} == {"succeeded"}
    assert f"{len(PROMPTS)} of {len(PROMPTS)} saved" in stdout


@pytest.mark.slow
@posix_only
def test_a_resumed_batch_sends_its_other_lines_while_the_killed_runs_requests_may_land(
    hub: Emulator, tmp_path: Path
) -> None:
    """The killed run's unanswered requests may reach the server until their deadline: twice
    its 600 s timeout, twenty minutes on. The rerun holds back only the lines asking for what
    they asked for: the lines added since, and the lines the killed run never sent, are
    enqueued and saved long before that deadline, and nothing is made twice (before, the
    rerun sent nothing until the deadline had passed). The verdict waits on the manifest, not
    on a clock: the deadline is out of reach of any machine's speed."""
    prompts, out = write_prompts(tmp_path, *PROMPTS), tmp_path / "out"
    _kill_mid_flight(hub, prompts, out, timeout="600")
    with sqlite3.connect(out / "ledger.db") as db:
        rows = db.execute("SELECT deadline FROM oxen_ledger_intents WHERE state = 'in_flight'")
        deadlines = [row[0] for row in rows]
    assert deadlines  # requests the killed run never heard back from
    added = [f"a heron, number {i}" for i in range(6)]
    prompts.write_text("\n".join([*PROMPTS, *added]) + "\n")
    added_lines = set(range(len(PROMPTS) + 1, len(PROMPTS) + len(added) + 1))

    def sent_the_rest() -> bool:
        saved = {n for n, e in latest_by_line(out).items() if e.get("status") == "succeeded"}
        made = hub.stats()["jobs_by_prompt"]
        return added_lines <= saved and all(made.get(prompt) for prompt in PROMPTS)

    process = spawn("batch", str(prompts), "--out", str(out))
    try:
        wait_until(sent_the_rest, process)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)
    assert hub.stats()["jobs_by_prompt"] == dict.fromkeys([*PROMPTS, *added], 1)
    sent = [job.enqueued_at for job in hub.state.jobs.values() if job.params["prompt"] in added]
    assert max(sent) < min(deadlines)


@pytest.mark.slow
@posix_only
def test_recover_prints_every_job_a_killed_run_left(hub: Emulator, tmp_path: Path) -> None:
    prompts, out = write_prompts(tmp_path, *PROMPTS), tmp_path / "out"
    _kill_mid_flight(hub, prompts, out)
    with sqlite3.connect(out / "ledger.db") as db:  # what the killed run saw finish
        rows = db.execute("SELECT generation_id FROM oxen_ledger_generations WHERE finished = 1")
        finished = {row[0] for row in rows}
    ledger = f"sqlite:///{out.resolve()}/ledger.db"
    status, stdout, stderr = finish(spawn("recover", "--ledger", ledger, "--timeout", "1"))
    assert status == 0, stderr
    printed = dict(line.split(" ", 1) for line in stdout.splitlines())
    assert printed.keys() | finished == set(hub.state.jobs)  # every job the killed run made
    assert not printed.keys() & finished
    assert set(printed.values()) <= {"queued", "processing", "succeeded"}


def test_a_job_the_ledger_still_lists_is_never_adopted_by_an_identical_line_the_manifest_lacks(
    hub: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed before its ledger heard how its jobs ended leaves them listed as pending,
    though the manifest has them saved. An identical line added further on has no manifest
    entry: it gets a job of its own, not the earlier line's (seen at 10,000 lines: a
    duplicate line adopted a finished job, and two lines shared one generation)."""
    prompts, out = write_prompts(tmp_path, "an ox", "a cow"), tmp_path / "out"
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)
    assert status == 0, stderr
    with sqlite3.connect(out / "ledger.db") as db:  # as if killed before the ends were heard
        db.execute("UPDATE oxen_ledger_generations SET finished = 0, status = NULL")
        db.execute("UPDATE oxen_ledger_intents SET state = 'answered'")
    prompts.write_text("an ox\na cow\nan ox\n")

    status, stdout, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)
    assert status == 0, stderr
    assert hub.stats()["jobs_by_prompt"] == {"an ox": 2, "a cow": 1}
    latest = latest_by_line(out)
    assert len({entry["generation_id"] for entry in latest.values()}) == 3
    assert "3 of 3 saved" in stdout


@pytest.mark.slow
def test_recover_without_a_ledger_says_how_to_name_one(hub: Emulator) -> None:
    status, _, stderr = finish(spawn("recover"))
    assert status == 2
    assert "--ledger" in stderr and "OXEN_LEDGER" in stderr


class _Orphans:
    """A client whose ledger lists gone clients' requests (model, params, id or None)."""

    def __init__(self, *listed: tuple[str, dict[str, Any], str | None]) -> None:
        self.listed = list(listed)

    async def orphaned_requests(self) -> list[tuple[str, dict[str, Any], str | None]]:
        return self.listed


class _Named:
    """A manifest naming some generation ids."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def naming(self, ids: set[str]) -> set[str]:
        return ids & self.ids


def _line(number: int, prompt: str) -> PromptLine:
    return PromptLine(number=number, params={"prompt": prompt}, model=None, occurrence=0, digest=0)


@pytest.mark.anyio
async def test_a_resumed_run_holds_back_one_line_for_each_orphaned_job_the_manifest_lacks() -> None:
    """Lines are held back only for the gone clients' generations the manifest does not name
    (unanswered requests, or jobs it never recorded): the lines it names are reattached, and
    an identical line further on is sent at once. Once recovered, each job goes to one line."""
    model = "gpt-image-2"
    ox, cow = {"prompt": "an ox"}, {"prompt": "a cow"}
    client = _Orphans((model, ox, None), (model, ox, "job-known"), (model, cow, "job-named"))
    recovery = _Recovery()
    await recovery.hold_for(cast(Any, client), cast(Any, _Named("job-named")))
    assert recovery.held == {request_key(model, ox): 2}
    assert not recovery.hold(_line(1, "a cow"), model, cow)  # its job's line is reattached
    held = [recovery.hold(_line(n, "an ox"), model, ox) for n in (2, 3, 4)]
    assert held == [True, True, False]  # two held, the third sent at once
    assert [line.number for line, _, _ in recovery.waiting] == [2, 3]

    recovery.found = {request_key(model, ox): ["job-landed", "job-known"]}
    assert not recovery.hold(_line(5, "an ox"), model, ox)  # recovered: nothing is held
    assert recovery.take(model, ox) == "job-landed"
    assert recovery.take(model, ox) == "job-known"
    assert recovery.take(model, ox) is None  # the next is sent
    assert recovery.take(model, cow) is None
