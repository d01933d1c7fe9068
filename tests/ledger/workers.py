"""Worker processes for the multi-process ledger tests: ``python -m tests.ledger.workers``.

Commands (each prints JSON lines on stdout):

``enqueue``
    Makes ``--calls`` enqueues against a fake queue shared through a file, with answers lost
    after or before the job was created, and reconciles each lost one through the ledger,
    the way the client does: wait for the fingerprint's other requests, list the rows,
    drop the claimed ids, claim what remains, or resend when nothing remains. Prints
    ``{"ids": [...], "resent": n}`` per call.
``claim``
    Records an intent, marks it lost, prints ``{"ready": true}``, waits for a go file to
    appear, claims the given candidates and prints ``{"held": [...]}``.
``hold``
    Records an intent (answered with ``--ids``, else in flight), prints
    ``{"intent_id": ...}`` and sleeps until killed (or closes cleanly after ``--exit-after``
    seconds).

``--other-host NAME`` makes the worker stand in for a client on another host: other
processes then judge it by its lease, not its PID.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from oxen_queue._ledger import InFlightError, Owner, fingerprint, open_ledger
from oxen_queue._ledger._sqlledger import SqlLedger

MODEL = "gpt-image-2"


class FakeQueue:
    """The server's rows, shared by processes: one JSON line per job, appended under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, fp: str, count: int) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(count)]
        with self.path.open("a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.write("".join(json.dumps({"id": i, "fp": fp}) + "\n" for i in ids))
        return ids

    def rows(self, fp: str) -> list[str]:
        """The jobs of a fingerprint, oldest first."""
        with self.path.open("a+") as file:
            fcntl.flock(file, fcntl.LOCK_SH)
            file.seek(0)
            lines = file.read().splitlines()
        return [row["id"] for row in map(json.loads, lines) if row["fp"] == fp]


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def make_ledger(args: argparse.Namespace) -> SqlLedger:
    owner = None
    if args.other_host:
        owner = Owner(
            client_id=uuid.uuid4().hex,
            host=args.other_host,
            host_key=f"fake-machine-{args.other_host}",
            pid=os.getpid(),
            start_token="",
        )
    ledger = open_ledger(args.url, owner=owner, lease_ttl=args.lease_ttl, poll_interval=0.01)
    assert ledger is not None
    return ledger


async def enqueue_once(
    ledger: SqlLedger, queue: FakeQueue, params: dict[str, Any], fate: str
) -> dict[str, Any]:
    """One enqueue through the ledger; ``fate``: ``ok``, ``cut`` (created, answer lost) or
    ``dropped`` (never created, answer lost)."""
    fp = fingerprint(MODEL, params)
    resent = 0
    while True:
        intent_id = await ledger.record_intent(
            model=MODEL, params=params, count=1, deadline=time.time() + 60
        )
        created = [] if fate == "dropped" else await anyio.to_thread.run_sync(queue.create, fp, 1)
        if fate == "ok":
            assert await ledger.record_ids(intent_id, created) == []
            return {"ids": created, "resent": resent}
        await ledger.mark_lost(intent_id)
        while True:
            busy = await ledger.wait_idle(fp, exclude_intent=intent_id, timeout=30)
            assert not busy, busy
            rows = await anyio.to_thread.run_sync(queue.rows, fp)
            claimed = await ledger.claimed_ids(fp)
            candidates = [row for row in rows if row not in claimed]
            if not candidates:
                await ledger.mark_settled(intent_id, "resent")
                break
            try:
                held = await ledger.claim(intent_id, candidates)
            except InFlightError:
                continue
            if held:
                return {"ids": held, "resent": resent}
        # Shown never to have created a job (every row is someone else's): send again,
        # and this time let the answer arrive.
        resent += 1
        fate = "ok"


async def run_enqueue(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    queue = FakeQueue(Path(args.server))
    prompts = [{"prompt": f"prompt {i}", "resolution": "1024x1024"} for i in range(args.prompts)]
    plans = []
    for _ in range(args.calls):
        draw = rng.random()
        fate = "cut" if draw < args.cut else "dropped" if draw < args.cut + args.dropped else "ok"
        plans.append((rng.choice(prompts), fate))
    limiter = anyio.Semaphore(args.concurrency)
    async with make_ledger(args) as ledger:

        async def one(params: dict[str, Any], fate: str) -> None:
            async with limiter:
                with anyio.fail_after(60):
                    result = await enqueue_once(ledger, queue, params, fate)
            emit({**result, "fate": fate})

        async with anyio.create_task_group() as tg:
            for params, fate in plans:
                tg.start_soon(one, params, fate)


async def run_claim(args: argparse.Namespace) -> None:
    async with make_ledger(args) as ledger:
        intent_id = await ledger.record_intent(
            model=MODEL, params={"prompt": "same"}, count=args.count, deadline=time.time() + 60
        )
        await ledger.mark_lost(intent_id)
        emit({"ready": True})
        go = Path(args.go)
        while not await anyio.to_thread.run_sync(go.exists):
            await anyio.sleep(0.002)  # polling: the start signal is a file
        while True:
            try:
                held = await ledger.claim(intent_id, args.candidates.split(","))
                break
            except InFlightError:  # another worker not yet marked lost: cannot happen here
                await anyio.sleep(0.01)  # (a retry, never reached)
        emit({"held": held})


async def run_hold(args: argparse.Namespace) -> None:
    async with make_ledger(args) as ledger:
        intent_id = await ledger.record_intent(
            model=MODEL,
            params={"prompt": "held"},
            count=max(1, len(args.ids.split(","))) if args.ids else 1,
            deadline=time.time() + args.deadline_in,
        )
        if args.ids:
            await ledger.record_ids(intent_id, args.ids.split(","))
        emit({"intent_id": intent_id, "client_id": ledger.owner.client_id})
        await anyio.sleep(args.exit_after)  # the behaviour: alive this long, then gone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["enqueue", "claim", "hold"])
    parser.add_argument("url")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--other-host", default="")
    parser.add_argument("--lease-ttl", type=float, default=30.0)
    # enqueue
    parser.add_argument("--server", default="")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=1)
    parser.add_argument("--cut", type=float, default=0.2)
    parser.add_argument("--dropped", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    # claim
    parser.add_argument("--go", default="")
    parser.add_argument("--candidates", default="")
    parser.add_argument("--count", type=int, default=1)
    # hold
    parser.add_argument("--ids", default="")
    parser.add_argument("--deadline-in", type=float, default=60.0)
    parser.add_argument("--exit-after", type=float, default=3600.0)
    args = parser.parse_args()
    command = {"enqueue": run_enqueue, "claim": run_claim, "hold": run_hold}[args.command]
    anyio.run(command, args, backend=args.loop)


if __name__ == "__main__":
    main()
