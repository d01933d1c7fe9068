"""Admission control against a server that rate-limits enqueues (the emulator's token bucket).

A burst into a limit the client cannot know overshoots once: whatever is in flight when the
first refusals come back left at the old pace, as TCP's slow start overshoots. What this
checks is what follows: once the pacer has cut the rate, the batch settles at what the server
accepts (few refusals among the enqueues sent after the cut), every job is created exactly
once, and the pacer ends near the limit.

The verdict is on the settled phase alone, so it holds on a busy machine too:
``benchmarks/rate_limit_runs.py`` runs this scenario many times, with a process keeping a CPU
busy, and prints each run's figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import anyio
import pytest

from oxen_queue import AsyncClient
from oxen_queue._admission import Slot
from oxen_queue.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio

LIMIT = 50.0  # enqueues per second the emulator accepts (its bucket holds a second's worth)
COUNT = 200
SETTLED_REFUSALS = 0.1  # the most, as a share of the enqueues sent after the first cut


@dataclass(frozen=True)
class Burst:
    """What one burst against the limit did.

    Attributes:
        before_cut: Enqueue attempts sent before the pacer first cut the rate.
        refused_before_cut: Of those, refused with 429 (the overshoot).
        after_cut: Attempts sent after the first cut (retries of refused ones included).
        refused_after_cut: Of those, refused.
        elapsed: Seconds for the whole batch.
        created: Jobs the server created.
        once: Whether every prompt made exactly one job.
        rate: The pacer's rate at the end (enqueues/s; ``inf``: unlimited).
    """

    before_cut: int
    refused_before_cut: int
    after_cut: int
    refused_after_cut: int
    elapsed: float
    created: int
    once: bool
    rate: float

    def line(self) -> str:
        return (
            f"before the cut {self.refused_before_cut}/{self.before_cut} refused, "
            f"after it {self.refused_after_cut}/{self.after_cut}, "
            f"{self.elapsed:.2f} s, rate {self.rate:.1f}/s, created {self.created}"
        )


async def burst_against_a_limit(*, limit: float = LIMIT, count: int = COUNT) -> Burst:
    """``count`` enqueues at once against the emulator limiting enqueues to ``limit``/s."""
    attempts: list[tuple[float, bool]] = []  # (sent, refused), as the client saw them
    cut_at = math.inf  # when the pacer first limited the rate
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        emu.faults.enqueue_rate_limit = limit
        emu.faults.retry_after_form = "ms"
        async with AsyncClient(api_key="k", base_url=emu.base_url, completion="poll") as client:
            admission = client._core.session.admission
            pacer = admission.enqueue_rate
            observe = admission.observe

            def noting(status_code: int, *, slot: Slot) -> None:
                nonlocal cut_at
                if slot.paced:
                    attempts.append((slot.started, status_code == 429))
                observe(status_code, slot=slot)
                if math.isfinite(pacer.rate) and math.isinf(cut_at):
                    cut_at = time.monotonic()

            admission.observe = noting  # type: ignore[method-assign]
            started = time.monotonic()
            async with anyio.create_task_group() as task_group:
                for i in range(count):
                    task_group.start_soon(_enqueue, client, f"p{i}")
            elapsed = time.monotonic() - started
            rate = pacer.rate
        stats = emu.stats()
    before = [refused for sent, refused in attempts if sent <= cut_at]
    after = [refused for sent, refused in attempts if sent > cut_at]
    return Burst(
        before_cut=len(before),
        refused_before_cut=sum(before),
        after_cut=len(after),
        refused_after_cut=sum(after),
        elapsed=elapsed,
        created=stats["jobs_created"],
        once=all(n == 1 for n in stats["jobs_by_prompt"].values()),
        rate=rate,
    )


async def _enqueue(client: AsyncClient, prompt: str) -> None:
    await client.enqueue("gpt-image-2", prompt=prompt)


def misses(burst: Burst) -> list[str]:
    """What ``burst`` fails of the test's checks (nothing: it passes)."""
    attempts = burst.before_cut + burst.after_cut
    refused = burst.refused_before_cut + burst.refused_after_cut
    checks = {
        "every job created, each once": burst.created == COUNT and burst.once,
        # The first refusals cut the rate, and a good part of the batch (and the retries of
        # what was refused) is paced after it: the verdict below is on more than a tail.
        # Unless the machine itself was too slow to outrun the limit (seen with a core kept
        # busy and eight test workers on the other: 207 sent before a cut, 19 of them
        # refused): then there was no overshoot to settle from, and the whole batch is held
        # to the settled phase's bound instead.
        "a cut, then a quarter of the batch or more (or no hammering at all)": (
            burst.refused_before_cut >= 1 and burst.after_cut >= COUNT / 4
        )
        or refused <= SETTLED_REFUSALS * attempts,
        # Settled: a tenth refused at most, what the pacer itself treats as noise.
        f"at most {SETTLED_REFUSALS:.0%} refused after the cut": (
            burst.refused_after_cut <= SETTLED_REFUSALS * burst.after_cut
        ),
        # The bucket holds one second's worth: the rest cannot go faster than the limit.
        "no faster than the limit": burst.elapsed >= (COUNT - LIMIT) / LIMIT * 0.9,
        "the pacer near the limit at the end": burst.rate <= LIMIT * 2,
    }
    return [name for name, ok in checks.items() if not ok]


async def test_a_burst_settles_at_the_servers_rate_instead_of_hammering_it() -> None:
    burst = await burst_against_a_limit()
    assert not misses(burst), burst.line()
