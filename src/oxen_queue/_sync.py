"""What the blocking ``Client`` runs on: an event loop in a thread, and the blocking handles.

[`Client`][oxen_queue.Client] (generated from [`AsyncClient`][oxen_queue.AsyncClient] into
``_sync_client.py`` by ``.ci/codegen.py``) runs one [`AsyncClient`][oxen_queue.AsyncClient] on an
event loop of its own, in a daemon thread, and calls into it through anyio's blocking portal: there
is no second copy of the logic. It works from plain scripts and from a thread whose own event loop
is running (a notebook cell), since that loop is never used. Ctrl-C interrupts a wait cleanly: the
waiting task is cancelled (a ``generate()`` then cancels its job upstream) and ``KeyboardInterrupt``
propagates.

This module is the hand-written part the generated code delegates to:

- `Bridge`: the loop thread and the open ``AsyncClient`` a client and its views share;
  ``run`` waits for a coroutine on the loop, ``call`` calls a plain function there;
- the blocking handles: [`SyncGeneration`][oxen_queue.SyncGeneration],
  [`SyncGenerationHistory`][oxen_queue.SyncGenerationHistory], and `SyncGenerationMap`
  (``Client.pending``);
- `unwrap`: a blocking handle given as an argument, as the ``Generation`` it wraps.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
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

__all__ = ["Bridge", "SyncGeneration", "SyncGenerationHistory", "SyncGenerationMap", "unwrap"]

T = TypeVar("T")
U = TypeVar("U")


class _LoopThread:
    """An event loop in a daemon thread, reachable through a blocking portal.

    A daemon thread, so that a notebook that never closes its client does not hang at exit.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self.stopped = False
        self._thread = threading.Thread(target=self._main, name="oxen-queue-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None
        return self._portal

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # surfaced to the constructor
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        # Imported here: only the blocking Client needs it, and importing oxen_queue should
        # not cost an AsyncClient's users (a cold start) for it.
        from anyio.from_thread import BlockingPortal

        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def stop(self) -> None:
        self.portal.call(self.portal.stop)
        self._thread.join()
        self.stopped = True


class Bridge:
    """The event loop thread of a [`Client`][oxen_queue.Client] (and its views) and the open
    [`AsyncClient`][oxen_queue.AsyncClient] they share.

    Every call from the client's thread into the ``AsyncClient`` goes through it: coroutines
    with `run`, plain functions and properties with `call`, so that the client's
    state is only ever touched on its own loop.
    """

    __slots__ = ("_context", "_loop")

    def __init__(
        self, loop: _LoopThread, context: AbstractContextManager[AsyncClient] | None
    ) -> None:
        self._loop = loop
        self._context = context

    @classmethod
    def open(cls, options: dict[str, Any]) -> tuple[Bridge, AsyncClient]:
        """Start a loop thread, make an ``AsyncClient(**options)`` on it and open it.

        Raises:
            InvalidParamsError: As ``AsyncClient`` (the thread is stopped first).
        """
        loop = _LoopThread()
        try:
            client = loop.portal.call(functools.partial(_make_client, options))
            context = loop.portal.wrap_async_context_manager(client)
            context.__enter__()
        except BaseException:
            loop.stop()
            raise
        return cls(loop, context), client

    @property
    def closed(self) -> bool:
        """Whether `close` was called (the loop may still be winding down)."""
        return self._context is None

    def run(self, awaitable: Awaitable[T]) -> T:
        """Wait for an awaitable (an ``AsyncClient`` call, made in the caller's thread) on the
        loop, interruptibly: Ctrl-C cancels it there and propagates.

        Raises:
            ClientClosedError: The client is closed (the awaitable is closed unawaited).
        """
        if self._context is None:
            _discard(awaitable)
            raise ClientClosedError("this Client is closed; make a new one")
        try:
            future = self._loop.portal.start_task_soon(_await, awaitable)
        except RuntimeError:
            _discard(awaitable)
            if self._context is None:  # closed by another thread since the check above
                raise ClientClosedError("this Client is closed; make a new one") from None
            raise
        return _wait(future)

    def call(self, function: Callable[[], T]) -> T:
        """Call a plain function on the loop's thread and return what it returns (an awaitable
        is returned as it is, not awaited).

        Once the client is closing (another thread may be closing it now, the portal
        already stopped) or the loop has stopped, the function is called in the caller's
        thread, and the client's own checks answer (a closed client refuses work with
        ``ClientClosedError``, its ``stats`` are still read).
        """
        if not self._loop.stopped:
            try:
                return self._loop.portal.call(_returning, function)
            except RuntimeError:
                if self._context is not None and not self._loop.stopped:
                    raise  # the function's own, the client open
        return function()

    def close(self) -> None:
        """Close the ``AsyncClient`` and stop the loop thread; idempotent."""
        context, self._context = self._context, None
        if context is not None:
            try:
                context.__exit__(None, None, None)
            finally:
                self._loop.stop()


class SyncGenerationHistory:
    """The rows of the history, page after page: ``for record in history``.

    Made by [`Client.iter_generations`][oxen_queue.Client.iter_generations]; the blocking form of
    [`GenerationHistory`][oxen_queue.GenerationHistory] (each page is fetched when the rows before
    it have been consumed).
    """

    __slots__ = ("_bridge", "_history")

    def __init__(self, bridge: Bridge, history: GenerationHistory) -> None:
        self._bridge = bridge
        self._history = history

    def __repr__(self) -> str:
        return repr(self._history).replace("<GenerationHistory", "<SyncGenerationHistory", 1)

    @property
    def total_cost(self) -> Decimal | None:
        """What the whole filtered set was charged (``None`` before the first page, and
        when nothing in it has been charged)."""
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
        history = self._history

        async def step() -> GenerationRecord | None:
            # A coroutine cannot raise StopAsyncIteration through the portal meaningfully:
            # end of rows is None here, StopIteration there.
            try:
                return await history.__anext__()
            except StopAsyncIteration:
                return None

        record = self._bridge.run(step())
        if record is None:
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
            timeout: Seconds to wait; ``None`` waits up to the generation's deadline. On
                expiry ``TimeoutError`` is raised and the generation carries on.

        Raises:
            GenerationFailedError, GenerationCancelledError, GenerationTimeoutError: As ``await``.
            TimeoutError: ``timeout`` expired.
            KeyboardInterrupt: Ctrl-C; the wait is abandoned, the generation carries on.
        """
        return self._bridge.run(self._generation.wait(timeout=timeout))

    def cancel(self) -> None:
        """Cancel the job upstream."""
        self._bridge.run(self._generation.cancel())

    def updates(self) -> Iterator[GenerationRecord]:
        """Each status change, as a record, until the final one; blocks between them.

        As [`Generation.updates`][oxen_queue.Generation.updates]: the final record (``succeeded``,
        ``failed``, ``cancelled``) is the last item; a deadline or a closed client raises. Ctrl-C
        ends the subscription and the generation carries on, as does leaving the loop early once
        the iterator is closed (``break`` from a ``for`` closes it when it is collected).
        """
        updates = self._generation.updates()

        async def step() -> GenerationRecord | None:
            return await anext(updates, None)

        try:
            while (record := self._bridge.run(step())) is not None:
                yield record
        finally:
            if not self._bridge.closed:  # else the loop is gone with it
                self._bridge.run(updates.aclose())

    def download(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Wait for the result, then save it."""
        return self._bridge.run(self._generation.download(path))


class SyncGenerationMap(Mapping[str, SyncGeneration]):
    """A read-only view of generations by id (``Client.pending``), read on the client's loop:
    each lookup sees the current state, each item is a
    [`SyncGeneration`][oxen_queue.SyncGeneration]."""

    __slots__ = ("_bridge", "_generations")

    def __init__(self, bridge: Bridge, generations: Mapping[str, Generation]) -> None:
        self._bridge = bridge
        self._generations = generations

    def __getitem__(self, generation_id: str) -> SyncGeneration:
        generation = self._bridge.call(lambda: self._generations[generation_id])
        return SyncGeneration(self._bridge, generation)

    def __iter__(self) -> Iterator[str]:
        # The ids as they are now: the loop may add or drop some while the caller iterates.
        return iter(self._bridge.call(lambda: list(self._generations)))

    def __len__(self) -> int:
        return self._bridge.call(lambda: len(self._generations))

    def __repr__(self) -> str:
        return f"<SyncGenerationMap of {len(self)} generations>"


def unwrap(value: SyncGeneration | U) -> Generation | U:
    """A blocking handle given to a ``Client`` method, as the ``Generation`` it wraps (any
    other value as it is), for the ``AsyncClient`` method it delegates to."""
    return value._generation if isinstance(value, SyncGeneration) else value


async def _make_client(options: dict[str, Any]) -> AsyncClient:
    # Made on the loop's own thread: everything it creates belongs to that loop.
    return AsyncClient(**options)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _returning(function: Callable[[], T]) -> T:
    # A coroutine, not the bare function: the portal awaits anything awaitable a plain
    # function returns, and a Generation is awaitable (it would wait for the result).
    return function()


def _discard(awaitable: Awaitable[Any]) -> None:
    # A coroutine made for a call that will not run: closed, so that it is not reported
    # as never awaited.
    if isinstance(awaitable, Coroutine):
        awaitable.close()


def _wait(future: concurrent.futures.Future[T]) -> T:
    try:
        return future.result()
    except KeyboardInterrupt:
        # Ctrl-C lands in this (the caller's) thread: cancel the task on the loop too.
        future.cancel()
        raise
