"""The runtime of the generated blocking ``Client`` (an ``AsyncClient`` on an event loop of its
own, in a daemon thread, called through anyio's blocking portal: `Bridge`) and its handles.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._client import AsyncClient
from ._exceptions import ClientClosedError
from ._generation import Generation

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from decimal import Decimal

    from anyio.from_thread import BlockingPortal

    from ._history import GenerationHistory
    from ._models import GenerationRecord

T = TypeVar("T")
U = TypeVar("U")


def _start_loop() -> tuple[BlockingPortal, threading.Thread]:
    """An event loop in a daemon thread (a client left open never blocks exit), and its portal."""
    started: concurrent.futures.Future[BlockingPortal] = concurrent.futures.Future()

    async def serve() -> None:
        # Imported here: importing oxen_queue should not cost AsyncClient's users this.
        from anyio.from_thread import BlockingPortal

        async with BlockingPortal() as portal:
            started.set_result(portal)
            await portal.sleep_until_stopped()

    def main() -> None:
        try:
            anyio.run(serve)
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)

    thread = threading.Thread(target=main, name="oxen-queue-loop", daemon=True)
    thread.start()
    return started.result(), thread


@dataclass(slots=True, eq=False)
class Bridge:
    """The loop thread of a [`Client`][oxen_queue.Client] and its views, and the open
    ``AsyncClient`` they share, whose state every call here touches on its own loop only."""

    _portal: BlockingPortal
    _thread: threading.Thread
    _context: AbstractContextManager[AsyncClient] | None

    @classmethod
    def open(cls, options: dict[str, Any]) -> tuple[Bridge, AsyncClient]:
        """Start a loop thread, and on it make and open ``AsyncClient(**options)`` (if that
        raises, the thread is stopped first)."""
        bridge = cls(*_start_loop(), None)
        try:
            client = bridge._portal.call(_make_client, options)
            bridge._context = bridge._portal.wrap_async_context_manager(client)
            bridge._context.__enter__()
        except BaseException:
            bridge._stop()
            raise
        return bridge, client

    def run(self, awaitable: Awaitable[T]) -> T:
        """Wait on the loop for an awaitable made in the caller's thread; Ctrl-C cancels it.
        ``ClientClosedError`` once the client is closed."""
        try:
            if self._context is None:
                raise RuntimeError  # as a stopped portal does
            future = self._portal.start_task_soon(_await, awaitable)
        except RuntimeError:
            if isinstance(awaitable, Coroutine):  # else Python warns it was never awaited
                awaitable.close()
            if self._context is None:  # perhaps closed by another thread meanwhile
                raise ClientClosedError("this Client is closed; make a new one") from None
            raise
        try:
            return future.result()
        except KeyboardInterrupt:  # raised in the caller's thread: cancel the task too
            future.cancel()
            raise

    def call(self, function: Callable[[], T]) -> T:
        """Call a plain function on the loop, or, once the client is closing, in the caller's
        thread (the client's own checks then answer); its result is not awaited."""
        if self._thread.is_alive():
            try:
                return self._portal.call(_returning, function)
            except RuntimeError:
                if self._context is not None and self._thread.is_alive():
                    raise  # the function's own, the client open
        return function()

    def close(self) -> None:
        """Close the ``AsyncClient`` and stop the loop thread; idempotent."""
        context, self._context = self._context, None
        if context is not None:
            try:
                context.__exit__(None, None, None)
            finally:
                self._stop()

    def _stop(self) -> None:
        self._portal.call(self._portal.stop)
        self._thread.join()


class SyncGenerationHistory:
    """The blocking [`GenerationHistory`][oxen_queue.GenerationHistory], from
    [`Client.iter_generations`][oxen_queue.Client.iter_generations]: ``for record in history``."""

    __slots__ = ("_bridge", "_history")

    def __init__(self, bridge: Bridge, history: GenerationHistory) -> None:
        self._bridge, self._history = bridge, history

    def __repr__(self) -> str:
        return repr(self._history).replace("<GenerationHistory", "<SyncGenerationHistory", 1)

    @property
    def total_cost(self) -> Decimal | None:
        """What the whole filtered set was charged (``None``: no page yet, or nothing charged)."""
        return self._history.total_cost

    @property
    def total_entries(self) -> int | None:
        """Rows in the whole filtered set (``None`` before the first page)."""
        return self._history.total_entries

    @property
    def total_pages(self) -> int | None:
        """Pages in all at this page size (``None`` before the first page)."""
        return self._history.total_pages

    def __iter__(self) -> Iterator[GenerationRecord]:
        return self

    def __next__(self) -> GenerationRecord:
        if (record := self._bridge.run(_next(self._history))) is None:
            raise StopIteration
        return record


class SyncGeneration:
    """The blocking handle of a generation, from [`Client`][oxen_queue.Client].

    Attributes:
        id: The generation id.
    """

    __slots__ = ("_bridge", "_generation", "id")

    def __init__(self, bridge: Bridge, generation: Generation) -> None:
        self._bridge = bridge
        self._generation = generation
        self.id = generation.id

    def __repr__(self) -> str:
        return repr(self._generation).replace("<Generation", "<SyncGeneration", 1)

    @property
    def status(self) -> str:
        """The last status seen."""
        return self._generation.status

    def done(self) -> bool:
        """Whether the generation has an outcome."""
        return self._generation.done()

    def result(self, timeout: float | None = None) -> GenerationRecord:
        """Block until the final record.

        Args:
            timeout: Seconds to wait; ``None`` waits up to the generation's deadline.

        Raises:
            GenerationFailedError, GenerationCancelledError, GenerationTimeoutError: As ``await``.
            TimeoutError: ``timeout`` expired (the generation carries on).
            KeyboardInterrupt: Ctrl-C; the wait is abandoned, the generation carries on.
        """
        return self._bridge.run(self._generation.wait(timeout=timeout))

    def cancel(self) -> None:
        """Cancel the job upstream."""
        self._bridge.run(self._generation.cancel())

    def updates(self) -> Iterator[GenerationRecord]:
        """Each status change, as a record, until the final one, as
        [`Generation.updates`][oxen_queue.Generation.updates]; blocks between them. Ctrl-C or
        closing the iterator ends the subscription; the generation carries on."""
        updates = self._generation.updates()
        try:
            while (record := self._bridge.run(_next(updates))) is not None:
                yield record
        finally:
            with contextlib.suppress(ClientClosedError):  # closed: the loop is gone with it
                self._bridge.run(updates.aclose())

    def download(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Wait for the result, then save it."""
        return self._bridge.run(self._generation.download(path))


@dataclass(slots=True, eq=False, repr=False)
class SyncGenerationMap(Mapping[str, SyncGeneration]):
    """A read-only view of generations by id (``Client.pending``), read on the client's loop
    at each lookup, each a [`SyncGeneration`][oxen_queue.SyncGeneration]."""

    _bridge: Bridge
    _generations: Mapping[str, Generation]

    def __getitem__(self, generation_id: str) -> SyncGeneration:
        generation = self._bridge.call(lambda: self._generations[generation_id])
        return SyncGeneration(self._bridge, generation)

    def __iter__(self) -> Iterator[str]:
        return iter(self._bridge.call(lambda: list(self._generations)))  # the ids as of now

    def __len__(self) -> int:
        return self._bridge.call(lambda: len(self._generations))

    def __repr__(self) -> str:
        return f"<SyncGenerationMap of {len(self)} generations>"


def unwrap(value: SyncGeneration | U) -> Generation | U:
    """A ``SyncGeneration`` argument as the ``Generation`` it wraps; any other value as it is."""
    return value._generation if isinstance(value, SyncGeneration) else value


async def _make_client(options: dict[str, Any]) -> AsyncClient:
    # Made on the loop's own thread: everything it creates belongs to that loop.
    return AsyncClient(**options)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _next(iterator: AsyncIterator[T]) -> T | None:
    # Not anext() itself, which makes the __anext__ coroutine at once: Bridge.run closes an
    # outer coroutine it does not run, before any inner one exists.
    return await anext(iterator, None)


async def _returning(function: Callable[[], T]) -> T:
    # A coroutine: the portal would await an awaitable the function returned (a Generation).
    return function()
