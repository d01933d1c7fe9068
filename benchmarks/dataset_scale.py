"""``oxen-queue batch`` at dataset scale: a million-line dry run, and a real run's overhead.

Issue 17's targets, on this project's 2-core machine: ``batch --dry-run`` prices a
1,000,000-line prompts file (plain and JSON lines mixed) in at most 120 s with at most 300 MB
of peak RSS; a real run's own cost per line (reading, the index, the manifest, the display)
stays well under the SDK's cost per enqueue.

What is measured, each command in a child process of its own (peak RSS and CPU from
``os.wait4``, the child's own ``getrusage``), against an emulator in another process:

1. ``batch FILE --dry-run`` on the million-line file: wall time, peak RSS, CPU; then again
   with a manifest recording every line as enqueued (a resumed run's index at its largest).
2. ``batch FILE`` on a 2,000-line file (jobs finish at once: ``time_scale`` 0), piped:
   wall time, peak RSS, CPU per line; twice, alternated with (3), keeping the least CPU.
3. The same 2,000 requests made by the SDK alone (``run_batch``, with the same SQLite
   ledger the CLI keeps, each result downloaded into a directory): CPU per line. The CLI's
   overhead per line is (2) minus (3).

Run::

    uv run python benchmarks/dataset_scale.py                 # 1,000,000 lines, 2,000 sent
    uv run python benchmarks/dataset_scale.py --lines 100000  # a quicker look

The exit status is 1 when a target is missed (the dry run's time or memory, or an overhead
per line above a quarter of the SDK's cost per line).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from argparse import SUPPRESS
from pathlib import Path
from typing import Any

KEY = "benchmark-key"
DRY_RUN_SECONDS = 120.0
DRY_RUN_MB = 300.0
OVERHEAD_SHARE = 0.25  # of the SDK's own CPU per line, at most
SERVER = """
import sys, threading
from oxen_queue.testing import Emulator, EmulatorConfig
config = EmulatorConfig(time_scale=0.0, seed=1, unrelated_event_rate=0)
with Emulator(config=config, port=int(sys.argv[1])) as emu:
    print(emu.base_url, flush=True)
    threading.Event().wait()
"""
SDK_ALONE = """
import sys, anyio
from pathlib import Path
from oxen_queue import AsyncClient, run_batch
from oxen_queue._cli._prompts import read_prompts

async def main(prompts: str, out: str, concurrency: int) -> None:
    lines = read_prompts(Path(prompts))
    # The ledger the CLI keeps beside its manifest: the SDK's cost, not the CLI's.
    async with AsyncClient(ledger=f"sqlite:///{Path(out).resolve()}/ledger.db") as client:
        async def save(item):
            if item.record is not None:
                await client.download(item.record, out + "/")
        await run_batch(
            client, "gpt-image-2",
            [{**line.params} for line in lines],
            concurrency=concurrency, on_finished=save,
        )

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""
SUBJECTS = ("an ox", "a river", "a lighthouse", "a city at night", "a forest", "a robot")
STYLES = ("watercolour", "photorealistic", "pixel art", "oil painting", "ink sketch")
SIZES = ("1024x1024", "1024x768", "1920x1080", "2560x1440")
QUALITIES = ("low", "medium", "high")


