"""Real processes sharing one ledger: one SQLite file, or one PostgreSQL database.

Half the workers run asyncio, half trio, so the test process itself runs asyncio only (its
share is the judging, covered on both loops by test_ledger.py). On PostgreSQL the workers stand
in for separate hosts (each its own connections and a host key of its own), so they judge one
another by leases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from oxen_queue._ledger import fingerprint

from .support import ledger_for
from .workers import MODEL, FakeQueue

ROOT = Path(__file__).resolve().parents[2]
LOOPS = ("asyncio", "trio")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Worker:
    """One worker process (``tests/ledger/workers.py``), read line by line."""

    def __init__(self, *argv: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger.workers", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self) -> dict[str, Any]:
        """The next JSON line (the worker flushes each)."""
        assert self.process.stdout is not None
        text = self.process.stdout.readline()
        if not text:
            raise AssertionError(f"worker ended: {self.finish()}")
        record: dict[str, Any] = json.loads(text)
        return record

    def finish(self, timeout: float = 90) -> str:
        """Wait for the worker to exit; return its stderr; fail unless it exited cleanly."""
        _, stderr = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, stderr
        return stderr

    def results(self, timeout: float = 90) -> list[dict[str, Any]]:
        stdout, stderr = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, stderr
        return [json.loads(line) for line in stdout.splitlines()]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate()  # reaps it and closes the pipes


@contextmanager
def workers(
    count: int, *argv: str, hosts: bool, extra: list[str] | None = None
) -> Iterator[list[Worker]]:
    started = []
    try:
        for n in range(count):
            options = ["--loop", LOOPS[n % 2], *(extra or [])]
            if hosts:
                options += ["--other-host", f"host-{n}"]
            started.append(Worker(*argv, *options, "--seed", str(n)))
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.kill()


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


@pytest.mark.slow
def test_processes_reconciling_identical_requests_never_share_a_job(
    ledger_url: str, tmp_path: Path
) -> None:
    """4 processes x 40 enqueues of 2 prompts, a quarter cut off after the job was created
    and a tenth before: every caller gets a job of its own, none is orphaned, and only the
    requests that created nothing are sent again."""
    server = tmp_path / "server.jsonl"
    calls = 40
    with workers(
        4,
        "enqueue",
        ledger_url,
        hosts=is_postgres(ledger_url),
        extra=[
            *("--server", str(server), "--calls", str(calls), "--prompts", "2"),
            *("--cut", "0.25", "--dropped", "0.1"),
        ],
    ) as started:
        results = [r for worker in started for r in worker.results()]
    assert len(results) == 4 * calls
    held = Counter(i for r in results for i in r["ids"])
    assert all(len(r["ids"]) == 1 for r in results)
    assert max(held.values()) == 1, "a job was handed to two callers"
    queue = FakeQueue(server)
    prompts = [{"prompt": f"prompt {i}", "resolution": "1024x1024"} for i in range(2)]
    created = {row for p in prompts for row in queue.rows(fingerprint(MODEL, p))}
    assert set(held) == created, "a job was billed that nobody holds"
    fates = Counter(r["fate"] for r in results)
    assert fates["cut"] > 10 and fates["dropped"] > 3
    assert sum(r["resent"] for r in results) == fates["dropped"]

    async def claimed() -> set[str]:
        async with ledger_for(ledger_url) as ledger:
            return set().union(*[await ledger.claimed_ids(fingerprint(MODEL, p)) for p in prompts])

    assert anyio.run(claimed) == created


@pytest.mark.slow
def test_concurrent_claims_across_processes_take_each_id_once(
    ledger_url: str, tmp_path: Path
) -> None:
    """4 processes want 4 jobs each, 12 exist: each is claimed by exactly one."""
    go = tmp_path / "go"
    candidates = [f"job-{n:02d}" for n in range(12)]
    with workers(
        4,
        "claim",
        ledger_url,
        hosts=is_postgres(ledger_url),
        extra=["--go", str(go), "--count", "4", "--candidates", ",".join(candidates)],
    ) as started:
        for worker in started:
            assert worker.line() == {"ready": True}
        go.touch()
        held = [g for worker in started for g in worker.line()["held"]]
        for worker in started:
            worker.finish()
    assert sorted(held) == candidates


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)  # polling: the ledger announces nothing to a judge


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_killed_process_leaves_its_jobs_to_recover(ledger_url: str) -> None:
    """SIGKILL after record_intent: the request is stale once due, and recover() has it;
    SIGKILL after record_ids: its unfinished jobs are orphans at once."""
    answered = Worker("hold", ledger_url, "--ids", "job-a,job-b")
    flying: Worker | None = None
    try:
        answered_id = answered.line()["intent_id"]
        async with ledger_for(ledger_url) as judge:
            # Started last, with the judge already open: from its record_intent to the
            # judgment before its deadline lie two kills and three queries (milliseconds,
            # seconds on a machine at its limit), against a 3 s deadline.
            flying = Worker("hold", ledger_url, "--deadline-in", "3.0")
            flying_id = flying.line()["intent_id"]
            assert await judge.unfinished(orphaned_only=True) == []
            flying.kill()
            answered.kill()
            orphans = {i.intent_id: i for i in await judge.unfinished(orphaned_only=True)}
            assert set(orphans) == {flying_id, answered_id}
            assert orphans[answered_id].pending == ("job-a", "job-b")
            assert orphans[flying_id].state == "in_flight"
            assert await judge.take_over(flying_id) is None  # its request may still land

            async def due() -> bool:
                return [i.intent_id for i in await judge.stale_intents()] == [flying_id]

            await wait_for(due)
            taken = await judge.take_over(flying_id)
            assert taken is not None and taken.state == "lost"
            assert await judge.stale_intents() == []
            await judge.mark_settled(flying_id, "never_created")
            kept = await judge.take_over(answered_id)
            assert kept is not None and kept.pending == ("job-a", "job-b")
            assert await judge.unfinished(orphaned_only=True) == []
    finally:
        for worker in (flying, answered):
            if worker is not None and worker.process.poll() is None:
                worker.kill()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_live_process_is_never_judged_gone(ledger_url: str) -> None:
    """Past its deadline but alive: not stale. Closed cleanly: gone at once."""
    worker = Worker("hold", ledger_url, "--deadline-in", "-1", "--exit-after", "0.8")
    try:
        intent_id = worker.line()["intent_id"]
        async with ledger_for(ledger_url) as judge:
            found = await judge.intent(intent_id)
            assert found is not None and found.owner_alive and found.expired
            assert await judge.stale_intents() == []
            assert await judge.take_over(intent_id) is None
            await anyio.to_thread.run_sync(worker.finish)
            assert [i.intent_id for i in await judge.stale_intents()] == [intent_id]
    finally:
        if worker.process.poll() is None:
            worker.kill()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_killed_client_on_another_host_is_gone_when_its_lease_runs_out(
    ledger_url: str,
) -> None:
    worker = Worker(
        "hold", ledger_url, "--deadline-in", "-1", "--other-host", "b", "--lease-ttl", "1.0"
    )
    try:
        intent_id = worker.line()["intent_id"]
        async with ledger_for(ledger_url) as judge:
            await anyio.sleep(1.4)  # past one lease: alive only by renewing it
            found = await judge.intent(intent_id)
            assert found is not None and found.owner_alive
            assert found.owner.host == "b"
            worker.kill()
            killed_at = time.monotonic()
            assert await judge.stale_intents() == []  # its lease still runs

            async def gone() -> bool:
                return bool(await judge.stale_intents())

            await wait_for(gone)
            # Its 1 s lease, not the default 30 s one: 10 s tells them apart on a busy machine.
            assert time.monotonic() - killed_at < 10.0
    finally:
        if worker.process.poll() is None:
            worker.kill()
