"""Completion strategies against the emulator on a real loopback server (real SSE).

Every strategy must resolve every generation to the server's verdict, whatever the stream
does: drops, lost events, unrelated and garbage events, a stream that cannot be opened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from oxen_queue import (
    AsyncClient,
    CompletionMode,
    GenerationCancelledError,
    GenerationFailedError,
    NotFoundError,
    PollPolicy,
    RetryPolicy,
    as_completed,
)
from oxen_queue.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio

MODES: list[CompletionMode] = ["auto", "events", "shared", "poll"]
FAST = EmulatorConfig(time_scale=0.02, seed=7, unrelated_event_rate=0.5)


@pytest.fixture(scope="module")
def server() -> Iterator[Emulator]:
    with Emulator(config=FAST) as emulator:
        yield emulator


@pytest.fixture
def emu(server: Emulator) -> Emulator:
    """The module's emulator, with its jobs, counters, faults and clock reset."""
    server.reset()
    server.state.time_scale = FAST.time_scale
    return server


def client_for(emu: Emulator, mode: CompletionMode, **options: Any) -> AsyncClient:
    settings: dict[str, Any] = {
        "api_key": "completion-test-key",
        "base_url": emu.base_url,
        "completion": mode,
        "poll_policy": PollPolicy(initial=0.02, max_interval=0.1, deadline=30),
        "shared_poll_interval": 0.05,
        "backstop_interval": 0.2,
        "retry": RetryPolicy(initial_delay=0.01, max_delay=0.05, deadline=10),
    }
    settings.update(options)
    return AsyncClient(**settings)


def requests(emu: Emulator, prefix: str) -> int:
    return sum(n for key, n in emu.stats()["requests"].items() if key.startswith(prefix))


@pytest.mark.parametrize("mode", MODES)
async def test_every_mode_resolves_successes_and_failures(
    emu: Emulator, mode: CompletionMode
) -> None:
    async with client_for(emu, mode) as client:
        good = [await client.enqueue("gpt-image-2", prompt=f"ox {i}") for i in range(8)]
        # Sent unchecked, it fails when it runs, as the real API does (and bills).
        bad = await client.enqueue("gpt-image-2", prompt="ox", resolution="999x999", validate=False)
        records = [await g for g in good]
        with pytest.raises(GenerationFailedError) as failure:
            await bad
    assert all(r.status == "succeeded" and r.result_url for r in records)
    assert [r.params["prompt"] for r in records] == [f"ox {i}" for i in range(8)]
    assert all(r.model_name == "gpt-image-2" for r in records)
    assert failure.value.error_message is not None
    assert "resolution" in failure.value.error_message


async def test_events_mode_costs_nothing_but_the_enqueues(emu: Emulator) -> None:
    async with client_for(emu, "events") as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"p{i}") for i in range(20)]
        async for _ in as_completed(generations):
            pass
    assert requests(emu, "POST /api/ai/queue") == 20
    assert requests(emu, "GET /api/ai/queue") == 0
    assert emu.stats()["sse_connections"] == 1
    assert all(g.record is not None and g.record.result_url for g in generations)


async def test_shared_polling_asks_once_per_tick_and_once_per_finisher(emu: Emulator) -> None:
    async with client_for(emu, "shared", shared_poll_interval=0.1) as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"p{i}") for i in range(30)]
        async for _ in as_completed(generations):
            pass
    rows = requests(emu, "GET /api/ai/queue/")
    lists = emu.stats()["requests"].get("GET /api/ai/queue", 0)
    assert rows == 30  # each finished generation fetched exactly once
    assert 1 <= lists <= 30  # ticks, not one per generation per tick


async def test_events_reconcile_after_every_dropped_stream(emu: Emulator) -> None:
    emu.faults.sse_drop_after = 0.15
    emu.faults.event_loss = 1.0  # nothing arrives as an event: reconnects must tell
    emu.state.time_scale = 0.05
    async with client_for(emu, "events") as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"p{i}") for i in range(10)]
        with anyio.fail_after(20):
            records = [await g for g in generations]
    assert all(r.status == "succeeded" for r in records)
    assert emu.stats()["sse_connections"] >= 2
    assert emu.stats()["faults"]["event_loss"] >= 10


