"""The shared emulator of ``--emulator`` and ``demo``, with real processes: what one command
enqueues the next one finds; commands started at once share one server; ``--time-scale``
given later applies to new jobs; ``emulator --stop`` and the idle timeout end it; a stale or
replaced record never leaves two servers. Each test has a state directory of its own (the
``state_dir`` fixture), and the fixture checks that no server outlives the test."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from oxen_queue._cli._shared import (
    Paths,
    Record,
    SharedEmulatorError,
    alive,
    attach,
    read_record,
    write_record,
)

from .support import (
    CLI,
    EXAMPLE_PROMPTS,
    expected_params,
    finish,
    latest_by_line,
    posix_only,
    run,
    spawn,
    wait_for_queued,
    wait_until,
    write_prompts,
)

# Detached servers, signals and pids: every one a process of its own (the suite's slow tier).
pytestmark = [posix_only, pytest.mark.slow]


def _record(state_dir: Path) -> Record:
    record = read_record(Paths(state_dir))
    assert record is not None, "no shared emulator is recorded"
    return record


def _stats(record: Record) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{record.base_url}/_emulator/stats", timeout=10).json()
    return stats


def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXEN_API_KEY", raising=False)


def test_submit_then_wait_in_two_processes_finds_the_same_generations(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``oxen-queue wait $(oxen-queue --emulator submit ...)``: the second process finds the
    first one's generations (no 404), and only the first says it started the emulator."""
    _no_key(monkeypatch)
    status, ids, submitted = finish(
        spawn("--emulator", "--time-scale", "0.05", "submit", "an ox", "-n", "2")
    )
    assert status == 0, submitted
    assert "started the shared emulator at http://127.0.0.1:" in submitted
    generation_ids = ids.split()
    assert len(generation_ids) == 2

    status, waited, stderr = finish(spawn("--emulator", "wait", *generation_ids), timeout=60)

    assert status == 0, stderr
    record = _record(state_dir)
    assert f"shared emulator at {record.base_url}" in stderr
    assert "started" not in stderr
    for generation_id in generation_ids:
        assert f"{generation_id} succeeded http://127.0.0.1:" in waited
    assert _stats(record)["jobs_created"] == 2


