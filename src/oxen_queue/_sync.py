"""``Client``: the same operations without ``await``, for scripts and notebooks.

It runs one :class:`AsyncClient` on an event loop of its own, in a daemon thread, and calls into
it through anyio's blocking portal: there is no second copy of the logic. It works from plain
scripts and from a thread whose own event loop is running (a notebook cell), since that loop is
never used. Ctrl-C interrupts a wait cleanly: the waiting task is cancelled (a ``generate()``
then cancels its job upstream) and ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._client import AsyncClient
from ._exceptions import ClientClosedError
from ._types import DEFAULT, Default

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ._batch import BatchItem
    from ._generation import Generation
    from ._models import GenerationPage, GenerationRecord, ImagesResponse, Model

__all__ = ["Client", "SyncGeneration"]

P = ParamSpec("P")
T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, reachable through a blocking portal.

    A daemon thread, so that a notebook that never closes its client does not hang at exit.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
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
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def stop(self) -> None:
        self.portal.call(self.portal.stop)
        self._thread.join()


class Client:
    """A blocking client for Oxen.ai's generation queue.

    Takes the same arguments as :class:`AsyncClient`. Use it as a context manager, or keep it
    open (a notebook) and call :meth:`close` when done::

        with Client() as client:
            record = client.generate("gpt-image-2", prompt="An ox at sunset")
            client.download(record, "ox.png")
    """

    def __init__(self, **options: Any) -> None:
        self._loop = _LoopThread()
        try:
            self._async = self._loop.portal.call(functools.partial(_make_client, options))
            self._context: AbstractContextManager[AsyncClient] | None = (
                self._loop.portal.wrap_async_context_manager(self._async)
            )
            self._context.__enter__()
        except BaseException:
            self._loop.stop()
            raise

    def __repr__(self) -> str:
        return f"<Client of {self._async!r}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client and stop its event loop. Jobs on the server carry on."""
        context, self._context = self._context, None
        if context is not None:
            try:
                context.__exit__(None, None, None)
            finally:
                self._loop.stop()

    def _run(self, function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a coroutine function on the client's loop and wait for it, interruptibly."""
        if self._context is None:
            raise ClientClosedError("this Client is closed; make a new one")
        return _wait(
            self._loop.portal.start_task_soon(functools.partial(function, *args, **kwargs))
        )

    # -- the operations -----------------------------------------------------------------

    def enqueue(self, model: str, /, **params: Any) -> SyncGeneration:
        """Enqueue one generation; see :meth:`AsyncClient.enqueue`."""
        return SyncGeneration(self, self._run(self._async.enqueue, model, **params))

    def enqueue_many(
        self, model: str, /, num_generations: int, **params: Any
    ) -> list[SyncGeneration]:
        """Enqueue several generations in one request; see :meth:`AsyncClient.enqueue_many`."""
        generations = self._run(self._async.enqueue_many, model, num_generations, **params)
        return [SyncGeneration(self, g) for g in generations]

    def generate(self, model: str, /, **params: Any) -> GenerationRecord:
        """Enqueue and wait; Ctrl-C cancels the job upstream. See :meth:`AsyncClient.generate`."""
        return self._run(self._async.generate, model, **params)

    def generate_images(self, model: str, /, *, prompt: str, **params: Any) -> ImagesResponse:
        """The blocking endpoint; see :meth:`AsyncClient.generate_images`."""
        return self._run(self._async.generate_images, model, prompt=prompt, **params)

    def generation(
        self, generation_id: str, *, deadline: float | Default | None = DEFAULT
    ) -> SyncGeneration:
        """Reattach to a generation by id; see :meth:`AsyncClient.generation`."""

        async def reattach() -> Generation:
            # A coroutine, not the bare method: the portal awaits anything awaitable a plain
            # function returns, and a Generation is awaitable (it would wait for the result).
            return self._async.generation(generation_id, deadline=deadline)

        return SyncGeneration(self, self._run(reattach))

    def get_generation(self, generation_id: str) -> GenerationRecord:
        """The current row of a generation."""
        return self._run(self._async.get_generation, generation_id)

    def cancel(self, generation: SyncGeneration | str) -> None:
        """Cancel a generation upstream."""
        target = generation.id if isinstance(generation, SyncGeneration) else generation
        self._run(self._async.cancel, target)

    def list_queue(self, **filters: Any) -> list[GenerationRecord]:
        """Active rows (or rows of ``status``); see :meth:`AsyncClient.list_queue`."""
        return self._run(self._async.list_queue, **filters)

    def list_generations(self, **query: Any) -> GenerationPage:
        """A page of history; see :meth:`AsyncClient.list_generations`."""
        return self._run(self._async.list_generations, **query)

    def get_model(self, model_id: str) -> Model:
        """A model and its parameter schema."""
        return self._run(self._async.get_model, model_id)

    def list_models(self) -> list[Model]:
        """Every model."""
        return self._run(self._async.list_models)

    def download(
        self,
        source: SyncGeneration | GenerationRecord,
        path: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Save a result file; see :meth:`AsyncClient.download`."""
        target = source._generation if isinstance(source, SyncGeneration) else source
        return self._run(self._async.download, target, path)

    def batch(
        self,
        model: str,
        requests: Iterable[Mapping[str, Any] | BatchItem],
        *,
        concurrency: int = 32,
    ) -> list[BatchItem]:
        """Run many requests and wait for all; see :func:`oxen_queue.run_batch`."""
        return self._run(self._async.batch, model, requests, concurrency=concurrency)


class SyncGeneration:
    """The blocking handle of a generation, from :class:`Client`.

    Attributes:
        id: The generation id.
    """

    __slots__ = ("_client", "_generation", "id")

    def __init__(self, client: Client, generation: Generation) -> None:
        self._client = client
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
        return self._client._run(self._generation.wait, timeout=timeout)

    def cancel(self) -> None:
        """Cancel the job upstream."""
        self._client._run(self._generation.cancel)

    def download(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Wait for the result, then save it."""
        return self._client._run(self._generation.download, path)


async def _make_client(options: dict[str, Any]) -> AsyncClient:
    # Made on the loop's own thread: everything it creates belongs to that loop.
    return AsyncClient(**options)


def _wait(future: concurrent.futures.Future[T]) -> T:
    try:
        return future.result()
    except KeyboardInterrupt:
        # Ctrl-C lands in this (the caller's) thread: cancel the task on the loop too.
        future.cancel()
        raise