def make_prompts(path: Path, lines: int, *, seed: int = 17) -> None:
    """``lines`` requests: about two in three plain prompts, one in three JSON lines with
    their own size and quality, a comment now and then; every prompt distinct."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as file:
        for number in range(lines):
            prompt = (
                f"{rng.choice(SUBJECTS)} in {rng.choice(STYLES)}, scene {number}, "
                f"{'detailed ' * rng.randint(0, 6)}light"
            )
            if number % 1000 == 0:
                file.write("# a comment\n")
            if rng.random() < 0.34:
                params = {
                    "prompt": prompt,
                    "resolution": rng.choice(SIZES),
                    "quality": rng.choice(QUALITIES),
                }
                file.write(json.dumps(params) + "\n")
            else:
                file.write(prompt + "\n")


def write_manifest(prompts: Path, out: Path) -> None:
    """A manifest recording every request of ``prompts`` as enqueued (what a run killed
    after sending them all leaves): the index a resumed run holds, at its largest."""
    from oxen_queue._cli._manifest import Manifest
    from oxen_queue._cli._prompts import PromptsReader

    out.mkdir()
    manifest = Manifest(out / "manifest.jsonl")
    for number, line in enumerate(PromptsReader(str(prompts)).requests()):
        manifest.append(
            line, generation_id=f"00000000-0000-4000-8000-{number:012d}", status="queued"
        )
    manifest.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measured(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a child to its end: wall seconds, peak RSS (MB), CPU seconds, exit status."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    assert process.stderr is not None
    stderr = process.stderr.read()
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # kilobytes on Linux
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "status": process.returncode,
        "stderr": stderr[-2000:],
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="dry run's prompts")
    parser.add_argument("--sent", type=int, default=2_000, help="real run's prompts")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="real runs of each kind")
    parser.add_argument("--write-manifest", nargs=2, metavar=("PROMPTS", "OUT"), help=SUPPRESS)
    args = parser.parse_args()
    if args.write_manifest:
        prompts, out = args.write_manifest
        write_manifest(Path(prompts), Path(out))
        return 0
    cli = [sys.executable, "-c", "from oxen_queue._cli import main; raise SystemExit(main())"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        env = {**os.environ, "OXEN_BASE_URL": base_url, "OXEN_API_KEY": KEY}
        env.pop("OXEN_LEDGER", None)
        with tempfile.TemporaryDirectory(prefix="oxen-batch-bench-") as scratch:
            root = Path(scratch)
            big, small = root / "million.txt", root / "sent.txt"
            make_prompts(big, args.lines)
            make_prompts(small, args.sent, seed=18)
            size_mb = big.stat().st_size / 2**20
            print(f"load before: {load()}")
            dry = measured([*cli, "batch", str(big), "--dry-run", "--out", str(root / "d")], env)
            print(
                f"dry run, {args.lines:,} lines ({size_mb:.0f} MB): {dry['seconds']} s, "
                f"peak RSS {dry['peak_rss_mb']} MB, CPU {dry['cpu_seconds']} s "
                f"(exit {dry['status']}); load {load()}"
            )
            resumed_out = root / "resumed"
            # In a child: a parent grown by it would pass its size on to every later child
            # (a forked child's peak RSS starts from its parent's, across exec).
            writer = [sys.executable, __file__, "--write-manifest", str(big), str(resumed_out)]
            subprocess.run(writer, check=True)
            resumed = measured(
                [*cli, "batch", str(big), "--dry-run", "--out", str(resumed_out)], env
            )
            print(
                f"dry run, the same lines all recorded in a manifest (a resumed run's index): "
                f"{resumed['seconds']} s, peak RSS {resumed['peak_rss_mb']} MB, CPU "
                f"{resumed['cpu_seconds']} s (exit {resumed['status']}); load {load()}"
            )
            concurrency = str(args.concurrency)
            runs, alones = [], []
            for attempt in range(args.repeat):  # alternated: a load that comes and goes hits both
                out = root / f"r{attempt}"
                batch = [*cli, "batch", str(small), "--out", str(out), "--concurrency", concurrency]
                runs.append(measured(batch, env))
                (root / f"s{attempt}").mkdir()
                sdk = [sys.executable, "-c", SDK_ALONE, str(small), str(root / f"s{attempt}")]
                alones.append(measured([*sdk, concurrency], env))
            # The least CPU of each: what the work costs with the least interference.
            run = min(runs, key=lambda result: result["cpu_seconds"])
            alone = min(alones, key=lambda result: result["cpu_seconds"])
            cli_ms = run["cpu_seconds"] / args.sent * 1000
            sdk_ms = alone["cpu_seconds"] / args.sent * 1000
            overhead = cli_ms - sdk_ms
            print(
                f"real run, {args.sent:,} lines: {run['seconds']} s, peak RSS "
                f"{run['peak_rss_mb']} MB, CPU {cli_ms:.3f} ms a line (exit {run['status']}); "
                f"load {load()}"
            )
            print(
                f"the SDK alone, same requests: {alone['seconds']} s, CPU {sdk_ms:.3f} ms a line"
                f" (exit {alone['status']})"
            )
            print(f"the CLI's overhead: {overhead:.3f} ms a line ({overhead / sdk_ms:.0%} of it)")
            results = {"dry run": dry, "resumed": resumed, "real run": run, "SDK alone": alone}
            failures = [name for name, result in results.items() if result["status"] != 0]
            for name in failures:
                print(f"{name} failed:\n{results[name]['stderr']}")
            missed = (
                failures
                or max(dry["seconds"], resumed["seconds"]) > DRY_RUN_SECONDS
                or max(dry["peak_rss_mb"], resumed["peak_rss_mb"]) > DRY_RUN_MB
                or overhead > OVERHEAD_SHARE * sdk_ms
            )
            return 1 if missed else 0
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
