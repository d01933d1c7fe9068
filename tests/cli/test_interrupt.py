"""Ctrl-C, sent for real (SIGINT to a child process) against an emulator: ``generate`` cancels
its generations upstream, ``wait`` leaves them running, and either way one short line says so,
with no log noise and no traceback, even after a second Ctrl-C.

(``batch`` is covered in test_batch.py: it leaves its generations running, resumable.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from oxen_queue.testing import Emulator, ManualClock

from .support import LineReader, enqueue_directly, posix_only, spawn, wait_until


def _assert_one_quiet_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "could not cancel" not in stderr
    return lines[0]


def _deletes(emulator: Emulator) -> int:
    requests: dict[str, int] = emulator.stats()["requests"]
    return sum(count for name, count in requests.items() if name.startswith("DELETE "))


@pytest.mark.slow
@posix_only
def test_ctrl_c_during_generate_cancels_its_generations_upstream(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path
) -> None:
    """SIGINT while ``generate -n 2`` waits: both jobs are cancelled on the hub, exit 130,
    and stderr is the one line saying so."""
    emulator, _ = manual_hub
    process = spawn("generate", "an ox", "-n", "2", "--out", str(tmp_path))
    with LineReader(process) as output:
        wait_until(lambda: emulator.stats()["jobs_created"] == 2, process)
        process.send_signal(signal.SIGINT)
        status, stdout, stderr = output.finish()

    assert status == 130, stderr
    assert _assert_one_quiet_line(stderr) == "interrupted: 2 generations cancelled upstream."
    assert [job.status for job in emulator.state.jobs.values()] == ["cancelled", "cancelled"]
    assert stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@posix_only
def test_ctrl_c_while_the_enqueue_answer_is_in_flight_still_cancels_its_jobs(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path
) -> None:
    """SIGINT after the hub made the jobs but before its answer arrived: the answer is
    awaited, so both jobs are known and cancelled upstream (not "nothing left running")."""
    emulator, _ = manual_hub
    emulator.faults.update({"slow_rate": 1.0, "slow_seconds": 2.0})  # answers after the effect
    process = spawn("generate", "an ox", "-n", "2", "--out", str(tmp_path))
    with LineReader(process) as output:
        wait_until(lambda: emulator.stats()["jobs_created"] == 2, process)
        process.send_signal(signal.SIGINT)  # the enqueue's answer is still 2 s away
        emulator.faults.update({"slow_rate": 0.0})
        status, stdout, stderr = output.finish()

    assert status == 130, stderr
    assert _assert_one_quiet_line(stderr) == "interrupted: 2 generations cancelled upstream."
    assert [job.status for job in emulator.state.jobs.values()] == ["cancelled", "cancelled"]
    assert stdout == ""


@pytest.mark.slow
@posix_only
def test_a_second_ctrl_c_cuts_the_cleanup_short_quietly(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path
) -> None:
    """A second SIGINT while the cancellations are in flight (the hub answers slowly): exit
    130 at once, one line naming what could not be confirmed, no chained traceback."""
    emulator, _ = manual_hub
    process = spawn("generate", "an ox", "-n", "2", "--out", str(tmp_path))
    with LineReader(process) as output:
        wait_until(lambda: emulator.stats()["jobs_created"] == 2, process)
        emulator.faults.latency = 30.0  # every answer from now on: the cancellations hang
        process.send_signal(signal.SIGINT)
        wait_until(lambda: _deletes(emulator) == 2, process)
        process.send_signal(signal.SIGINT)
        status, _, stderr = output.finish(timeout=10.0)  # not the 30 s of latency
        emulator.faults.latency = 0.0

    assert status == 130, stderr
    line = _assert_one_quiet_line(stderr)
    assert line.startswith("interrupted: 0 of 2 generations cancelled upstream; not confirmed: ")
    assert all(generation_id in line for generation_id in emulator.state.jobs)


@pytest.mark.slow
@posix_only
def test_ctrl_c_during_wait_stops_waiting_and_leaves_the_generations_running(
    manual_hub: tuple[Emulator, ManualClock],
) -> None:
    """SIGINT while ``wait`` waits: exit 130, one line, and the generations are untouched
    (someone else submitted them: waiting is only watching)."""
    emulator, _ = manual_hub
    ids = [enqueue_directly(emulator, "ox a"), enqueue_directly(emulator, "ox b")]
    process = spawn("wait", *ids)
    with LineReader(process) as output:
        # Reattached: each id's row is asked once before the wait is only listening.
        wait_until(lambda: emulator.stats()["requests"].get("GET /api/events", 0) >= 1, process)
        process.send_signal(signal.SIGINT)
        status, stdout, stderr = output.finish()

    assert status == 130, stderr
    line = _assert_one_quiet_line(stderr)
    assert line.startswith("interrupted: stopped waiting; 2 generations still running upstream")
    assert stdout == ""
    assert _deletes(emulator) == 0
    assert all(emulator.state.jobs[i].status == "queued" for i in ids)
