"""The chaos suite at full size: 500 generations with every fault switched on at once.

Faults (as the issue sets them): 5 % of enqueues refused with 429 and a 1 s Retry-After, 3 %
with 503, 3 % cut off after the job was created; 5 % of status reads answering 500, 3 % 429,
2 % cut off; the event stream dropped every 2 s; 10 % of completion events never sent.
A tenth of the requests carry a bad parameter sent unchecked (they fail when they run) and a
twentieth are cancelled soon after enqueueing, so every final state is exercised.

Prints what went wrong (lost, duplicated, orphaned, wrong outcome, enqueue errors: all zeros is
the goal) and what it took (retries, reconciled enqueues, faults injected). Exits 1 unless clean.

Run::

    uv run python benchmarks/chaos.py            # 500 generations
    uv run python benchmarks/chaos.py -n 2000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario lives in tests/

from tests.chaos import describe, run_chaos

from oxen_queue.testing import Emulator, EmulatorConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="generations")
    parser.add_argument("--time-scale", type=float, default=0.2, help="job duration factor")
    args = parser.parse_args()
    config = EmulatorConfig(time_scale=args.time_scale, seed=2026)
    with Emulator(config=config) as emulator:
        report = anyio.run(
            lambda: run_chaos(emulator, count=args.n, retry_after=1.0, drop_every=2.0)
        )
    print(describe(report))
    print("CLEAN" if report.clean else "NOT CLEAN")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
