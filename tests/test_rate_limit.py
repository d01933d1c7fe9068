"""Admission control against a server that rate-limits enqueues (the emulator's token bucket).

A batch must settle at what the server accepts instead of hammering it: refusals stay a small
fraction of the requests, every job is created exactly once, and the pacer ends near the limit.
"""

from __future__ import annotations

import math
import time

import anyio
import pytest

from oxen_queue import AsyncClient
from oxen_queue.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio

LIMIT = 50.0  # enqueues per second the emulator accepts
COUNT = 150


async def test_a_burst_settles_at_the_servers_rate_instead_of_hammering_it() -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        emu.faults.enqueue_rate_limit = LIMIT
        emu.faults.retry_after_form = "ms"
        async with AsyncClient(api_key="k", base_url=emu.base_url, completion="poll") as client:
            started = time.monotonic()
            async with anyio.create_task_group() as task_group:
                for i in range(COUNT):
                    task_group.start_soon(_enqueue, client, f"p{i}")
            elapsed = time.monotonic() - started
            pacer = client._core.session.admission.enqueue_rate.rate
        stats = emu.stats()
    refused = stats["faults"].get("enqueue_rate_limit", 0)
    assert stats["jobs_created"] == COUNT
    assert all(n == 1 for n in stats["jobs_by_prompt"].values())
    # The bucket holds one second's worth: the rest cannot go faster than the limit.
    assert elapsed >= (COUNT - LIMIT) / LIMIT * 0.9
    # Without pacing just in time, this was 2.4 refusals per enqueue; now under 10 %.
    assert refused < COUNT * 0.15, f"{refused} refusals for {COUNT} enqueues"
    assert math.isfinite(pacer)
    assert pacer <= LIMIT * 2


async def _enqueue(client: AsyncClient, prompt: str) -> None:
    await client.enqueue("gpt-image-2", prompt=prompt)