async def test_auto_backstop_catches_lost_events_without_a_reconnect(emu: Emulator) -> None:
    emu.faults.event_loss = 1.0
    async with client_for(emu, "auto", backstop_interval=0.2) as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"p{i}") for i in range(5)]
        with anyio.fail_after(20):
            records = [await g for g in generations]
    assert all(r.status == "succeeded" for r in records)
    assert emu.stats()["sse_connections"] == 1


async def test_auto_catches_a_cancellation_made_elsewhere(emu: Emulator) -> None:
    emu.state.time_scale = 1.0  # jobs take seconds: time to cancel them
    async with client_for(emu, "auto") as client, client_for(emu, "poll") as other:
        generation = await client.enqueue("gpt-image-2", prompt="cancelled elsewhere")
        await other.cancel(generation.id)
        with pytest.raises(GenerationCancelledError), anyio.fail_after(10):
            await generation


@pytest.mark.parametrize("status", [404, 401])
async def test_auto_falls_back_to_polling_when_the_stream_is_unavailable(
    emu: Emulator, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="oxen_queue")
    emu.faults.events_status = status
    async with client_for(emu, "auto") as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"p{i}") for i in range(5)]
        with anyio.fail_after(20):
            records = [await g for g in generations]
    assert all(r.status == "succeeded" for r in records)
    assert any("falling back to polling" in r.getMessage() for r in caplog.records)


async def test_events_only_mode_reports_an_unavailable_stream(emu: Emulator) -> None:
    emu.faults.events_status = 404
    async with client_for(emu, "events") as client:
        with pytest.raises(NotFoundError):
            await client.enqueue("gpt-image-2", prompt="no stream")
    assert requests(emu, "POST /api/ai/queue") == 0  # nothing enqueued that nobody could watch


async def test_unrelated_and_garbage_events_are_ignored(emu: Emulator) -> None:
    emu.faults.sse_garbage = 1.0
    async with client_for(emu, "events") as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"p{i}") for i in range(10)]
        with anyio.fail_after(20):
            records = [await g for g in generations]
    assert all(r.status == "succeeded" for r in records)
    stats = emu.stats()
    assert stats["events"]["unrelated"] > 0
    assert stats["faults"]["sse_garbage"] > 0


@pytest.mark.parametrize("mode", MODES)
async def test_reattaching_to_a_long_finished_generation(
    emu: Emulator, mode: CompletionMode
) -> None:
    async with client_for(emu, "poll") as maker:
        done = await maker.enqueue("gpt-image-2", prompt="finished long ago")
        await done
    async with client_for(emu, mode) as client:
        with anyio.fail_after(5):
            record = await client.generation(done.id)
    assert record.status == "succeeded"
    assert record.generation_id == done.id


@pytest.mark.parametrize("mode", ["auto", "events", "shared"])
async def test_reattaching_to_a_running_generation(emu: Emulator, mode: CompletionMode) -> None:
    emu.state.time_scale = 0.05
    async with client_for(emu, "poll", poll_policy=PollPolicy(initial=60)) as maker:
        running = await maker.enqueue("gpt-image-2", prompt="still running")
        async with client_for(emu, mode) as client:
            with anyio.fail_after(10):
                record = await client.generation(running.id)
    assert record.status == "succeeded"


async def test_hundreds_of_concurrent_enqueues_on_a_tiny_pool_never_time_out(emu: Emulator) -> None:
    emu.state.time_scale = 0.01
    generations = []
    async with client_for(emu, "auto", max_concurrency=4, timeout=5.0) as client:

        async def one(i: int) -> None:
            generations.append(await client.enqueue("gpt-image-2", prompt=f"burst {i}"))

        async with anyio.create_task_group() as task_group:
            for i in range(600):
                task_group.start_soon(one, i)
        with anyio.fail_after(60):
            finished = [g async for g in as_completed(generations)]
    assert len(finished) == 600
    assert all(g.result().status == "succeeded" for g in finished)
    assert emu.stats()["jobs_created"] == 600