def test_commands_started_at_once_share_one_server(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ``--emulator`` commands started together: all succeed against one server, which
    exactly one of them started (the lock), and the record names it."""
    _no_key(monkeypatch)
    processes = [spawn("--emulator", "models") for _ in range(3)]
    results = [finish(process, timeout=90) for process in processes]

    record = _record(state_dir)
    for status, stdout, stderr in results:
        assert status == 0, stderr
        assert "gpt-image-2" in stdout
        assert record.base_url in stderr
    assert sum("started the shared emulator" in stderr for _, _, stderr in results) == 1
    assert alive(record.pid)


def test_a_batch_interrupted_then_run_again_ends_with_one_job_per_line(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's tour, interrupted: ``demo`` gets Ctrl-C (SIGINT to its whole process
    group, as a terminal sends it) once every line is enqueued; the server is in a session
    of its own, so it lives on, and the rerun reattaches every job instead of printing 404s:
    each line saved, and exactly one job made per line."""
    _no_key(monkeypatch)
    out = tmp_path / "demo"
    expected = expected_params(EXAMPLE_PROMPTS)
    # Its own process group, as a shell gives a foreground job: the signal reaches every
    # process in it, and must not reach the server.
    process = subprocess.Popen(
        [*CLI, "demo", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_queued(process, out, len(expected))
    os.killpg(process.pid, signal.SIGINT)
    status, _, stderr = finish(process)
    assert status == 130, stderr
    record = _record(state_dir)
    assert alive(record.pid)

    status, stdout, stderr = finish(spawn("demo", "--out", str(out)), timeout=90)

    assert status == 0, stderr
    assert "not found" not in (stdout + stderr).lower()  # what a 404 says
    assert "error" not in stderr
    assert f"shared emulator at {record.base_url}" in stderr
    latest = latest_by_line(out)
    assert {number: entry["status"] for number, entry in latest.items()} == dict.fromkeys(
        expected, "succeeded"
    )
    stats = _stats(record)
    assert stats["jobs_created"] == len(expected)
    assert set(stats["jobs_by_prompt"].values()) == {1}


def test_a_later_time_scale_applies_to_new_jobs_and_says_so(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first command starts the server at its --time-scale; a later one with another
    scale sets it for the jobs enqueued from then on (and says what it was); one without
    --time-scale leaves it as it is."""
    _no_key(monkeypatch)
    status, _, stderr = run(["--emulator", "--time-scale", "0.5", "models"], capsys)
    assert status == 0, stderr
    assert "(time scale 0.5)" in stderr
    record = _record(state_dir)

    status, _, stderr = run(["models", "--emulator", "--time-scale", "0"], capsys)
    assert status == 0, stderr
    assert "time scale 0 for the jobs enqueued from now on (was 0.5)" in stderr
    status, _, stderr = run(["models", "--emulator"], capsys)
    assert status == 0, stderr
    assert f"shared emulator at {record.base_url} (time scale 0)" in stderr

    clock = httpx.get(f"{record.base_url}/_emulator/clock", timeout=10).json()
    assert clock["time_scale"] == 0
    assert _record(state_dir).pid == record.pid  # the same server throughout


def test_emulator_stop_stops_the_shared_server(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``oxen-queue emulator --stop``: the server exits, its record is gone, the line says
    which one stopped; again, it says none runs (both exit 0)."""
    _no_key(monkeypatch)
    assert run(["--emulator", "models"], capsys)[0] == 0
    record = _record(state_dir)

    status, stdout, _ = run(["emulator", "--stop"], capsys)

    assert status == 0
    assert stdout.strip() == f"stopped the shared emulator at {record.base_url} (pid {record.pid})"
    assert not alive(record.pid)
    assert read_record(Paths(state_dir)) is None
    status, stdout, _ = run(["emulator", "--stop"], capsys)
    assert (status, stdout.strip()) == (0, "no shared emulator is running")

    # The next one says the generations of the one before are gone (a rerun's ids with it).
    status, _, stderr = run(["--emulator", "models"], capsys)
    assert status == 0, stderr
    assert "started the shared emulator" in stderr
    assert "The one before it stopped at " in stderr
    assert "by `oxen-queue emulator --stop`: the generations it made are gone" in stderr


def test_the_shared_server_stops_itself_after_its_idle_timeout(state_dir: Path) -> None:
    """A server with nothing to do for its idle timeout exits on its own and removes its
    record (the timeout is 15 minutes for the CLI; 1 s here); the next one started says
    when and why the one before stopped."""
    attached = attach(None, directory=state_dir, idle_timeout=1.0)
    assert attached.started
    assert attached.before is None
    assert httpx.get(f"{attached.base_url}/_emulator/clock", timeout=10).status_code == 200

    wait_until(lambda: not alive(attached.pid))

    assert read_record(Paths(state_dir)) is None
    assert "no request for 1 s" in (state_dir / "emulator.log").read_text(encoding="utf-8")
    after = attach(None, directory=state_dir)
    assert after.started
    assert after.before is not None
    assert after.before.startswith("stopped at ")
    assert after.before.endswith("after 1 s without a request")


def test_a_server_whose_record_names_another_stops_itself(state_dir: Path) -> None:
    """A server that finds its record replaced (a newer server took over) exits: two never
    serve from one state directory for long."""
    attached = attach(None, directory=state_dir)
    record = _record(state_dir)
    write_record(Paths(state_dir), dataclasses.replace(record, token="another"))

    wait_until(lambda: not alive(attached.pid))


def test_a_stale_record_is_replaced_by_a_new_server(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record left by a server that is gone (a crash, a reboot) is not trusted: the next
    command starts a new server and says so."""
    _no_key(monkeypatch)
    (state_dir / "emulator.json").write_text(
        json.dumps(
            {
                "pid": 2**22 + 12345,  # above any pid_max: no such process
                "token": "old",
                "base_url": "http://127.0.0.1:9",
                "idle_timeout": 900,
                "started": 0,
                "version": "0",
            }
        ),
        encoding="utf-8",
    )

    status, stdout, stderr = run(["--emulator", "models"], capsys)

    assert status == 0, stderr
    assert "started the shared emulator" in stderr
    assert "gpt-image-2" in stdout
    assert _record(state_dir).token != "old"


def test_a_state_directory_that_cannot_be_made_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OXEN_QUEUE_STATE_DIR`` under a file: one line naming the directory and the variable
    to set, exit status 1 (this machine failed), nothing started."""
    _no_key(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("OXEN_QUEUE_STATE_DIR", str(blocker / "state"))

    status, stdout, stderr = run(["--emulator", "models"], capsys)

    assert status == 1
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"error: cannot create the state directory {blocker / 'state'}")
    assert "OXEN_QUEUE_STATE_DIR" in stderr
    assert stdout == ""


def test_batch_with_emulator_runs_a_prompts_file_on_the_shared_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch --emulator`` runs a prompts file to the end on the shared server, like the
    in-process emulator it replaced."""
    _no_key(monkeypatch)
    prompts = write_prompts(tmp_path, "an ox", "a yak")
    out = tmp_path / "out"
    status, stdout, stderr = run(
        ["batch", str(prompts), "--emulator", "--time-scale", "0.02", "--out", str(out)], capsys
    )
    assert status == 0, stderr
    assert f"2 of 2 saved in {out}/" in stdout
    assert sorted(latest_by_line(out)) == [1, 2]


def test_a_server_that_cannot_start_is_reported_with_its_reason(state_dir: Path) -> None:
    """A server that fails as it starts (here: a time scale it refuses) is reported in one
    line with the reason from its log, at once (its exit is noticed, not waited out), and no
    record is left."""
    with pytest.raises(SharedEmulatorError) as caught:
        attach(-1.0, directory=state_dir)

    message = str(caught.value)
    assert message.startswith("the shared emulator did not start: error: time_scale must be")
    assert str(state_dir / "emulator.log") in message
    assert "\n" not in message
    assert read_record(Paths(state_dir)) is None
