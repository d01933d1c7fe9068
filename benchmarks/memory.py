"""What a pending generation costs: memory and CPU when thousands are in flight in one process.

Measured the way issue 13's harness measures it: one client process fires
``asyncio.gather(*(client.enqueue(...) for _ in range(n)))``, then awaits every generation;
the memory figure is the growth of the process's peak RSS over the whole burst and wait,
divided by ``n``. The emulator runs in another process, on a manual clock, so every job is
still pending while all ``n`` are awaited (the most that is ever held at once), and then
finishes at once when the clock is advanced: the worst case, and the same in every run.

Printed: peak RSS growth per generation, client CPU per generation (enqueue to the last
completion), wall times, and how many resolved. ``--where`` adds a tracemalloc breakdown of
what is held at the peak, by source line (tracing slows the run; its figures are separate).

Run::

    uv run python benchmarks/memory.py                # 10,000 generations
    uv run python benchmarks/memory.py -n 100000      # 100,000 pending in one process
    uv run python benchmarks/memory.py --where        # where the bytes go

The exit status is 1 when a target of issue 13 is missed: at most 4 KB per pending
generation, and every one resolved.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import httpx

KEY = "benchmark-key"
TARGET_KB = 4.0
SERVER = """
import sys, threading
from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock
config = EmulatorConfig(queue_delay=(0.0, 0.0), image_duration=(5.0, 5.0), seed=1)
with Emulator(config=config, clock=ManualClock(), port=int(sys.argv[1])) as emu:
    print(emu.base_url, flush=True)
    threading.Event().wait()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Make the kernel's peak RSS (VmHWM) start again from the current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


async def run(base_url: str, count: int, where: bool) -> dict[str, Any]:
    from oxen_queue import AsyncClient

    admin = httpx.AsyncClient(base_url=base_url, timeout=60)
    async with AsyncClient(api_key=KEY, base_url=base_url) as client:
        # Warm: imports, the event stream, connections, the adaptive bound's first rounds.
        warm = await asyncio.gather(
            *(client.enqueue("gpt-image-2", prompt=f"warm {i}") for i in range(200))
        )
        (await admin.post("/_emulator/clock", json={"advance": 60})).raise_for_status()
        await asyncio.gather(*warm)
        del warm
        gc.collect()
        if where:
            tracemalloc.start()
        if not _reset_peak():
            raise SystemExit("needs Linux's /proc/self/clear_refs to measure peak RSS")
        base_rss = _status_kb("VmRSS")
        snapshots: dict[str, tracemalloc.Snapshot] = {}
        phase = "burst"
        phase_peaks: dict[str, int] = {}

        async def sample_rss() -> None:  # the phase in which the peak falls
            while True:
                rss = _status_kb("VmRSS")
                phase_peaks[phase] = max(phase_peaks.get(phase, 0), rss - base_rss)
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample_rss())

        async def during_burst() -> None:
            await asyncio.sleep(0.3)  # every enqueue waiting for its turn, few answered
            snapshots["during the burst"] = tracemalloc.take_snapshot()

        cpu, started = time.process_time(), time.monotonic()
        if where:
            burst = asyncio.ensure_future(during_burst())
        generations = await asyncio.gather(
            *(client.enqueue("gpt-image-2", prompt=f"memory {i}") for i in range(count))
        )
        enqueued = time.monotonic()
        phase = "awaiting"
        waiting = asyncio.ensure_future(asyncio.gather(*generations, return_exceptions=True))
        await asyncio.sleep(0.5)  # every generation awaited, every job still pending
        if where:
            await burst
            snapshots["all awaited"] = tracemalloc.take_snapshot()
        pending = len(client.pending)
        phase = "completing"
        (await admin.post("/_emulator/clock", json={"advance": 60})).raise_for_status()
        results = await waiting
        resolved = time.monotonic()
        cpu = time.process_time() - cpu
        peak_rss = _status_kb("VmHWM")
        sampler.cancel()
    await admin.aclose()
    failed = sum(isinstance(r, BaseException) for r in results)
    figures: dict[str, Any] = {
        "count": count,
        "peak_kb_per_gen": (peak_rss - base_rss) / count,
        "cpu_ms_per_gen": cpu * 1000 / count,
        "enqueue_s": enqueued - started,
        "total_s": resolved - started,
        "pending_at_peak": pending,
        "resolved": len(results) - failed,
        "failed": failed,
        "phase_kb_per_gen": {k: v / count for k, v in phase_peaks.items()},
    }
    figures["where"] = {}
    for moment, snapshot in snapshots.items():
        stats = snapshot.statistics("lineno")
        figures["where"][moment] = {
            "kb_per_gen": sum(stat.size for stat in stats) / count / 1024,
            "lines": [
                (str(stat.traceback), stat.size / count, stat.count / count) for stat in stats[:20]
            ],
        }
    return figures


def child(base_url: str, count: int, where: bool) -> None:
    import oxen_queue  # noqa: F401  (imports happen once per process, not per generation)

    print(json.dumps(asyncio.run(run(base_url, count, where))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=10_000, help="generations")
    parser.add_argument("--where", action="store_true", help="tracemalloc breakdown (slower)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.where)
        return
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        load = os.getloadavg()
        command = [sys.executable, __file__, "--child", base_url, "-n", str(args.n)]
        if args.where:
            command.append("--where")
        output = subprocess.run(command, check=True, capture_output=True, text=True)
        figures = json.loads(output.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"{figures['count']:,} generations fired at once with asyncio.gather, then all awaited "
        f"({figures['pending_at_peak']:,} pending at once); emulator in another process; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f}\n"
    )
    print(f"peak RSS growth:  {figures['peak_kb_per_gen']:.2f} KB per generation")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in figures["phase_kb_per_gen"].items())
    print(f"  (RSS growth sampled in each phase, KB per generation: {phases})")
    print(f"client CPU:       {figures['cpu_ms_per_gen']:.2f} ms per generation")
    print(f"all enqueued in   {figures['enqueue_s']:.1f} s")
    print(f"all resolved in   {figures['total_s']:.1f} s")
    print(f"resolved:         {figures['resolved']:,} ({figures['failed']} failed)")
    for moment, traced in figures["where"].items():
        print(f"\ntraced {moment}: {traced['kb_per_gen']:.2f} KB per generation")
        for line, size, number in traced["lines"]:
            print(f"  {size:7.0f} B/gen  {number:5.2f} objects/gen  {line}")
    resolved = figures["resolved"] == figures["count"]
    if args.where:  # tracing holds a record of every allocation: RSS is not judged
        print(f"\n{'PASS' if resolved else 'FAIL'}  every one resolved (traced: RSS not judged)")
        ok = resolved
    else:
        ok = figures["peak_kb_per_gen"] <= TARGET_KB and resolved
        print(
            f"\n{'PASS' if ok else 'FAIL'}  <= {TARGET_KB:g} KB per pending generation, "
            "every one resolved"
        )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
