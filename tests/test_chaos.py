"""Nothing lost, nothing billed twice, under every fault at once (the chaos suite, CI size)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock

from .chaos import describe, run_chaos

pytestmark = pytest.mark.anyio


class _Ticker:
    """Moves a manual clock from a thread, once started: ``step`` s of clock time every
    ``every`` s of real time."""

    def __init__(self, clock: ManualClock, *, step: float = 0.05, every: float = 0.005) -> None:
        self._clock, self._step, self._every = clock, step, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._clock.advance(self._step)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(clock: ManualClock) -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.05, seed=11), clock=clock) as emulator:
        # The faults' own seed: each kind is drawn from a generator of its own, so the
        # enqueues meet the same faults in every run, however the reads interleave with them.
        emulator.faults.seed = 11
        yield emulator


async def test_every_generation_ends_as_the_server_holds_it_under_chaos(
    emu: Emulator, clock: ManualClock
) -> None:
    """Under every fault at once, nothing is lost, duplicated or orphaned, and every outcome
    is the server's. The emulator's clock stands still until every enqueue and cancel has
    returned (then runs ten times faster than real time), so the twentieth cancelled right
    after enqueueing is cancelled while queued on any machine; the retries, the reconciling
    and the dropped streams meanwhile run in real time."""
    ticker = _Ticker(clock)
    try:
        report = await run_chaos(
            emu, count=150, retry_after=0.05, drop_every=0.5, deadline=60, enqueued=ticker.start
        )
    finally:
        ticker.stop()
    summary = describe(report)
    assert report.clean, summary
    assert report.lost == report.duplicated == report.orphaned == 0, summary
    assert report.wrong_outcome == report.enqueue_errors == 0, summary
    assert report.outcomes == {"succeeded": 127, "failed": 15, "cancelled": 8}, summary
    # The faults really happened, and the client really worked around them.
    assert report.faults.get("enqueue_cut", 0) > 0, summary
    assert report.faults.get("sse_drop", 0) > 0, summary
    assert report.retries > 0, summary
    assert report.reconciled >= report.faults.get("enqueue_cut", 0), summary
