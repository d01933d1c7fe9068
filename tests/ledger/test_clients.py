"""The SDK on a shared ledger: several real processes, real emulator, cut-off answers, crashes.

Every test counts jobs on the emulator itself: a job held by two callers, a job nobody holds
(orphaned, billed for nothing) and a job made twice (resent) all show there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from oxen_queue import AmbiguousEnqueueError, AsyncClient, RetryPolicy
from oxen_queue.testing import Emulator, EmulatorConfig

ROOT = Path(__file__).resolve().parents[2]
KEY = "ledger-test-key"


def spawn(command: str, emulator: Emulator, ledger: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ledger.clients",
            command,
            "--base-url",
            emulator.base_url,
            "--key",
            KEY,
            "--ledger",
            ledger,
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> list[dict[str, Any]]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.5, seed=3, unrelated_event_rate=0)) as emu:
        yield emu


@pytest.mark.slow
def test_processes_with_identical_requests_each_get_their_own_job(
    emulator: Emulator, ledger_url: str
) -> None:
    """4 processes x 30 enqueues, a fifth of the prompts the same in every process, a fifth
    of the answers cut off after the job was made: no job held twice, none orphaned, none
    resent, every caller its own job."""
    emulator.faults.update({"enqueue_cut": 0.2, "seed": 11})
    processes = [
        spawn(
            "enqueue",
            emulator,
            ledger_url,
            "--name",
            f"p{i}",
            "--calls",
            "30",
            "--loop",
            ("asyncio", "trio")[i % 2],
        )
        for i in range(4)
    ]
    lines = [line for process in processes for line in finish(process)]
    held = [i for line in lines if "ids" in line for i in line["ids"]]
    trouble = [line for line in lines if "ambiguous" in line or "error" in line]
    assert trouble == []
    assert len(held) == 4 * 30  # every caller got its job
    assert len(set(held)) == len(held)  # no job held twice
    assert set(held) == set(emulator.state.jobs)  # none orphaned, none made twice
    stats = [line["stats"] for line in lines if "stats" in line]
    assert sum(s["reconciled"] for s in stats) >= emulator.stats()["faults"]["enqueue_cut"] > 0
    assert sum(s["resent"] for s in stats) == 0


@pytest.mark.slow
def test_a_killed_process_leaves_its_billed_jobs_to_recover(ledger_url: str) -> None:
    """SIGKILL mid-batch, some answers still on their way: ``recover()`` in the next
    process returns every job the killed one made (they are all still running)."""
    # Jobs queued 50-200 s, then processing 200-500 s: none can finish within the test's
    # 120 s timeout, however slow the machine (at time_scale 5, one did in a 23 s run).
    config = EmulatorConfig(time_scale=100, unrelated_event_rate=0)
    with Emulator(config=config) as emulator:
        _kill_and_recover(emulator, ledger_url)


def _kill_and_recover(emulator: Emulator, ledger_url: str) -> None:
    emulator.faults.update({"slow_rate": 0.5, "slow_seconds": 0.6, "seed": 2})
    options = ("--calls", "40", "--pace", "0.05", "--timeout", "0.5")
    batch = spawn("batch", emulator, ledger_url, *options)
    assert batch.stdout is not None
    enqueued = 0
    for text in batch.stdout:
        enqueued += "enqueued" in json.loads(text)
        if enqueued == 10:
            break
    batch.send_signal(signal.SIGKILL)
    batch.communicate(timeout=10)  # reaps it and closes its pipes
    made = set(emulator.state.jobs)
    assert len(made) > enqueued  # some answers were lost with the process
    (recovered,) = finish(spawn("recover", emulator, ledger_url, "--wait", "20"))
    assert set(recovered["recovered"]) == made
    statuses = {job.status for job in emulator.state.jobs.values()}
    assert statuses <= {"queued", "processing"}  # nothing had finished: all had to come back


@pytest.mark.anyio
@pytest.mark.parametrize("offset", [-45.0, 45.0], ids=["server-45s-behind", "server-45s-ahead"])
async def test_cut_off_enqueues_are_adopted_exactly_whatever_the_servers_clock(
    offset: float,
) -> None:
    """The window for a lost answer's rows is on the server's clock, from its Date headers:
    under 45 s of skew either way, each cut-off enqueue adopts its own job, never one made
    60 s earlier by another client, and nothing is sent twice."""
    config = EmulatorConfig(clock_offset=offset, time_scale=10, unrelated_event_rate=0)
    with Emulator(config=config) as emu:
        body = {"model": "gpt-image-2", "prompt": "the same ox", "quality": "low"}
        async with httpx.AsyncClient(
            base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}
        ) as raw:
            older = [(await raw.post("/api/ai/queue", json=body)).json() for _ in range(5)]
        older_ids = {o["generations"][0]["generation_id"] for o in older}
        for generation_id in older_ids:  # made a minute earlier, on the server's clock
            job = emu.state.jobs[generation_id]
            job.enqueued_at -= 60
            job.changed()
        async with AsyncClient(api_key=KEY, base_url=emu.base_url, validate=False) as client:
            await client.list_models()  # any answer: a Date header teaches the clock
            emu.faults.enqueue_cut = 1.0
            mine = [
                await client.enqueue("gpt-image-2", prompt="the same ox", quality="low")
                for _ in range(5)
            ]
            emu.faults.enqueue_cut = 0.0
            assert (client.stats.reconciled, client.stats.resent) == (5, 0)
        assert {g.id for g in mine} == set(emu.state.jobs) - older_ids
        assert emu.stats()["jobs_created"] == 10


@pytest.mark.anyio
async def test_identical_jobs_from_outside_the_ledger_make_a_lost_answer_ambiguous() -> None:
    """Another client on the key, not sharing the ledger, makes the same request at the same
    moment: the rows cannot be told apart, so nothing is adopted and nothing resent; the
    error names both candidates."""
    with Emulator(config=EmulatorConfig(time_scale=10, unrelated_event_rate=0)) as emu:
        retry = RetryPolicy(initial_delay=0.01, max_delay=0.05, deadline=20)
        async with (
            AsyncClient(api_key=KEY, base_url=emu.base_url, retry=retry) as ours,
            AsyncClient(api_key=KEY, base_url=emu.base_url) as theirs,
        ):
            await theirs.enqueue("gpt-image-2", prompt="twins", quality="low")
            emu.faults.enqueue_cut = 1.0
            with pytest.raises(AmbiguousEnqueueError) as info:
                await ours.enqueue("gpt-image-2", prompt="twins", quality="low")
            emu.faults.enqueue_cut = 0.0
        assert set(info.value.candidate_ids) == set(emu.state.jobs)
        assert len(info.value.candidate_ids) == 2
        assert emu.stats()["jobs_created"] == 2  # never resent


@pytest.mark.anyio
async def test_recover_on_a_clean_ledger_returns_only_the_clients_own(tmp_path: Path) -> None:
    with Emulator(config=EmulatorConfig(time_scale=10, unrelated_event_rate=0)) as emu:
        url = f"sqlite://{tmp_path}/ledger.db"
        async with AsyncClient(api_key=KEY, base_url=emu.base_url, ledger=url) as client:
            generation = await client.enqueue("gpt-image-2", prompt="mine")
            started = time.monotonic()
            recovered = await client.recover(wait=60)
            # Nothing of a gone client to wait for: not the 60 s a wrong wait would take.
            assert time.monotonic() - started < 20
            assert recovered == [generation]
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_orphaned_requests_list_what_recover_takes_over_and_own_jobs_can_be_left_out(
    tmp_path: Path,
) -> None:
    """A client closed with jobs still running leaves them to the next: ``orphaned_requests``
    lists their requests at once (one entry per generation, with its id), and
    ``recover(include_own=False)``
    hands back those jobs without the recovering client's own."""
    with Emulator(config=EmulatorConfig(time_scale=100, unrelated_event_rate=0)) as emu:
        url = f"sqlite://{tmp_path}/ledger.db"
        async with AsyncClient(api_key=KEY, base_url=emu.base_url, ledger=url) as gone:
            left = await gone.enqueue_many("gpt-image-2", 2, prompt="left", quality="low")
            also_left = await gone.enqueue("gpt-image-2", prompt="also left")
        async with AsyncClient(api_key=KEY, base_url=emu.base_url, ledger=url) as client:
            orphaned = await client.orphaned_requests()
            assert sorted(orphaned, key=str) == sorted(
                [
                    ("gpt-image-2", {"prompt": "also left"}, also_left.id),
                    *[("gpt-image-2", {"prompt": "left", "quality": "low"}, g.id) for g in left],
                ],
                key=str,
            )
            mine = await client.enqueue("gpt-image-2", prompt="mine")
            taken = await client.recover(wait=0, include_own=False)
            assert mine not in taken
            assert {g.id for g in left} <= {g.id for g in taken}
            assert len(taken) == 3
            assert await client.orphaned_requests() == []  # taken over: this client's now
            assert mine in await client.recover(wait=0)
            assert {g.params["prompt"] for g in taken} == {"left", "also left"}
        await anyio.lowlevel.checkpoint()
