"""What a cold start costs: the SDK against plain httpx doing the same job, each in a fresh process.

A CLI command or a serverless function pays it on every run: start Python, import, open a
client, enqueue one generation, wait for it, close. Each sample is a fresh process running
``benchmarks/_cold_start_child.py`` (see there for what each variant does) against one
emulator, which runs in another process for the whole run (it is not imported by the
samples). The variants take turns (httpx, sdk, ..., httpx, sdk, ...), so a change in the
machine's load falls on all of them alike.

Measured per sample, by the parent, from the child's own accounting (``os.wait4``): CPU time
(user + system, interpreter start-up included) and peak RSS. Printed: the median of each
over the repetitions, each variant's ratio to plain httpx, and the median CPU at the end of
each phase the child reports (import, open, done, close), with the machine's CPU count and
load average before and after.

Run::

    uv run python benchmarks/cold_start.py            # 15 repetitions of each variant
    uv run python benchmarks/cold_start.py -n 31 --variants httpx sdk
    uv run python benchmarks/cold_start.py --library trio   # every variant on trio

The exit status is 1 when the SDK (``async with AsyncClient()``, the ``sdk`` variant) costs
more than 1.25 times the CPU of plain httpx (issue 16's target), or a job did not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

CHILD: Final = Path(__file__).with_name("_cold_start_child.py")
TARGET: Final = 1.25  # the SDK's CPU over plain httpx's (issue 16)
PHASES: Final = ("import", "open", "done", "close", "exit")
# Jobs finish in 0.3 s: long enough that waiting is part of the job (a few polls, one
# event), short enough for many samples.
SERVER: Final = """
import sys, threading
from oxen_queue.testing import Emulator, EmulatorConfig
config = EmulatorConfig(queue_delay=(0.1, 0.1), image_duration=(0.2, 0.2), seed=1,
                        unrelated_event_rate=0.0)
with Emulator(config=config, port=int(sys.argv[1])) as emu:
    print(emu.base_url, flush=True)
    threading.Event().wait()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample(variant: str, base_url: str, library: str) -> dict[str, Any]:
    """One cold start in a fresh process: its CPU seconds, peak RSS (KB) and phases."""
    # Nothing of this process's environment that would change what the child imports.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OXEN_", "PYTHON"))}
    with tempfile.TemporaryFile() as errors:
        # Not Popen.wait(): os.wait4 reaps the child and returns its own resource usage.
        child = subprocess.Popen(
            [sys.executable, str(CHILD), variant, base_url, library],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
        )
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        err = errors.read().decode(errors="replace")
    if code != 0 or err.strip():  # a warning at exit counts as a failure too
        raise SystemExit(f"{variant}: exit status {code}\n{err}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_kb": usage.ru_maxrss,  # KB on Linux
        "status": report["status"],
        "phases": report["cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=15, help="repetitions of each variant")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["httpx", "sdk", "sdk-lazy", "sdk-poll"],
        choices=["httpx", "sdk", "sdk-lazy", "sdk-poll"],
        help="which to run (httpx, the reference, is always run)",
    )
    parser.add_argument(
        "--library",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the event loop every variant runs on (default: asyncio)",
    )
    args = parser.parse_args()
    variants = ["httpx", *(v for v in args.variants if v != "httpx")]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        load_before = os.getloadavg()
        for variant in variants:  # warm the OS's file cache: the first start reads from disk
            sample(variant, base_url, args.library)
        for _ in range(args.n):
            for variant in variants:
                samples[variant].append(sample(variant, base_url, args.library))
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(
        f"cold start: import, open a client, one generation (0.3 s on an emulator in another "
        f"process), close, on {args.library}; median of {args.n} fresh processes per variant, "
        "taking turns\n"
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; Python {sys.version.split()[0]}\n"
    )
    reference = statistics.median(s["cpu"] for s in samples["httpx"])
    reference_rss = statistics.median(s["rss_kb"] for s in samples["httpx"])
    header = "".join(f"{p:>9}" for p in PHASES)
    print(f"{'variant':10} {'CPU ms':>8} {'ratio':>6} {'peak RSS':>10} {'ratio':>6}   CPU ms at")
    print(f"{'':44}{header}")
    ratios: dict[str, float] = {}
    for variant in variants:
        runs = samples[variant]
        cpu = statistics.median(s["cpu"] for s in runs)
        rss = statistics.median(s["rss_kb"] for s in runs)
        ratios[variant] = cpu / reference
        phases = "".join(
            f"{statistics.median(s['phases'][p] for s in runs) * 1000:9.0f}" for p in PHASES
        )
        print(
            f"{variant:10} {cpu * 1000:8.0f} {cpu / reference:6.2f} {rss / 1024:7.1f} MB "
            f"{rss / reference_rss:6.2f}  {phases}"
        )
    failed = [v for v in variants for s in samples[v] if s["status"] != "succeeded"]
    ok = not failed and ratios.get("sdk", 0.0) <= TARGET
    print(
        f"\n{'PASS' if ok else 'FAIL'}  the SDK's cold start <= {TARGET:g}x the CPU of plain "
        f"httpx ({ratios.get('sdk', float('nan')):.2f}x), every job succeeded"
        + (f" (not: {', '.join(failed)})" if failed else "")
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
