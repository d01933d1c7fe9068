"""The chaos scenario: every fault on at once, then an audit of what the client believes
against what the server holds. Used by ``tests/test_chaos.py`` (small, in CI) and by
``benchmarks/chaos.py`` (500 generations, figures printed).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from oxen_queue import AsyncClient, Generation, GenerationError, OxenError, PollPolicy, RetryPolicy
from oxen_queue.testing import Emulator

__all__ = ["ChaosReport", "chaos_faults", "describe", "run_chaos"]


def chaos_faults(*, retry_after: float, drop_every: float) -> dict[str, Any]:
    """The issue's mix: 5 % of enqueues refused with 429 and Retry-After, 3 % with 503, 3 % cut
    after the job was created; 5 % of status reads answering 500, 3 % 429, 2 % cut; the event
    stream dropped every ``drop_every`` seconds; 10 % of completion events never sent."""
    return {
        "enqueue_429": 0.05,
        "enqueue_503": 0.03,
        "enqueue_cut": 0.03,
        "read_500": 0.05,
        "read_429": 0.03,
        "read_cut": 0.02,
        "retry_after": retry_after,
        "sse_drop_after": drop_every,
        "event_loss": 0.10,
    }


@dataclass
class ChaosReport:
    """What went wrong (all zeros is the goal) and what it took."""

    generations: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    """Generations that never resolved."""
    duplicated: int = 0
    """Jobs created more than once for one request."""
    orphaned: int = 0
    """Jobs on the server that the client does not know."""
    wrong_outcome: int = 0
    """Generations whose outcome differs from the server's status for their job."""
    enqueue_errors: int = 0
    """Enqueues that surfaced an error to the caller."""
    retries: int = 0
    """Requests the client sent again after a transient failure."""
    reconciled: int = 0
    resent: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.orphaned
            or self.wrong_outcome
            or self.enqueue_errors
        )


class _RetryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.count += 1


def _outcome(generation: Generation) -> str:
    try:
        return generation.result().status
    except GenerationError as exc:
        return "failed" if "failed" in type(exc).__name__.lower() else "cancelled"
    except OxenError as exc:
        return f"error: {type(exc).__name__}"


async def run_chaos(
    emulator: Emulator,
    *,
    count: int,
    retry_after: float,
    drop_every: float,
    client_options: dict[str, Any] | None = None,
    deadline: float = 120.0,
    enqueued: Callable[[], object] | None = None,
) -> ChaosReport:
    """Enqueue ``count`` generations under every fault at once and audit the outcome.

    A tenth are sent with a bad parameter unchecked (they fail when they run, as on the real
    API) and a twentieth are cancelled by the client right after enqueueing, so all three
    final states are exercised.

    ``enqueued`` is called once every enqueue (and cancel) has returned: a test whose
    emulator's clock stands still until then (a :class:`~oxen_queue.testing.ManualClock`)
    starts it there, so each cancel finds its job still queued however slow the machine.
    """
    emulator.faults.update(chaos_faults(retry_after=retry_after, drop_every=drop_every))
    report = ChaosReport(generations=count)
    counter = _RetryCounter()
    logger = logging.getLogger("oxen_queue")
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(counter)
    options: dict[str, Any] = {
        "api_key": "chaos-key",
        "base_url": emulator.base_url,
        "retry": RetryPolicy(initial_delay=0.02, max_delay=0.5, deadline=60.0),
        "poll_policy": PollPolicy(initial=0.1, max_interval=0.5, deadline=deadline),
        "shared_poll_interval": 0.2,
        "backstop_interval": 1.0,
    }
    options.update(client_options or {})
    generations: list[Generation] = []
    started = anyio.current_time()
    try:
        async with AsyncClient(**options) as client:

            async def one(i: int) -> None:
                params: dict[str, Any] = {"prompt": f"chaos {i}", "quality": "low"}
                if i % 10 == 3:
                    params["resolution"] = "999x999"  # sent unchecked: fails when it runs
                try:
                    generation = await client.enqueue("gpt-image-2", validate=False, **params)
                except OxenError:
                    report.enqueue_errors += 1
                    return
                generations.append(generation)
                if i % 20 == 7:
                    # At once, while it is queued; whatever it achieves, the audit compares
                    # with the server.
                    with contextlib.suppress(OxenError):
                        await generation.cancel()

            async with anyio.create_task_group() as task_group:
                for i in range(count):
                    task_group.start_soon(one, i)
            if enqueued is not None:
                enqueued()
            with anyio.move_on_after(deadline):
                for generation in generations:
                    with contextlib.suppress(OxenError):  # outcomes are audited below
                        await generation
            report.reconciled = client.stats.reconciled
            report.resent = client.stats.resent
    finally:
        logger.removeHandler(counter)
        logger.setLevel(previous_level)
        emulator.faults.reset()
    report.seconds = anyio.current_time() - started
    report.retries = counter.count
    jobs = emulator.state.jobs
    known = {g.id for g in generations}
    report.orphaned = len(set(jobs) - known)
    report.duplicated = sum(n - 1 for n in emulator.stats()["jobs_by_prompt"].values() if n > 1)
    for generation in generations:
        if not generation.done():
            report.lost += 1
            continue
        outcome = _outcome(generation)
        report.outcomes[outcome] += 1
        job = jobs.get(generation.id)
        if job is None or job.status != outcome:
            report.wrong_outcome += 1
    report.faults = {k: v for k, v in emulator.stats()["faults"].items() if v}
    return report


def describe(report: ChaosReport) -> str:
    outcomes = ", ".join(f"{n} {status}" for status, n in sorted(report.outcomes.items()))
    faults = ", ".join(f"{kind} {n}" for kind, n in report.faults.items())
    return (
        f"{report.generations} generations in {report.seconds:.1f} s ({outcomes})\n"
        f"lost {report.lost}, duplicated {report.duplicated}, orphaned {report.orphaned}, "
        f"wrong outcome {report.wrong_outcome}, enqueue errors {report.enqueue_errors}\n"
        f"retries taken {report.retries}, lost enqueue answers reconciled {report.reconciled}, "
        f"resent {report.resent}\nfaults injected: {faults}"
    )
