"""Many generations at once: ``as_completed`` and a bounded batch runner."""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ._exceptions import BudgetExceededError, OxenError

if TYPE_CHECKING:
    from ._client import AsyncClient
    from ._generation import Generation
    from ._models import GenerationRecord


class _AsCompleted:
    """Async iterator over generations in the order they finish.

    A class, not an async generator: a cancelled ``__anext__`` (``asyncio.wait_for``, a
    ``move_on_after`` around one step) must leave the iterator usable, with every generation
    still to come; a cancellation thrown into a generator would end it, and the caller would
    read that as "all done".
    """

    def __init__(self, generations: Iterable[Generation]) -> None:
        unique = list(dict.fromkeys(generations))
        self._left = len(unique)
        self._send, self._receive = anyio.create_memory_object_stream["Generation"](math.inf)
        for generation in unique:
            generation.add_done_callback(self._push)

    def _push(self, generation: Generation) -> None:
        # The consumer may have stopped iterating: a late finisher is simply not reported.
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(generation)

    def __aiter__(self) -> _AsCompleted:
        return self

    async def __anext__(self) -> Generation:
        if self._left == 0:
            await self.aclose()
            raise StopAsyncIteration
        try:
            generation = await self._receive.receive()
        except anyio.ClosedResourceError:  # stopped early by aclose()
            raise StopAsyncIteration from None
        self._left -= 1  # only once received: a cancelled wait loses nothing
        return generation

    async def aclose(self) -> None:
        """Close the streams (later finishers are not reported)."""
        self._send.close()
        self._receive.close()


def as_completed(generations: Iterable[Generation]) -> AsyncIterator[Generation]:
    """Yield each generation once it is done, in the order they finish.

    A yielded generation may have succeeded or not: ``generation.result()`` returns its record
    or raises its error without waiting. Costs no request: it listens to the same watcher
    that resolves ``await generation``.

    Args:
        generations: The generations to wait for (one named twice is yielded once).

    Returns:
        An async iterator of the same generations. A step cancelled while it waits (say by
        ``asyncio.wait_for``) loses nothing: the next one yields the next to finish.

    Example:
        ```python
        async for generation in as_completed(generations):
            try:
                print(generation.result().result_url)
            except GenerationError as exc:
                print("failed:", exc)
        ```
    """
    return _AsCompleted(generations)


@dataclass(eq=False, slots=True)
class BatchItem:
    """One request of a batch and what became of it.

    Attributes:
        params: The request's parameters (``prompt``, ...).
        model: The request's own model, overriding the batch's.
        generation_id: Set before the run to reattach to an existing generation instead of
            enqueueing (resuming an interrupted batch); set by the run once enqueued.
        generation: The live handle, once enqueued or reattached.
        record: The final record, when it succeeded.
        error: What went wrong, when it did not (``GenerationFailedError``, ...).
        tag: Anything the caller wants to carry along (a manifest line number, ...).
    """

    params: dict[str, Any]
    model: str | None = None
    generation_id: str | None = None
    generation: Generation | None = None
    record: GenerationRecord | None = None
    error: BaseException | None = None
    tag: Any = None
    finished: bool = False

    @property
    def status(self) -> str:
        """``pending`` before enqueueing (or never enqueued: the client's budget stopped the
        batch first), then the generation's status, or ``error``."""
        if self.generation is not None:
            return self.generation.status
        return "error" if self.error is not None else "pending"


ProgressCallback = Callable[[BatchItem], Awaitable[None] | None]
"""Called with an item when it was enqueued and when it finished; may be async."""


async def _notify(callback: ProgressCallback | None, item: BatchItem) -> None:
    if callback is not None:
        result = callback(item)
        if inspect.isawaitable(result):
            await result


async def run_batch(
    client: AsyncClient,
    model: str,
    requests: Iterable[Mapping[str, Any] | BatchItem],
    *,
    concurrency: int = 32,
    on_enqueued: ProgressCallback | None = None,
    on_finished: ProgressCallback | None = None,
) -> list[BatchItem]:
    """Run many requests with at most ``concurrency`` generations in flight at once.

    Every request ends in its item: a record, or the error that stopped it (one bad request
    never aborts the batch). Items that already carry a ``generation_id`` are reattached, never
    enqueued again, which is how an interrupted batch resumes.

    A client with a ``max_spend`` stops the batch at its budget: once an enqueue is refused
    with [`BudgetExceededError`][oxen_queue.BudgetExceededError] (that item's ``error``), no further
    item is enqueued. Those left are not sent: their ``status`` stays ``pending``, with no error, so
    they can be run later. Generations already in flight, and reattached items, carry on.

    Args:
        client: An open client.
        model: The model of every request.
        requests: Parameter mappings, or [`BatchItem`][oxen_queue.BatchItem] objects (to resume, or
            to keep references for a live display).
        concurrency: Generations in flight at once (enqueued and not finished).
        on_enqueued: Called once an item has its generation (e.g. to write a manifest line).
        on_finished: Called once an item is done (e.g. to save its file); awaited inside the
            concurrency bound.

    Returns:
        The items, in the order of ``requests``.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    items = [r if isinstance(r, BatchItem) else BatchItem(params=dict(r)) for r in requests]
    queue = iter(items)
    over_budget = False

    async def worker() -> None:
        nonlocal over_budget
        for item in queue:
            if over_budget and item.generation_id is None:
                continue  # not sent: the budget was reached
            try:
                if item.generation_id is not None:
                    item.generation = client.generation(item.generation_id)
                else:
                    item.generation = await client.enqueue(item.model or model, **item.params)
                    item.generation_id = item.generation.id
                await _notify(on_enqueued, item)
                item.record = await item.generation
            except OxenError as exc:
                item.error = exc
            over_budget = over_budget or isinstance(item.error, BudgetExceededError)
            item.finished = True
            await _notify(on_finished, item)

    async with anyio.create_task_group() as task_group:
        for _ in range(min(concurrency, len(items))):
            task_group.start_soon(worker)
    return items
