"""``generation.updates()``: each status change once, from the client's one watcher.

Two tiers: a generation settled by hand (the state machine alone, no HTTP: ordering,
coalescing, outcomes, deadlines, cancellation), then clients on the emulator on a real
loopback server (what the watchers report, and what subscribers cost in requests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

from oxen_queue import (
    AsyncClient,
    ClientClosedError,
    CompletionMode,
    Generation,
    GenerationRecord,
    GenerationTimeoutError,
    NotFoundError,
    PollPolicy,
    RetryPolicy,
)
from oxen_queue._core import _Deadlines
from oxen_queue._generation import due, fail, note_status, observe
from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock

from .fakes import FakeAPI
from .helpers import StubOwner, eventually, fake_client

pytestmark = pytest.mark.anyio


# -- the state machine alone ------------------------------------------------------------------


def _generation(*, status: str = "queued", deadline: float | None = None) -> Generation:
    return Generation(
        "gen-1",
        owner=StubOwner(),
        model="gpt-image-2",
        params={"prompt": "an ox"},
        status=status,
        deadline=deadline,
    )


def _row(status: str, **fields: Any) -> GenerationRecord:
    return GenerationRecord.model_validate(
        {"generation_id": "gen-1", "status": status, "prompt": "an ox", **fields}
    )


def _subscribers(generation: Generation) -> int:
    return len(generation._subscribers or ())


async def _collect(generation: Generation, statuses: list[str]) -> None:
    """Follow the generation to the end, noting each status as it arrives."""
    async for record in generation.updates():
        statuses.append(record.status)  # noqa: PERF401 (what was seen before an error, too)


async def _settle() -> None:
    """Let every woken task run (a few scheduler passes)."""
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


async def test_yields_the_current_status_then_each_change_once_then_the_final_record() -> None:
    generation = _generation()
    seen: list[GenerationRecord] = []

    async def follow() -> None:
        seen.extend([record async for record in generation.updates()])

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(follow)
        await _settle()
        note_status(generation, "queued")  # no change: nothing yielded
        await _settle()
        note_status(generation, "processing")
        await _settle()
        observe(generation, _row("processing", started_at=1))  # same status, richer row
        await _settle()
        observe(generation, _row("succeeded", result_url="https://files.test/x.png"))

    assert [record.status for record in seen] == ["queued", "processing", "succeeded"]
    # A status seen only in a list becomes a record from what the handle knows.
    assert seen[1].generation_id == "gen-1"
    assert seen[1].model_name == "gpt-image-2"
    assert seen[1].params == {"prompt": "an ox"}
    assert seen[-1].result_url == "https://files.test/x.png"
    assert seen[-1] is generation.result()


async def test_a_slow_consumer_gets_the_latest_non_final_status_and_always_the_final() -> None:
    """Coalesced, never blocking the watcher: one slot per subscriber, whatever happens."""
    generation = _generation()
    updates = generation.updates()
    first = await anext(updates)
    for status in ("processing", "upscaling", "processing", "finishing"):
        note_status(generation, status)  # the consumer takes nothing meanwhile
    (subscription,) = generation._subscribers or set()
    assert subscription.latest is not None
    assert subscription.latest.status == "finishing"  # one slot: the latest
    observe(generation, _row("succeeded"))
    rest = [record.status async for record in updates]
    assert first.status == "queued"
    assert rest == ["finishing", "succeeded"]
    assert _subscribers(generation) == 0


async def test_a_status_that_came_back_is_not_yielded_twice() -> None:
    generation = _generation()
    updates = generation.updates()
    assert (await anext(updates)).status == "queued"
    note_status(generation, "processing")
    note_status(generation, "queued")  # requeued before the consumer looked: no change to it
    observe(generation, _row("succeeded"))
    assert [record.status async for record in updates] == ["succeeded"]


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_a_failed_or_cancelled_generation_ends_with_its_record_without_raising(
    status: str,
) -> None:
    generation = _generation()
    updates = generation.updates()
    assert (await anext(updates)).status == "queued"
    observe(generation, _row(status, error_message="Insufficient credits"))
    (final,) = [record async for record in updates]
    assert final.status == status
    assert final.error_message == "Insufficient credits"


async def test_a_generation_already_done_yields_its_final_record_alone() -> None:
    generation = _generation()
    observe(generation, _row("succeeded"))
    assert [record.status async for record in generation.updates()] == ["succeeded"]
    assert _subscribers(generation) == 0


async def test_the_deadline_raises_generation_timeout_error_after_what_was_seen() -> None:
    """The client's one deadline task ends the generation; a subscriber sees the error after
    the records it saw (the iterator keeps no timer of its own)."""
    generation = _generation(deadline=0.05)
    deadlines = _Deadlines({generation.id: generation})
    deadlines.add(due(generation), generation.id)
    seen: list[str] = []
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(deadlines.run)
        with anyio.fail_after(5), pytest.raises(GenerationTimeoutError):
            await _collect(generation, seen)
        task_group.cancel_scope.cancel()
    assert seen == ["queued"]
    assert generation.done()  # the deadline ended the generation, for every waiter
    with pytest.raises(GenerationTimeoutError):
        await generation


async def test_an_error_that_is_not_the_servers_verdict_is_raised() -> None:
    generation = _generation()
    updates = generation.updates()
    assert (await anext(updates)).status == "queued"
    fail(generation, ClientClosedError("closed", generation_ids=["gen-1"]))
    with pytest.raises(ClientClosedError):
        await anext(updates)


async def test_a_reattached_generation_starts_with_its_first_row_not_unknown() -> None:
    generation = _generation(status="unknown")
    updates = generation.updates()

    async def later() -> None:
        await _settle()
        observe(generation, _row("processing"))

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(later)
        first = await anext(updates)
    assert first.status == "processing"
    await updates.aclose()
    assert _subscribers(generation) == 0


async def test_cancelling_the_consumer_unsubscribes_and_leaves_the_generation_running() -> None:
    generation = _generation()
    seen: list[str] = []

    async def follow() -> None:
        await _collect(generation, seen)

    if sniffio.current_async_library() == "asyncio":
        # The asyncio spellings: asyncio.timeout around the loop, and task.cancel().
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await follow()
        assert _subscribers(generation) == 0
        task = asyncio.create_task(follow())
        await _settle()
        assert _subscribers(generation) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with anyio.move_on_after(0.05):
            await follow()
        assert _subscribers(generation) == 0
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(follow)
            await _settle()
            assert _subscribers(generation) == 1
            task_group.cancel_scope.cancel()
    assert _subscribers(generation) == 0
    assert not generation.done()
    assert seen == ["queued", "queued"]


async def test_closing_the_iterator_early_unsubscribes() -> None:
    generation = _generation()
    async with contextlib.aclosing(generation.updates()) as updates:
        async for _ in updates:
            assert _subscribers(generation) == 1
            break
    assert _subscribers(generation) == 0


# -- on a client ------------------------------------------------------------------------------

FAST = EmulatorConfig(time_scale=0.2, seed=12)  # queued 0.1-0.4 s, then processing 0.4-1 s


@pytest.fixture(scope="module")
def server() -> Iterator[Emulator]:
    with Emulator(config=FAST) as emulator:
        yield emulator


@pytest.fixture
def emu(server: Emulator) -> Emulator:
    server.reset()
    return server


def client_for(emu: Emulator, mode: CompletionMode, **options: Any) -> AsyncClient:
    settings: dict[str, Any] = {
        "api_key": "updates-test-key",
        "base_url": emu.base_url,
        "completion": mode,
        "poll_policy": PollPolicy(initial=0.05, max_interval=0.05, deadline=30),
        "shared_poll_interval": 0.05,
        "backstop_interval": 60.0,  # no backstop tick within a test: only subscribers tick
        "retry": RetryPolicy(initial_delay=0.01, max_delay=0.05, deadline=10),
    }
    settings.update(options)
    return AsyncClient(**settings)


@pytest.fixture(scope="module")
def stepped() -> Iterator[tuple[Emulator, ManualClock]]:
    """An emulator whose jobs move only when the test moves its clock: 1 s queued, 1 s
    processing."""
    clock = ManualClock()
    config = EmulatorConfig(queue_delay=(1.0, 1.0), image_duration=(1.0, 1.0), seed=12)
    with Emulator(config=config, clock=clock) as emulator:
        yield emulator, clock


async def _run(
    stepped: tuple[Emulator, ManualClock], mode: CompletionMode, subscribers: int
) -> dict[str, Any]:
    """One generation followed by ``subscribers``, moved on only once every one of them has
    seen each step; the emulator's request counts and what each subscriber saw."""
    emu, clock = stepped
    emu.reset()
    seen: list[list[str]] = [[] for _ in range(subscribers)]
    async with client_for(emu, mode) as client:
        generation = await client.enqueue("gpt-image-2", prompt="an ox, watched")
        async with anyio.create_task_group() as task_group:
            for statuses in seen:
                task_group.start_soon(_collect, generation, statuses)
            await eventually(lambda: all(len(statuses) >= 1 for statuses in seen))
            clock.advance(1.0)  # processing
            if mode != "events":  # (which announces final states only)
                await eventually(lambda: all(len(statuses) >= 2 for statuses in seen))
            clock.advance(1.0)  # succeeded
        await generation
        polls = client.stats.polls
    return {"requests": emu.stats()["requests"], "polls": polls, "seen": seen}


