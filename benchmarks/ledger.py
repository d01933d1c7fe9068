"""What the enqueue ledger adds to each enqueue: no ledger, SQLite, PostgreSQL, in one run.

Per enqueue, the client records the intent before the request, the ids when the answer
arrives, and the outcome when the generation ends: ``record_intent`` + ``record_ids`` +
``record_outcome``. This measures the wall time those three awaits take in the caller
(latency added to the enqueue path), sequentially and with 64 enqueues at once, and the
client CPU each enqueue costs. At 64 at once, each enqueue's latency includes waiting for
the other 63 (one connection serves them in turn); "64x wall/enq." is the time the whole
burst took divided by its enqueues, what the ledger adds to a batch. "no ledger" awaits three
no-op coroutines: the floor.

SQLite runs on a file in a fresh temporary directory (WAL, ``synchronous=NORMAL``; the
``synchronous=full`` row syncs every commit). PostgreSQL is a throwaway cluster with its
default durability (fsync on, synchronous commit) on 127.0.0.1, made with initdb and pg_ctl
as in the tests; ``--postgres-url`` uses an existing server instead. Target: under 1 ms per
enqueue with SQLite (intent + ids, sequential mean); the script exits 1 if missed.

Then the same through the client: an ``AsyncClient`` enqueueing one request after another
against the emulator (in a process of its own), with no ledger, SQLite and PostgreSQL, in one
run. The difference in wall time per enqueue is what the ledger adds to the caller's await.

Run::

    uv run python benchmarks/ledger.py            # 2,000 enqueues per row
    uv run python benchmarks/ledger.py -n 500 --loop trio
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the cluster helper is in tests/

from tests.ledger.pgcluster import start_cluster

from oxen_queue._ledger import open_ledger
from oxen_queue._ledger._sqlledger import SqlLedger

PARAMS = {
    "prompt": "A lighthouse on a basalt cliff at dusk, waves breaking, long exposure, 35 mm",
    "resolution": "1920x1080",
    "quality": "high",
    "output_format": "png",
}
CONCURRENCY = 64


@dataclass
class Row:
    name: str
    sequential: list[float]  # seconds per enqueue: intent + ids + outcome
    sequential_write_ahead: list[float]  # intent + ids only
    concurrent: list[float]
    concurrent_wall: float  # seconds for all the concurrent enqueues, divided by their number
    cpu_per_enqueue: float  # seconds of client CPU, sequential run

    def cells(self) -> list[str]:
        def ms(values: list[float], q: float | None = None) -> str:
            if q is None:
                return f"{statistics.fmean(values) * 1000:.3f}"
            return f"{statistics.quantiles(values, n=100)[int(q) - 1] * 1000:.3f}"

        return [
            self.name,
            ms(self.sequential, 50),
            ms(self.sequential, 99),
            ms(self.sequential),
            ms(self.sequential_write_ahead),
            ms(self.concurrent, 50),
            ms(self.concurrent, 99),
            ms(self.concurrent),
            f"{self.concurrent_wall * 1000:.3f}",
            f"{self.cpu_per_enqueue * 1000:.3f}",
        ]


HEADER = [
    "ledger",
    "seq p50",
    "seq p99",
    "seq mean",
    "seq intent+ids",
    "64x p50",
    "64x p99",
    "64x mean",
    "64x wall/enq.",
    "CPU/enqueue",
]


class NoLedger:
    """The floor: three awaits that do nothing."""

    async def record_intent(self, **_: object) -> str:
        return "intent"

    async def record_ids(self, intent_id: str, ids: list[str]) -> list[str]:
        return []

    async def record_outcome(self, generation_id: str, status: str) -> bool:
        return True


Ledgerish = SqlLedger | NoLedger


async def enqueue(ledger: Ledgerish) -> tuple[float, float]:
    """One enqueue's ledger calls: (all three, intent + ids), in seconds."""
    generation_id = uuid.uuid4().hex
    started = time.perf_counter()
    intent_id = await ledger.record_intent(
        model="gpt-image-2", params=PARAMS, count=1, deadline=time.time() + 60
    )
    # (the POST /api/ai/queue would be in flight here)
    await ledger.record_ids(intent_id, [generation_id])
    answered = time.perf_counter()
    await ledger.record_outcome(generation_id, "succeeded")
    return time.perf_counter() - started, answered - started


async def measure(name: str, ledger: Ledgerish, count: int) -> Row:
    for _ in range(min(100, count)):  # warm up: connections, statement caches
        await enqueue(ledger)
    sequential, write_ahead = [], []
    cpu = time.process_time()
    for _ in range(count):
        total, first_two = await enqueue(ledger)
        sequential.append(total)
        write_ahead.append(first_two)
    cpu_per_enqueue = (time.process_time() - cpu) / count
    concurrent: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            total, _ = await enqueue(ledger)
            concurrent.append(total)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(worker, max(1, count // CONCURRENCY))
    wall = (time.perf_counter() - started) / len(concurrent)
    return Row(name, sequential, write_ahead, concurrent, wall, cpu_per_enqueue)


async def measure_url(name: str, url: str, count: int, *, pool_size: int | None = None) -> Row:
    ledger = open_ledger(url, pool_size=pool_size)
    assert ledger is not None
    async with ledger:
        return await measure(name, ledger, count)


def table(rows: list[Row]) -> str:
    cells = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = [
        "| "
        + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        + " |"
        for line in cells
    ]
    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])


