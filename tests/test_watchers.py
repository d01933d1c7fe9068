"""The shared poller and the deadline heap at scale, on fakes: no network, no sleeps to wait out."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import anyio
import anyio.lowlevel
import httpx
import pytest

from oxen_queue import Generation, GenerationRecord, GenerationTimeoutError
from oxen_queue._core import _Deadlines
from oxen_queue._generation import due, fail
from oxen_queue._watch._base import SharedPollWatcher

from .helpers import StubOwner, eventually

pytestmark = pytest.mark.anyio


class _AllFinished:
    """A queue whose active list is empty: every pending generation has finished."""

    def __init__(self) -> None:
        self.fetching = 0
        self.most_at_once = 0
        self.fetched: list[str] = []

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        return {}

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        self.fetching += 1
        self.most_at_once = max(self.most_at_once, self.fetching)
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        self.fetching -= 1
        self.fetched.append(generation_id)
        return GenerationRecord(generation_id=generation_id, status="succeeded")

    def event_stream(self) -> AbstractAsyncContextManager[httpx.Response]:
        raise NotImplementedError


async def test_thousands_finishing_between_two_ticks_are_fetched_a_few_at_a_time() -> None:
    api = _AllFinished()
    watcher = SharedPollWatcher(api, interval=float("inf"))
    owner = StubOwner()
    generations = [Generation(f"g{i}", owner=owner, model="m") for i in range(2000)]
    async with anyio.create_task_group() as task_group:
        watcher.start(task_group)
        for generation in generations:
            watcher.track(generation, fresh=True)
        fail(generations[5], GenerationTimeoutError(generation_id="g5", deadline=1.0))
        await watcher.tick()
        task_group.cancel_scope.cancel()
    assert all(g.done() for g in generations)
    assert api.most_at_once <= 32
    assert len(api.fetched) == 1999  # the one settled meanwhile is not asked for


async def test_one_heap_ends_every_generation_at_its_own_deadline() -> None:
    owner = StubOwner()
    done: list[str] = []
    pending: dict[str, Generation] = {}
    deadlines = _Deadlines(pending)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(deadlines.run)
        for name, seconds in [("late", 0.3), ("early", 0.05), ("none", None), ("mid", 0.15)]:
            generation = Generation(name, owner=owner, deadline=seconds)
            generation.add_done_callback(lambda g: done.append(g.id))
            pending[name] = generation
            if seconds is not None:
                deadlines.add(due(generation), name)
        with anyio.fail_after(5), pytest.raises(GenerationTimeoutError):
            await pending["mid"]  # no timer of its own: the heap wakes it
        await eventually(lambda: len(done) >= 3)
        task_group.cancel_scope.cancel()
    assert done == ["early", "mid", "late"]
    assert not pending["none"].done()
    with pytest.raises(GenerationTimeoutError):
        pending["early"].result()
