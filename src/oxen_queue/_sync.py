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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Self, TypeVar, Unpack, overload

import anyio
import httpx
from anyio.from_thread import BlockingPortal

from ._client import AsyncClient
from ._exceptions import ClientClosedError
from ._models import GenerationRecord
from ._poll import PollPolicy
from ._retry import RetryPolicy
from ._transport import HttpBackend
from ._types import DEFAULT, Default
from ._watch import CompletionMode

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ._batch import BatchItem
    from ._budget import SpendSummary
    from ._generation import Generation
    from ._history import GenerationHistory
    from ._models import GenerationPage, ImagesResponse, Model, VideosResponse
    from ._params import GptImage2EditOptions, GptImage2Options, KlingV26ProTextToVideoOptions
    from ._stats import ClientStats

__all__ = ["Client", "SyncGeneration", "SyncGenerationHistory"]

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


class _Lifetime:
    """What a Client and its views share: the open context of their AsyncClient."""

    __slots__ = ("context",)

    def __init__(self, context: AbstractContextManager[AsyncClient]) -> None:
        self.context: AbstractContextManager[AsyncClient] | None = context


class Client:
    """A blocking client for Oxen.ai's generation queue.

    Takes the same arguments as :class:`AsyncClient`, with the same defaults (see there).
    Use it as a context manager, or keep it open (a notebook) and call :meth:`close` when
    done::

        with Client() as client:
            record = client.generate("gpt-image-2", prompt="An ox at sunset")
            client.download(record, "ox.png")

    Raises:
        InvalidParamsError: No API key, or an unusable base URL (as :class:`AsyncClient`).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        completion: CompletionMode = "auto",
        poll_policy: PollPolicy | None = None,
        shared_poll_interval: float = 1.0,
        backstop_interval: float = 10.0,
        retry: RetryPolicy | None = None,
        timeout: float | httpx.Timeout = 30.0,
        stall_timeout: float = 45.0,
        max_concurrency: int | None = None,
        max_downloads: int = 8,
        ledger: str | None = None,
        validate: bool = True,
        max_download_bytes: int | None = 1 << 30,
        allow_insecure_http: bool = False,
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        http_backend: HttpBackend = "httpx",
        max_spend: Decimal | int | None = None,
    ) -> None:
        # Spelled out (not **options) so editors and type checkers see them; a test keeps
        # them identical to AsyncClient's, defaults included.
        options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "completion": completion,
            "poll_policy": poll_policy,
            "shared_poll_interval": shared_poll_interval,
            "backstop_interval": backstop_interval,
            "retry": retry,
            "timeout": timeout,
            "stall_timeout": stall_timeout,
            "max_concurrency": max_concurrency,
            "max_downloads": max_downloads,
            "ledger": ledger,
            "validate": validate,
            "max_download_bytes": max_download_bytes,
            "allow_insecure_http": allow_insecure_http,
            "verify": verify,
            "transport": transport,
            "http_backend": http_backend,
            "max_spend": max_spend,
        }
        self._loop = _LoopThread()
        try:
            self._async = self._loop.portal.call(functools.partial(_make_client, options))
            context = self._loop.portal.wrap_async_context_manager(self._async)
            context.__enter__()
        except BaseException:
            self._loop.stop()
            raise
        self._lifetime = _Lifetime(context)

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
        """Close the client (and its views) and stop its event loop. Jobs carry on."""
        context, self._lifetime.context = self._lifetime.context, None
        if context is not None:
            try:
                context.__exit__(None, None, None)
            finally:
                self._loop.stop()

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | Default = DEFAULT,
        validate: bool | Default = DEFAULT,
        deadline: float | Default | None = DEFAULT,
    ) -> Client:
        """A view of this client with other defaults; see :meth:`AsyncClient.with_options`."""
        view = object.__new__(Client)
        view._loop = self._loop
        view._lifetime = self._lifetime
        view._async = self._async.with_options(
            timeout=timeout, validate=validate, deadline=deadline
        )
        return view

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the client's counters; see :attr:`AsyncClient.stats`."""
        return self._loop.portal.call(lambda: self._async.stats)

    @property
    def spend(self) -> SpendSummary | None:
        """What the client has committed against its ``max_spend``; see
        :attr:`AsyncClient.spend`."""
        return self._loop.portal.call(lambda: self._async.spend)

    def _run(self, function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a coroutine function on the client's loop and wait for it, interruptibly."""
        if self._lifetime.context is None:
            raise ClientClosedError("this Client is closed; make a new one")
        return _wait(
            self._loop.portal.start_task_soon(functools.partial(function, *args, **kwargs))
        )

    # -- the operations -----------------------------------------------------------------

    @overload
    def enqueue(
        self,
        model: Literal["gpt-image-2"],
        /,
        *,
        prompt: str,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[GptImage2Options],
    ) -> SyncGeneration: ...

    @overload
    def enqueue(
        self,
        model: Literal["gpt-image-2-edit"],
        /,
        *,
        prompt: str,
        input_image: str | list[str],
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[GptImage2EditOptions],
    ) -> SyncGeneration: ...

    @overload
    def enqueue(
        self,
        model: Literal["kling-video-v2-6-pro-text-to-video"],
        /,
        *,
        prompt: str,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[KlingV26ProTextToVideoOptions],
    ) -> SyncGeneration: ...

    @overload
    def enqueue(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Any,
    ) -> SyncGeneration: ...

    def enqueue(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = DEFAULT,
        validate: bool | None = None,
        extra_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> SyncGeneration:
        """Enqueue one generation; see :meth:`AsyncClient.enqueue`."""

        async def enqueue() -> Generation:
            return await self._async.enqueue(
                model, deadline=deadline, validate=validate, extra_params=extra_params, **params
            )

        return SyncGeneration(self, self._run(enqueue))

    def enqueue_many(
        self,
        model: str,
        /,
        num_generations: int,
        *,
        deadline: float | Default | None = DEFAULT,
        validate: bool | None = None,
        extra_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> list[SyncGeneration]:
        """Enqueue ``num_generations`` generations of one request; see
        :meth:`AsyncClient.enqueue_many`."""
        generations = self._run(
            self._async.enqueue_many,
            model,
            num_generations,
            deadline=deadline,
            validate=validate,
            extra_params=extra_params,
            **params,
        )
        return [SyncGeneration(self, g) for g in generations]

    @overload
    def generate(
        self,
        model: Literal["gpt-image-2"],
        /,
        *,
        prompt: str,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[GptImage2Options],
    ) -> GenerationRecord: ...

    @overload
    def generate(
        self,
        model: Literal["gpt-image-2-edit"],
        /,
        *,
        prompt: str,
        input_image: str | list[str],
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[GptImage2EditOptions],
    ) -> GenerationRecord: ...

    @overload
    def generate(
        self,
        model: Literal["kling-video-v2-6-pro-text-to-video"],
        /,
        *,
        prompt: str,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[KlingV26ProTextToVideoOptions],
    ) -> GenerationRecord: ...

    @overload
    def generate(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Any,
    ) -> GenerationRecord: ...

    def generate(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = DEFAULT,
        validate: bool | None = None,
        extra_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> GenerationRecord:
        """Enqueue and wait; Ctrl-C cancels the job upstream. See :meth:`AsyncClient.generate`."""

        async def generate() -> GenerationRecord:
            return await self._async.generate(
                model, deadline=deadline, validate=validate, extra_params=extra_params, **params
            )

        return self._run(generate)

    def generate_images(
        self,
        model: str,
        /,
        *,
        prompt: str,
        n: int | None = None,
        response_format: Literal["url", "b64_json"] | None = None,
        timeout: float = 600.0,
        validate: bool | None = None,
        **params: Any,
    ) -> ImagesResponse:
        """The blocking endpoint; see :meth:`AsyncClient.generate_images`."""
        return self._run(
            self._async.generate_images,
            model,
            prompt=prompt,
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
            **params,
        )

    def recover(self, *, wait: float | None = 120.0) -> list[SyncGeneration]:
        """Every job the ledger knows as unfinished; see :meth:`AsyncClient.recover`."""
        return [SyncGeneration(self, g) for g in self._run(self._async.recover, wait=wait)]

    def edit_images(
        self,
        model: str,
        /,
        *,
        prompt: str,
        input_image: str | list[str],
        n: int | None = None,
        response_format: Literal["url", "b64_json"] | None = None,
        timeout: float = 600.0,
        validate: bool | None = None,
        **params: Any,
    ) -> ImagesResponse:
        """The blocking edit endpoint; see :meth:`AsyncClient.edit_images`."""
        return self._run(
            self._async.edit_images,
            model,
            prompt=prompt,
            input_image=input_image,
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
            **params,
        )

    def generate_videos(
        self,
        model: str,
        /,
        *,
        prompt: str | None = None,
        n: int | None = None,
        response_format: Literal["url", "b64_json"] | None = None,
        timeout: float = 1800.0,
        validate: bool | None = None,
        **params: Any,
    ) -> VideosResponse:
        """The blocking video endpoint; see :meth:`AsyncClient.generate_videos`."""
        return self._run(
            self._async.generate_videos,
            model,
            prompt=prompt,
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
            **params,
        )

    def estimate_cost(
        self,
        model: str,
        /,
        *,
        num_generations: int = 1,
        validate: bool | None = None,
        **params: Any,
    ) -> Decimal:
        """What a request would cost; see :meth:`AsyncClient.estimate_cost`."""
        return self._run(
            self._async.estimate_cost,
            model,
            num_generations=num_generations,
            validate=validate,
            **params,
        )

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

    def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """A generation's history row, with its cost; see
        :meth:`AsyncClient.get_generation_details`."""
        return self._run(self._async.get_generation_details, generation_id)

    def cancel(self, generation: SyncGeneration | str) -> None:
        """Cancel a generation upstream."""
        target = generation.id if isinstance(generation, SyncGeneration) else generation
        self._run(self._async.cancel, target)

    def list_queue(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        media_type: Literal["image", "video"] | None = None,
        namespace: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
    ) -> list[GenerationRecord]:
        """Active rows (or rows of ``status``); see :meth:`AsyncClient.list_queue`."""
        return self._run(
            self._async.list_queue,
            model=model,
            status=status,
            media_type=media_type,
            namespace=namespace,
            repo=repo,
            folder=folder,
        )

    def list_generations(
        self,
        *,
        page: int = 1,
        page_size: int = 50,
        model: str | None = None,
        status: str | None = None,
        media_type: Literal["image", "video"] | None = None,
        namespace: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
    ) -> GenerationPage:
        """A page of history; see :meth:`AsyncClient.list_generations`."""
        return self._run(
            self._async.list_generations,
            page=page,
            page_size=page_size,
            model=model,
            status=status,
            media_type=media_type,
            namespace=namespace,
            repo=repo,
            folder=folder,
        )

    def iter_generations(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        media_type: Literal["image", "video"] | None = None,
        namespace: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
        page_size: int = 100,
    ) -> SyncGenerationHistory:
        """Every matching row of the history, page after page (``for record in ...``); see
        :meth:`AsyncClient.iter_generations`."""

        async def start() -> GenerationHistory:
            return self._async.iter_generations(
                model=model,
                status=status,
                media_type=media_type,
                namespace=namespace,
                repo=repo,
                folder=folder,
                page_size=page_size,
            )

        return SyncGenerationHistory(self, self._run(start))

    def get_model(self, model_id: str) -> Model:
        """A model and its parameter schema."""
        return self._run(self._async.get_model, model_id)

    def list_models(self) -> list[Model]:
        """Every model."""
        return self._run(self._async.list_models)

    def download(
        self,
        source: SyncGeneration | GenerationRecord | str,
        path: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Save a generation's result file and return its path; see
        :meth:`AsyncClient.download`.

        Args:
            source: A finished record, a generation or a generation id (waited for first).
            path: A file path, or a directory (also any path ending with ``/``), or ``None``
                for the current directory.
        """
        return self._run(self._async.download, _unwrap(source), path)

    def read(self, source: SyncGeneration | GenerationRecord | str) -> bytes:
        """A generation's result file, in memory; see :meth:`AsyncClient.read`.

        Args:
            source: A finished record, a generation or a generation id (waited for first).
        """
        return self._run(self._async.read, _unwrap(source))

    def batch(
        self,
        model: str,
        requests: Iterable[Mapping[str, Any] | BatchItem],
        *,
        concurrency: int = 32,
    ) -> list[BatchItem]:
        """Run many requests and wait for all; see :func:`oxen_queue.run_batch`."""
        return self._run(self._async.batch, model, requests, concurrency=concurrency)


class SyncGenerationHistory:
    """The rows of the history, page after page: ``for record in history``.

    Made by :meth:`Client.iter_generations`; the blocking form of :class:`GenerationHistory`
    (each page is fetched when the rows before it have been consumed).
    """

    __slots__ = ("_client", "_history")

    def __init__(self, client: Client, history: GenerationHistory) -> None:
        self._client = client
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

        record = self._client._run(step)
        if record is None:
            raise StopIteration
        return record


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

    def updates(self) -> Iterator[GenerationRecord]:
        """Each status change, as a record, until the final one; blocks between them.

        As :meth:`Generation.updates`: the final record (``succeeded``, ``failed``,
        ``cancelled``) is the last item; a deadline or a closed client raises. Ctrl-C ends
        the subscription and the generation carries on, as does leaving the loop early once
        the iterator is closed (``break`` from a ``for`` closes it when it is collected).
        """
        updates = self._generation.updates()

        async def step() -> GenerationRecord | None:
            return await anext(updates, None)

        try:
            while (record := self._client._run(step)) is not None:
                yield record
        finally:
            if self._client._lifetime.context is not None:  # else the loop is gone with it
                self._client._run(updates.aclose)

    def download(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Wait for the result, then save it."""
        return self._client._run(self._generation.download, path)


def _unwrap(source: SyncGeneration | GenerationRecord | str) -> Generation | GenerationRecord | str:
    return source._generation if isinstance(source, SyncGeneration) else source


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