async def test_a_thousand_subscribers_cost_exactly_what_no_subscriber_costs(
    stepped: tuple[Emulator, ManualClock],
) -> None:
    """``events``: subscribers change nothing the watcher does; the counts are equal."""
    alone = await _run(stepped, "events", 0)
    watched = await _run(stepped, "events", 1000)
    assert watched["requests"] == alone["requests"]
    assert alone["requests"] == {"GET /api/events": 1, "POST /api/ai/queue": 1}
    assert all(seen == ["queued", "succeeded"] for seen in watched["seen"])  # no polls


@pytest.mark.parametrize("mode", ["auto", "shared"])
async def test_a_thousand_subscribers_cost_one_list_request_per_tick_not_per_subscriber(
    stepped: tuple[Emulator, ManualClock], mode: CompletionMode
) -> None:
    """Every subscriber sees queued, processing, succeeded; each tick is one list request,
    and the final row is read at most once, whatever the number of subscribers."""
    run = await _run(stepped, mode, 1000)
    requests = run["requests"]
    assert requests["POST /api/ai/queue"] == 1
    # One list request per tick (a tick still under way when the client closed may not have
    # sent its own).
    assert run["polls"] - 1 <= requests["GET /api/ai/queue"] <= run["polls"]
    assert requests.get("GET /api/ai/queue/{generation_id}", 0) <= 1
    assert {tuple(seen) for seen in run["seen"]} == {("queued", "processing", "succeeded")}


