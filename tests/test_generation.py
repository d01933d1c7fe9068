"""Generations as awaitable futures: gather, wait_for, task groups, many waiters, outcomes."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest
import sniffio

from oxen_queue import (
    ClientClosedError,
    Generation,
    GenerationCancelledError,
    GenerationFailedError,
    GenerationRecord,
    GenerationTimeoutError,
    PollPolicy,
    as_completed,
)

from .fakes import FakeAPI
from .helpers import fake_client

pytestmark = pytest.mark.anyio


async def test_await_returns_the_succeeded_record() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="An ox at sunset")
        assert generation.status == "queued"
        record = await generation
    assert isinstance(record, GenerationRecord)
    assert record.generation_id == generation.id
    assert record.status == "succeeded"
    assert record.result_url == f"https://files.oxen.test/{generation.id}.png"
    assert record.params == {"prompt": "An ox at sunset"}
    assert generation.status == "succeeded"
    assert generation.done()


async def test_awaiting_twice_or_from_many_tasks_costs_no_extra_request() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        results: list[GenerationRecord] = []

        async def wait() -> None:
            results.append(await generation)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(wait)
        reads = api.calls[f"GET /api/ai/queue/{generation.id}"]
        again = await generation
    assert reads == 3  # queued, processing, succeeded: one poll stream for twenty waiters
    assert api.calls[f"GET /api/ai/queue/{generation.id}"] == reads
    assert all(r is results[0] for r in results)
    assert again is results[0]


async def test_generations_work_with_asyncio_gather_and_task_group() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"ox {i}") for i in range(10)]
        records = await _gather(generations)
    assert [r.generation_id for r in records] == [g.id for g in generations]
    assert {r.prompt for r in records} == {f"ox {i}" for i in range(10)}  # type: ignore[attr-defined]


async def _gather(generations: list[Generation]) -> list[GenerationRecord]:
    """``asyncio.gather`` on asyncio; an anyio task group on trio."""
    if sniffio.current_async_library() == "asyncio":
        return list(await asyncio.gather(*generations))
    results: dict[int, GenerationRecord] = {}

    async def one(i: int, g: Generation) -> None:
        results[i] = await g

    async with anyio.create_task_group() as tg:
        for i, g in enumerate(generations):
            tg.start_soon(one, i, g)
    return [results[i] for i in range(len(generations))]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_task_group_and_wait_for(anyio_backend: str) -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        first = await client.enqueue("gpt-image-2", prompt="a")
        second = await client.enqueue("gpt-image-2", prompt="b")
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(first.wait())
            t2 = tg.create_task(asyncio.wait_for(second, 5))
        assert t1.result().status == t2.result().status == "succeeded"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_wait_for_timing_out_leaves_client_and_generation_usable(anyio_backend: str) -> None:
    api = FakeAPI(lifecycle=["queued"] + ["processing"] * 30 + ["succeeded"])
    slow = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0)
    async with fake_client(api, poll_policy=slow) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(generation, 0.02)
        assert not generation.done()
        record = await asyncio.wait_for(generation, 5)
        assert record.status == "succeeded"
        other = await client.generate("gpt-image-2", prompt="still works")
        assert other.status == "succeeded"


async def test_wait_timeout_raises_timeout_error_and_generation_carries_on() -> None:
    api = FakeAPI(lifecycle=["queued"] + ["processing"] * 30 + ["succeeded"])
    slow = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0)
    async with fake_client(api, poll_policy=slow) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(TimeoutError) as info:
            await generation.wait(timeout=0.02)
        assert not isinstance(info.value, GenerationTimeoutError)
        assert (await generation.wait(timeout=5)).status == "succeeded"


async def test_deadline_raises_generation_timeout_error_with_the_id() -> None:
    api = FakeAPI(lifecycle=["queued"] + ["processing"] * 1000)
    slow = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0, deadline=0.05)
    async with fake_client(api, poll_policy=slow) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(GenerationTimeoutError) as info:
            await generation
        assert isinstance(info.value, TimeoutError)
        assert info.value.generation_id == generation.id
        assert generation.id in str(info.value)
        with pytest.raises(GenerationTimeoutError):  # the deadline ends the generation for good
            generation.result()


async def test_per_call_deadline_overrides_the_policy() -> None:
    api = FakeAPI(lifecycle=["queued"] + ["processing"] * 1000)
    slow = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0, deadline=None)
    async with fake_client(api, poll_policy=slow) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox", deadline=0.03)
        with pytest.raises(GenerationTimeoutError):
            await generation


async def test_failed_generation_raises_with_the_server_message() -> None:
    api = FakeAPI(lifecycle=["queued", "failed"], error_message="Insufficient credits")
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(GenerationFailedError) as info:
            await generation
        with pytest.raises(GenerationFailedError) as again:
            await generation
    assert info.value.error_message == "Insufficient credits"
    assert info.value.generation_id == generation.id
    assert "Insufficient credits" in str(info.value)
    assert info.value.record is not None and info.value.record.status == "failed"
    assert again.value is info.value


async def test_cancelled_generation_raises_cancelled_error() -> None:
    api = FakeAPI(lifecycle=["queued", "cancelled"])
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(GenerationCancelledError) as info:
            await generation
    assert info.value.generation_id == generation.id


async def test_unknown_status_keeps_polling_until_a_known_final_one() -> None:
    api = FakeAPI(lifecycle=["queued", "uploading", "uploading", "succeeded"])
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        statuses: list[str] = []
        while not generation.done():
            statuses.append(generation.status)
            await anyio.lowlevel.checkpoint()
        record = await generation
    assert record.status == "succeeded"
    assert "uploading" in statuses


async def test_result_before_done_raises_runtime_error() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    async with fake_client(api, poll_policy=PollPolicy(initial=10)) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(RuntimeError, match="not done"):
            generation.result()
        assert "queued" in repr(generation)


async def test_closing_the_client_ends_pending_generations_with_client_closed() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    async with fake_client(api, poll_policy=PollPolicy(initial=10)) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        assert client.pending == {generation.id: generation}
    with pytest.raises(ClientClosedError, match="reattach"):
        await generation
    with pytest.raises(ClientClosedError):
        await client.enqueue("gpt-image-2", prompt="too late")


async def test_as_completed_yields_in_finishing_order() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        slow = await client.enqueue("gpt-image-2", prompt="slow")
        api.jobs[slow.id].statuses = ["queued"] * 20 + ["succeeded"]
        fast = await client.enqueue("gpt-image-2", prompt="fast")
        failing = await client.enqueue("gpt-image-2", prompt="fails")
        api.jobs[failing.id].statuses = ["queued", "processing", "processing", "failed"]
        order = [g async for g in as_completed([slow, fast, failing, fast])]
    assert order == [fast, failing, slow]
    with pytest.raises(GenerationFailedError):
        failing.result()


async def test_as_completed_survives_a_cancelled_step() -> None:
    """A step given up on (``asyncio.wait_for``, ``move_on_after``) loses nothing: the
    iterator goes on and yields every generation (an async generator would have ended)."""
    api = FakeAPI()
    async with fake_client(api) as client:
        slow = await client.enqueue("gpt-image-2", prompt="slow")
        api.jobs[slow.id].statuses = ["queued"] * 20 + ["succeeded"]
        fast = await client.enqueue("gpt-image-2", prompt="fast")
        api.jobs[fast.id].statuses = ["queued"] * 5 + ["succeeded"]
        finished = as_completed([slow, fast])
        with anyio.move_on_after(0):
            await finished.__anext__()
        order = [g async for g in finished]
    assert order == [fast, slow]


async def test_reattach_by_id_resolves_a_job_made_elsewhere() -> None:
    api = FakeAPI()
    async with fake_client(api) as maker:
        made = await maker.enqueue("gpt-image-2", prompt="elsewhere")
        await made
    async with fake_client(api) as client:
        generation = client.generation(made.id)
        assert client.generation(made.id) is generation
        record = await generation
    assert record.generation_id == made.id
    assert generation.model == "gpt-image-2"
    assert api.calls[f"GET /api/ai/queue/{made.id}"] == 4  # 3 by the maker, 1 on reattach


async def test_done_callback_runs_once_even_if_added_late() -> None:
    api = FakeAPI()
    seen: list[str] = []
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        generation.add_done_callback(lambda g: seen.append("early"))
        await generation
        generation.add_done_callback(lambda g: seen.append("late"))
    assert seen == ["early", "late"]