@dataclass
class ClientRow:
    name: str
    wall: float  # seconds per enqueue, one after another
    cpu: float  # client CPU seconds per enqueue


async def measure_client(name: str, base_url: str, ledger: str | None, count: int) -> ClientRow:
    """``count`` enqueues, one after another, through a client with ``ledger``."""
    from oxen_queue import AsyncClient  # imported here: the table above needs no client

    async with AsyncClient(
        api_key="ledger-bench",
        base_url=base_url,
        ledger=ledger,
        completion="shared",
        shared_poll_interval=3600.0,  # nothing is watched: the enqueue path alone
    ) as client:
        for i in range(20):  # warm: connections, the event-free path, the ledger's schema
            await client.enqueue("gpt-image-2", prompt=f"warm {i}", extra_params=REST)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            await client.enqueue("gpt-image-2", prompt=f"{name} {i}", extra_params=REST)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return ClientRow(name, wall / count, cpu / count)


REST = {k: v for k, v in PARAMS.items() if k != "prompt"}  # sent as given
_EMULATOR = (
    "import sys\n"
    "from oxen_queue.testing import run_server\n"
    "run_server(port=int(sys.argv[1]), log_level='warning')\n"
)


async def client_rows(count: int, postgres_url: str) -> list[ClientRow]:
    port = _free_port()
    emulator = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is measured
        [sys.executable, "-c", _EMULATOR, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        await _wait_for(port)
        rows = [await measure_client("no ledger", base_url, None, count)]
        with tempfile.TemporaryDirectory(prefix="oxen-ledger-bench-") as tmp:
            rows.append(await measure_client("sqlite", base_url, f"sqlite://{tmp}/l.db", count))
        if postgres_url:
            rows.append(await measure_client("postgresql", base_url, postgres_url, count))
        return rows
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_for(port: int) -> None:
    with anyio.fail_after(30):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


def client_table(rows: list[ClientRow]) -> str:
    floor = rows[0].wall
    lines = [
        "| client, one enqueue after another | wall per enqueue | added by the ledger "
        "| client CPU per enqueue |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        added = "-" if row is rows[0] else f"{(row.wall - floor) * 1000:+.3f} ms"
        lines.append(
            f"| {row.name} | {row.wall * 1000:.3f} ms | {added} | {row.cpu * 1000:.3f} ms |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> tuple[list[Row], list[ClientRow]]:
    rows = [await measure("no ledger", NoLedger(), args.n)]
    with tempfile.TemporaryDirectory(prefix="oxen-ledger-bench-") as tmp:
        for name, url in (
            ("sqlite", f"sqlite://{tmp}/normal.db"),
            ("sqlite synchronous=full", f"sqlite://{tmp}/full.db?synchronous=full"),
        ):
            rows.append(await measure_url(name, url, args.n))
    cluster = None
    url = args.postgres_url
    if not url:
        cluster = await anyio.to_thread.run_sync(lambda: start_cluster(durable=True))
        if cluster is None:
            print("PostgreSQL is not installed: no postgresql row (apt-get install postgresql)")
        else:
            url = cluster.url()
            print(f"throwaway PostgreSQL started in {cluster.startup_seconds:.2f} s")
    try:
        if url:
            for pool in (1, 4):
                name = f"postgresql, {pool} conn."
                rows.append(await measure_url(name, url, args.n, pool_size=pool))
        clients = await client_rows(args.n, url)
    finally:
        if cluster is not None:
            cluster.stop()
    return rows, clients


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="enqueues per row and mode")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--postgres-url", default="", help="an existing server instead")
    args = parser.parse_args()
    rows, clients = anyio.run(main_async, args, backend=args.loop)
    print(
        f"\n{args.n} enqueues per row, {args.loop}; milliseconds added per enqueue "
        "(record_intent + record_ids + record_outcome unless noted)\n"
    )
    print(table(rows))
    print("\nthe same through an AsyncClient, against the emulator in another process:\n")
    print(client_table(clients))
    sqlite = statistics.fmean(rows[1].sequential_write_ahead) * 1000
    added = (clients[1].wall - clients[0].wall) * 1000
    verdict = "PASS" if sqlite < 1.0 and added < 1.0 else "FAIL"
    print(
        f"\ntarget: under 1 ms added per enqueue with SQLite: {sqlite:.3f} ms in the ledger, "
        f"{added:+.3f} ms through the client, {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