async def test_in_auto_mode_subscribers_make_the_watcher_tick_and_leaving_stops_it(
    emu: Emulator,
) -> None:
    """Behind a healthy stream nothing is polled; a subscriber brings ticks at the shared
    interval, so ``processing`` shows, and when the last one leaves they stop."""
    with_time = emu.state
    async with client_for(emu, "auto") as client:
        with_time.time_scale = 20.0  # 10-40 s queued: still queued when cancelled below
        try:
            generation = await client.enqueue("gpt-image-2", prompt="an ox, polled on demand")
        finally:
            with_time.time_scale = FAST.time_scale
        await eventually(lambda: client.stats.polls >= 1)  # the look when it was tracked
        unwatched = client.stats.polls
        # Six shared intervals with no subscriber: a tick in them would be a wrong one (on a
        # slow machine fewer intervals pass, and the check only weakens).
        await anyio.sleep(0.3)
        assert client.stats.polls == unwatched  # unwatched: the stream alone

        async def watch() -> None:
            async for _ in generation.updates():
                pass

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(watch)
            await eventually(lambda: client.stats.polls >= unwatched + 3)  # one per 50 ms
            task_group.cancel_scope.cancel()
        ticks = client.stats.polls
        await anyio.sleep(0.3)  # six intervals again, no subscriber left
        assert client.stats.polls <= ticks + 1  # (one may have been under way)
        await client.cancel(generation)
        assert generation.status == "cancelled"


async def test_a_reattached_generation_yields_its_row_and_an_unknown_id_raises(
    emu: Emulator,
) -> None:
    async with client_for(emu, "auto") as client:
        made = await client.enqueue("gpt-image-2", prompt="an ox, made elsewhere")
        record = await made
        async with client_for(emu, "auto") as other:
            statuses = [r.status async for r in other.generation(made.id).updates()]
            with pytest.raises(NotFoundError):
                async for _ in other.generation("no-such-id").updates():
                    pass
    assert record.status == "succeeded"
    assert statuses == ["succeeded"]


async def test_closing_the_client_raises_client_closed_error_in_subscribers(
    emu: Emulator,
) -> None:
    seen: list[str] = []
    async with client_for(emu, "auto") as client:
        emu.state.time_scale = 20.0  # 10-40 s queued: still queued when the client closes
        try:
            generation = await client.enqueue("gpt-image-2", prompt="an ox, never finished")
        finally:
            emu.state.time_scale = FAST.time_scale

        async def follow() -> None:
            with pytest.raises(ClientClosedError):
                await _collect(generation, seen)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(follow)
            await eventually(lambda: seen == ["queued"])  # following it
            await client.aclose()
    assert seen == ["queued"]


async def test_poll_mode_reads_each_row_once_per_poll_whatever_the_subscribers() -> None:
    """Per-generation polling, on the scripted fake whose jobs advance one step per read:
    the same three reads with 1,000 subscribers as with none."""
    counts: list[int] = []
    for subscribers in (0, 1000):
        api = FakeAPI()
        async with fake_client(api) as client:
            generation = await client.enqueue("gpt-image-2", prompt="an ox")
            seen: list[list[str]] = [[] for _ in range(subscribers)]
            async with anyio.create_task_group() as task_group:
                for statuses in seen:
                    task_group.start_soon(_collect, generation, statuses)
            await generation
        counts.append(api.calls[f"GET /api/ai/queue/{generation.id}"])
        assert all(statuses[-1] == "succeeded" for statuses in seen)
    assert counts == [3, 3]
