"""How fast and how cheaply each completion strategy learns that generations finished.

Runs the emulator in a separate process, then, side by side in one run, for N generations that
each last 2-6 s: our ``auto``, ``events`` and ``shared`` modes, and baselines that poll every
job on a fixed timer (5 s, 1 s, 0.5 s, 0.1 s) with plain httpx, as peer SDKs and the docs'
own loop do. Each mode runs in a fresh client process, so its CPU time and memory are its own.

Measured per mode:

* requests per generation, enqueue included (the emulator's counters);
* detection latency p50/p99: when the client saw the generation finish, minus when the
  emulator finished it (both wall clocks of this machine);
* client CPU milliseconds per generation (the client process's user+system time), and as a
  share of the ``poll-5s`` baseline's (the docs' own loop) in the same run;
* client memory per pending generation (tracemalloc, in a separate short run with every job
  held pending, so tracing never slows the timed run);
* wall time from the first enqueue to the last completion.

Then 10,000 concurrent generations in one process with the default mode: all must resolve.

With ``--otel ROUNDS``, the cost of the OpenTelemetry instrumentation (issue 18) instead, in
three variants of the ``auto`` mode: the API installed and imported by nothing (``auto``: the
client leaves it unimported), imported by the application with no SDK configured
(``auto-otel-api``: the instrumentation's no-op path), and an SDK recording every span and
metric into exporters that drop them (``auto-otel-sdk``: what turning it on costs). CPU is
measured in one process, in ``ROUNDS`` pairs of runs per variant: a client with the no-op
telemetry of an environment without the extra, and one with the instrumentation, their order
alternating, so that the machine's load falls on both alike; the table gives the median of
the pairs' ratios (target: at most 1.02 without an SDK) and their middle half. Memory per
pending generation is measured in fresh processes, ``opentelemetry`` blocked
(``auto-no-otel``) or not. The hooks' own cost, timed alone in a loop, is printed after it.

Run::

    uv run python benchmarks/completion.py              # 1,000 generations per mode
    uv run python benchmarks/completion.py -n 200       # quicker
    uv run python benchmarks/completion.py --otel 7     # the instrumentation's cost
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import httpx

OURS = ("auto", "events", "shared")
# The instrumentation's variants of "auto" (--otel): opentelemetry blocked, and an SDK on.
NO_OTEL = "-no-otel"
OTEL_API = "-otel-api"
OTEL_SDK = "-otel-sdk"
OTEL_MODES = (f"auto{NO_OTEL}", "auto", f"auto{OTEL_API}", f"auto{OTEL_SDK}")
PAIRS = "otel-pairs:"  # the child mode of --otel's CPU runs, with the number of rounds
BASELINES = {"poll-5s": 5.0, "poll-1s": 1.0, "poll-0.5s": 0.5, "poll-0.1s": 0.1}
# The same 5 s loop with at most 16 requests in flight (as our client bounds itself): what
# polling costs without httpx's pool contention, which dominates the plain baselines.
BOUNDED = {"poll-5s-bounded": (5.0, 16)}
KEY = "benchmark-key"
TERMINAL = {"succeeded", "failed", "cancelled"}
SERVER = """
import sys
from oxen_queue.testing import EmulatorConfig, run_server
config = EmulatorConfig(queue_delay=(0.0, 0.0), image_duration=(2.0, 6.0), seed=1)
run_server(port=int(sys.argv[1]), config=config, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the client side: one mode, in this (child) process ---------------------------------


async def enqueue_all(count: int, enqueue: Any) -> None:
    """Fire ``count`` enqueues at once: the client's own bounds decide how many fly."""
    async with asyncio.TaskGroup() as group:
        for i in range(count):
            group.create_task(enqueue(i))


def held_bytes(base: int) -> int:
    """Memory held now, above ``base``: live objects only (garbage collected first)."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - base if tracemalloc.is_tracing() else 0


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0


async def run_ours(mode: str, base_url: str, count: int, hold: bool) -> dict[str, Any]:
    from oxen_queue import AsyncClient, Generation

    resolved: dict[str, float] = {}
    generations: list[Generation] = []

    def note(generation: Generation) -> None:
        resolved[generation.id] = time.time()

    async with AsyncClient(api_key=KEY, base_url=base_url, completion=mode) as client:  # type: ignore[arg-type]
        if hold:  # a warm client (stream open, connections made) is the fixed cost, not per job
            await client.enqueue("gpt-image-2", prompt="warm-up", quality="low")
            await asyncio.sleep(0.2)
        base = traced()

        async def enqueue(i: int) -> None:
            generation = await client.enqueue("gpt-image-2", prompt=f"benchmark {i}", quality="low")
            generation.add_done_callback(note)
            generations.append(generation)

        cpu, started = time.process_time(), time.time()
        await enqueue_all(count, enqueue)
        if hold:  # every job pending: what does the client hold for them?
            await asyncio.sleep(0.5)
            return {"bytes": held_bytes(base)}
        for generation in generations:
            await generation.wait()
        cpu = time.process_time() - cpu
    return {"resolved": resolved, "cpu": cpu, "started": started}


async def run_baseline(
    setting: float | tuple[float, int], base_url: str, count: int, hold: bool
) -> dict[str, Any]:
    """What users write without us: enqueue, then poll each job every ``interval`` seconds
    (optionally with at most ``bound`` requests in flight)."""
    interval, bound = setting if isinstance(setting, tuple) else (setting, count)
    gate = asyncio.Semaphore(bound)
    resolved: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as http:
        if hold:  # warm: one enqueue and one poll, as for ours
            body = {"model": "gpt-image-2", "prompt": "warm-up", "quality": "low"}
            warm = (await http.post("/api/ai/queue", json=body)).json()
            await http.get(f"/api/ai/queue/{warm['generations'][0]['generation_id']}")
        base = traced()

        async def job(i: int) -> None:
            body = {"model": "gpt-image-2", "prompt": f"benchmark {i}", "quality": "low"}
            async with gate:
                answer = await http.post("/api/ai/queue", json=body)
            generation_id = answer.json()["generations"][0]["generation_id"]
            while True:
                await asyncio.sleep(interval)
                async with gate:
                    row = (await http.get(f"/api/ai/queue/{generation_id}")).json()
                if row["status"] in TERMINAL:
                    resolved[generation_id] = time.time()
                    return

        cpu, started = time.process_time(), time.time()
        tasks = [asyncio.create_task(job(i)) for i in range(count)]
        if hold:
            await asyncio.sleep(min(interval, 0.5) + 2.0)  # enqueued and polling
            held = held_bytes(base)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return {"bytes": held}
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu
    return {"resolved": resolved, "cpu": cpu, "started": started}


def configure_sdk() -> None:
    """An OpenTelemetry SDK that records every span and metric, and drops them at export:
    the instrumentation's whole cost, none of an exporter's."""
    from collections.abc import Sequence

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def child(mode: str, base_url: str, count: int, memory: bool) -> None:
    """Run one mode; CPU is counted from the first enqueue to the last completion."""
    if mode.startswith(PAIRS):
        rounds = int(mode.removeprefix(PAIRS))
        print(json.dumps(asyncio.run(run_pairs(base_url, count, rounds))))
        return
    if mode.endswith(NO_OTEL):  # as if the otel extra were not installed
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        mode = mode.removesuffix(NO_OTEL)
    elif mode.endswith(OTEL_API):  # an application that imports the API, configures no SDK
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401

        mode = mode.removesuffix(OTEL_API)
    elif mode.endswith(OTEL_SDK):
        configure_sdk()
        mode = mode.removesuffix(OTEL_SDK)
    import oxen_queue  # noqa: F401  (imports happen once per process, not per generation)

    baselines: dict[str, Any] = {**BASELINES, **BOUNDED}
    runner = run_baseline if mode in baselines else run_ours
    target: Any = baselines.get(mode, mode)
    if memory:
        tracemalloc.start()
        result = asyncio.run(runner(target, base_url, count, True))
        print(json.dumps({"bytes_per_pending": result["bytes"] / count}))
        return
    print(json.dumps(asyncio.run(runner(target, base_url, count, False))))


# -- the driver: the emulator process, one child per mode, the table ----------------------


@dataclass
class Row:
    mode: str
    requests_per_generation: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    memory_kb: float
    wall_s: float
    lost: int


def admin(http: httpx.Client, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = http.post(path, json=body or {}) if body is not None else http.get(path)
    answer.raise_for_status()
    return answer.json()


def run_child(mode: str, base_url: str, count: int, memory: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--base-url", base_url, "-n", str(count)]
    if memory:
        command.append("--memory")
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def measure(
    mode: str, base_url: str, count: int, http: httpx.Client, *, memory_run: bool = True
) -> Row:
    memory = math.nan
    if memory_run:
        admin(http, "/_emulator/reset", {})
        admin(http, "/_emulator/clock", {"time_scale": 1000.0})  # nothing finishes: all pending
        memory = run_child(mode, base_url, min(count, 1000), memory=True)["bytes_per_pending"]
    admin(http, "/_emulator/reset", {})
    admin(http, "/_emulator/clock", {"time_scale": 1.0})
    result = run_child(mode, base_url, count, memory=False)
    stats = admin(http, "/_emulator/stats")
    completed: dict[str, float] = stats["completion_times"]
    resolved: dict[str, float] = result["resolved"]
    latencies = [(resolved[i] - completed[i]) * 1000 for i in resolved if i in completed]
    requests = sum(stats["requests"].values())
    return Row(
        mode=mode,
        requests_per_generation=requests / count,
        p50_ms=statistics.median(latencies) if latencies else math.nan,
        p99_ms=percentile(latencies, 0.99),
        cpu_ms=result["cpu"] * 1000 / count,
        memory_kb=memory / 1024,
        wall_s=max(resolved.values(), default=result["started"]) - result["started"],
        lost=count - len(resolved),
    )


def table(rows: list[Row], count: int) -> str:
    load = os.getloadavg()
    slow = next((r for r in rows if r.mode == "poll-5s"), None)
    lines = [
        f"{count} generations of 2-6 s each, emulator in another process, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f}",
        "",
        "| mode | requests/gen | detection p50 | detection p99 | client CPU/gen "
        "| CPU vs poll-5s | memory/pending | wall | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.mode} | {r.requests_per_generation:.3f} | {r.p50_ms:.0f} ms | {r.p99_ms:.0f} ms "
        f"| {r.cpu_ms:.2f} ms | {_ratio(r, slow)} | {r.memory_kb:.1f} KB | {r.wall_s:.1f} s "
        f"| {r.lost} |"
        for r in rows
    )
    return "\n".join(lines)


def _ratio(row: Row, slow: Row | None) -> str:
    return f"{row.cpu_ms / slow.cpu_ms:.2f}x" if slow and slow.cpu_ms > 0 else "-"


def targets(rows: list[Row]) -> list[str]:
    by_mode = {r.mode: r for r in rows}
    auto, shared, slow = by_mode.get("auto"), by_mode.get("shared"), by_mode.get("poll-5s")
    checks: list[tuple[str, bool]] = []
    if auto:
        checks += [
            ("auto: detection p50 <= 50 ms", auto.p50_ms <= 50),
            ("auto: detection p99 <= 250 ms", auto.p99_ms <= 250),
            ("auto: <= 1.5 requests per generation", auto.requests_per_generation <= 1.5),
            ("auto: <= 10 KB per pending generation", auto.memory_kb <= 10),
        ]
    # Issue 13: every mode that uses the event stream at most 0.15x the docs' 5 s loop's CPU.
    for mode in ("auto", "events"):
        row = by_mode.get(mode)
        if row and slow:
            checks.append(
                (
                    f"{mode}: CPU {row.cpu_ms:.2f} ms <= 0.15x poll-5s's {slow.cpu_ms:.2f} ms "
                    f"({row.cpu_ms / slow.cpu_ms:.2f}x)",
                    row.cpu_ms <= 0.15 * slow.cpu_ms,
                )
            )
    if shared:
        checks += [
            ("shared: <= 3 requests per generation", shared.requests_per_generation <= 3),
            ("shared: detection p50 <= 1 s", shared.p50_ms <= 1000),
        ]
    checks += [(f"{r.mode}: none lost", r.lost == 0) for r in rows]
    return [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in checks]


def scale_run(base_url: str, count: int, http: httpx.Client) -> str:
    admin(http, "/_emulator/reset", {})
    admin(http, "/_emulator/clock", {"time_scale": 1.0})
    result = run_child("auto", base_url, count, memory=False)
    stats = admin(http, "/_emulator/stats")
    resolved: dict[str, float] = result["resolved"]
    completed: dict[str, float] = stats["completion_times"]
    latencies = [(resolved[i] - completed[i]) * 1000 for i in resolved if i in completed]
    requests = sum(stats["requests"].values())
    wall = max(resolved.values(), default=result["started"]) - result["started"]
    return (
        f"{count:,} concurrent generations, auto mode, one process: {len(resolved):,} resolved, "
        f"{count - len(resolved)} lost, {stats['jobs_created']:,} created, "
        f"{requests / count:.3f} requests/gen, "
        f"detection p50 {statistics.median(latencies):.0f} ms "
        f"p99 {percentile(latencies, 0.99):.0f} ms, "
        f"client CPU {result['cpu'] * 1000 / count:.2f} ms/gen, wall {wall:.1f} s"
    )


def otel_cost(base_url: str, count: int, rounds: int, http: httpx.Client) -> str:
    """The instrumentation's cost (see the module docstring): memory in fresh processes, CPU
    in pairs of runs in one process."""
    memory: dict[str, float] = {}
    for mode in OTEL_MODES:
        admin(http, "/_emulator/reset", {})
        admin(http, "/_emulator/clock", {"time_scale": 1000.0})  # nothing finishes: all pending
        held = run_child(mode, base_url, min(count, 1000), memory=True)["bytes_per_pending"]
        memory[mode] = held / 1024
    admin(http, "/_emulator/clock", {"time_scale": 1.0})
    before = os.getloadavg()
    pairs = run_child(f"{PAIRS}{rounds}", base_url, count, memory=False)
    after = os.getloadavg()
    lines = [
        f"{count} generations of 2-6 s each per run, {rounds} pairs of runs per variant, "
        f"{os.cpu_count()} CPUs, load average {before[0]:.2f} at the start, {after[0]:.2f} "
        f"at the end ({after[1]:.2f} over 5 min, {after[2]:.2f} over 15)",
        "",
        "| variant | client CPU/gen, median | its pair without (median) | ratio, median "
        "| ratio, middle half | memory/pending |",
        "|---|---:|---:|---:|---:|---:|",
        f"| auto-no-otel (blocked) | | | | | {memory[OTEL_MODES[0]]:.2f} KB |",
    ]
    verdicts: list[str] = []
    for mode, runs in zip(OTEL_MODES[1:], pairs.values(), strict=True):
        ratios = sorted(with_ / without for without, with_ in runs)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        median = statistics.median(ratios)
        lines.append(
            f"| {mode} | {statistics.median(w for _, w in runs):.3f} ms "
            f"| {statistics.median(b for b, _ in runs):.3f} ms | {median:.3f}x "
            f"| {quartiles[0]:.3f}-{quartiles[2]:.3f}x | {memory[mode]:.2f} KB |"
        )
        if not mode.endswith(OTEL_SDK):
            verdict = "PASS" if median <= 1.02 else "FAIL"
            verdicts.append(f"{verdict}  {mode}: CPU {median:.3f}x of its pair without (<= 1.02x)")
    return "\n".join([*lines, "", *verdicts, "", hooks_cost()])


async def run_pairs(base_url: str, count: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """In this process, ``rounds`` pairs of runs for each variant: one client without the
    instrumentation (as without the extra: the no-op telemetry), one with it, in alternating
    order; CPU ms per generation of each. The variants come in turn, each adding to the
    last: OpenTelemetry installed and unused, then imported, then an SDK configured."""
    import oxen_queue._otel as otel

    def import_api() -> None:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401

    results: dict[str, list[tuple[float, float]]] = {}
    with httpx.Client(base_url=base_url, timeout=30) as http:

        async def one(instrumented: bool) -> float:
            admin(http, "/_emulator/reset", {})
            otel._installed = instrumented  # False: the client gets the no-op telemetry
            try:
                result = await run_ours("auto", base_url, count, False)
            finally:
                otel._installed = True
            return float(result["cpu"]) * 1000 / count

        for mode, setup in zip(OTEL_MODES[1:], (None, import_api, configure_sdk), strict=True):
            if setup is not None:
                setup()
            await one(True)  # a warm-up, not counted: what a process pays once
            runs: list[tuple[float, float]] = []
            for number in range(rounds):
                # Which of the pair goes first alternates, so that neither always follows the
                # other's garbage.
                order = (False, True) if number % 2 == 0 else (True, False)
                cpu: dict[bool, float] = {}
                for instrumented in order:
                    cpu[instrumented] = await one(instrumented)
                runs.append((cpu[False], cpu[True]))
                print(f"  {mode}: pair {number + 1} of {rounds}", file=sys.stderr, flush=True)
            results[mode] = runs
    return results


def hooks_cost(repeat: int = 200_000) -> str:
    """The per-generation calls the client makes to the instrumentation, timed alone, without
    an SDK: what an enqueue of one generation adds, in nanoseconds, with the API unimported
    (in a fresh process) and imported."""
    command = [sys.executable, __file__, "--hooks", str(repeat)]
    unimported = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return (
        "the hooks of one enqueue (request, attach/detach in the caller and the worker, the "
        f"budget's event), timed alone, no SDK: {float(unimported):.0f} ns per generation with "
        f"the API unimported, {hooks_ns(repeat, imported=True):.0f} ns with it imported"
    )


def hooks_ns(repeat: int, *, imported: bool) -> float:
    import oxen_queue._otel as otel

    if imported:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    telemetry = otel.client_telemetry(base_url=httpx.URL("https://hub.oxen.ai"), secret=KEY)
    params = {"prompt": "An ox", "quality": "low"}
    telemetry.request("gpt-image-2", params, 1)  # the instruments are made once per process
    started = time.perf_counter()
    for _ in range(repeat):
        trace = telemetry.request("gpt-image-2", params, 1)
        token = trace.attach()
        trace.budget_reserved(None)
        token_worker = trace.attach()
        trace.detach(token_worker)
        trace.detach(token)
    return (time.perf_counter() - started) / repeat * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1000, help="generations per mode")
    parser.add_argument(
        "--scale", type=int, default=10_000, help="generations of the scale run (0: skip)"
    )
    parser.add_argument(
        "--modes", default=",".join([*OURS, *BASELINES, *BOUNDED]), help="comma-separated"
    )
    parser.add_argument(
        "--otel",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="measure the OpenTelemetry instrumentation's cost instead (see above)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--hooks", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hooks:
        print(hooks_ns(args.hooks, imported=False))
        return
    if args.child:
        child(args.child, args.base_url, args.n, args.memory)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for _ in range(100):
                try:
                    admin(http, "/_emulator/stats")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            if args.otel:
                print(otel_cost(base_url, args.n, args.otel, http))
                return
            rows = []
            for mode in args.modes.split(","):
                rows.append(measure(mode, base_url, args.n, http))
                print(f"  measured {mode}", file=sys.stderr, flush=True)
            print(table(rows, args.n))
            print()
            print("\n".join(targets(rows)))
            if args.scale:
                print()
                print(scale_run(base_url, args.scale, http))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
