"""Nothing lost, nothing billed twice, under every fault at once (the chaos suite, CI size)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oxen_queue.testing import Emulator, EmulatorConfig

from .chaos import describe, run_chaos

pytestmark = pytest.mark.anyio


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.05, seed=11)) as emulator:
        yield emulator


async def test_every_generation_ends_as_the_server_holds_it_under_chaos(emu: Emulator) -> None:
    report = await run_chaos(emu, count=150, retry_after=0.05, drop_every=0.5, deadline=60)
    summary = describe(report)
    assert report.clean, summary
    assert report.lost == report.duplicated == report.orphaned == 0, summary
    assert report.wrong_outcome == report.enqueue_errors == 0, summary
    assert set(report.outcomes) == {"succeeded", "failed", "cancelled"}, summary
    assert sum(report.outcomes.values()) == 150
    # The faults really happened, and the client really worked around them.
    assert report.faults.get("enqueue_cut", 0) > 0, summary
    assert report.faults.get("sse_drop", 0) > 0, summary
    assert report.retries > 0, summary
    assert report.reconciled >= report.faults.get("enqueue_cut", 0), summary
