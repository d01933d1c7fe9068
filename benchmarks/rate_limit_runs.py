"""Run ``tests/test_rate_limit.py``'s burst many times, optionally beside a busy CPU, and
print each run's figures and the test's verdict on it.

The test judges the settled phase only (the enqueues sent after the pacer's first cut), so
that its verdict does not depend on how busy the machine is. This script is the evidence::

    uv run python benchmarks/rate_limit_runs.py -n 20 --hog    # a process spins a CPU meanwhile
    uv run python benchmarks/rate_limit_runs.py -n 20 --backend trio

The exit status is 1 if any run fails the test's assertions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_rate_limit import burst_against_a_limit, misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="runs")
    parser.add_argument("--hog", action="store_true", help="keep a CPU busy meanwhile")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.hog else None
    failed = 0
    try:
        load = os.getloadavg()
        print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f}, hog: {bool(hog)}")
        for run in range(1, args.n + 1):
            burst = anyio.run(burst_against_a_limit, backend=args.backend)
            missed = misses(burst)
            failed += bool(missed)
            outcome = "FAIL " + ", ".join(missed) if missed else "pass"
            print(f"{run:3d} {outcome}: {burst.line()}", flush=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    load = os.getloadavg()
    print(f"{args.n - failed}/{args.n} passed; load average after {load[0]:.2f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
