"""``AsyncClient``: the facade. Signatures, docstrings, and one-line delegations.

Each method hands its work to one part (see ``_core``): the enqueue calls to `Jobs`,
the rows, history and models to `Rows`, result files to the
`FileFetcher`, the blocking endpoints to `Blocking`, costs
to the `SpendControl`; the generations it returns are watched by the core's
watcher. A view (``with_options``) has parts of its own over the same core.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, Unpack, overload

import httpx

from ._batch import run_batch
from ._blocking import Blocking
from ._core import CallOptions, ClientCore
from ._generation import Generation
from ._jobs import Jobs
from ._models import GenerationRecord
from ._poll import PollPolicy
from ._retry import RetryPolicy
from ._rows import Rows
from ._transport import HttpBackend
from ._types import DEFAULT, Default
from ._watch import CompletionMode

if TYPE_CHECKING:
    from decimal import Decimal
    from pathlib import Path

    from ._batch import BatchItem, ProgressCallback
    from ._budget import SpendSummary
    from ._history import GenerationHistory
    from ._models import GenerationPage, ImagesResponse, Model, VideosResponse
    from ._options import GptImage2EditOptions, GptImage2Options, KlingV26ProTextToVideoOptions
    from ._stats import ClientStats

__all__ = ["AsyncClient"]


class AsyncClient:
    """An asyncio (and trio) client for Oxen.ai's generation queue.

    Use it as an async context manager; one client serves a whole application:

    ```python
    async with AsyncClient() as client:
        generation = await client.enqueue("gpt-image-2", prompt="An ox at sunset")
        record = await generation
    ```

    Or, as an httpx or openai client, without one (in a notebook, a REPL): it opens on its
    first awaited call, and ``aclose()`` ends it:

    ```python
    client = AsyncClient()
    record = await client.generate("gpt-image-2", prompt="An ox at sunset")
    await client.aclose()
    ```

    Opened that way, its background work (the watcher, the enqueue workers, the deadlines)
    runs in a task the event loop owns (an asyncio task; a trio system task) rather than in
    the block's task group, with the same guarantees: no cancellation of a caller reaches
    it, and concurrent first calls share one open. A client never closed is closed when its
    event loop ends (``asyncio.run()``, ``trio.run()`` returning), without warnings; it is
    then closed for good. The one call that cannot open a client is
    [`generation`][oxen_queue.AsyncClient.generation], which is not async: make another call first.

    Args:
        api_key: The Oxen API key. Defaults to ``$OXEN_API_KEY``. It is sent only to the API's
            own origin, never shown in ``repr``, logs or errors.
        base_url: The hub. Defaults to ``$OXEN_BASE_URL``, then ``https://hub.oxen.ai``.
        completion: How completion is learned: ``"auto"`` (the event stream, with shared
            polling as a slow backstop, falling back to polling when the stream is
            unavailable), ``"events"``, ``"shared"`` (one list request per tick for all
            pending generations) or ``"poll"`` (each generation on its own backoff timer).
        poll_policy: Backoff and deadline of per-generation polling; its ``deadline`` is
            every generation's default deadline.
        shared_poll_interval: Seconds between shared polls (``"shared"``, and ``"auto"``
            while the event stream is down or someone follows ``generation.updates()``).
        backstop_interval: Seconds between the slow polls behind a healthy event stream
            (``"auto"``), which catch cancellations and lost events.
        retry: Which transient HTTP failures are retried, and how.
        timeout: Seconds for one request attempt, from connecting to the last byte of the
            answer (an ``httpx.Timeout`` sets the phases apart; the largest of them then
            bounds the whole attempt).
        stall_timeout: Seconds without progress after which a transfer counts as dead: the
            event stream silent this long (not even a keep-alive; or, with generations
            pending, no completion event) is reopened and reconciled, and a download slower
            than 1 KiB/s over this long fails.
        max_concurrency: API requests in flight at once; more wait their turn (so a burst of
            enqueues never meets a pool timeout). ``None`` (the default) adapts the bound as
            TCP Vegas does: it grows while the round trip stays near its lowest, so a distant
            hub gets as many requests in flight as its latency needs, and shrinks when the
            latency rises or the server refuses (4 to 256, starting at 64). An int fixes it.
        max_downloads: Result downloads at once, on a pool of their own (a slow file host
            never holds the slots API requests need).
        ledger: Where enqueues are written ahead, so that a lost answer is reconciled exactly
            across every process sharing it and a crashed process's jobs are recovered:
            ``sqlite:///path/ledger.db`` (the processes of one host), or
            ``postgresql://user:password@host/db`` (several hosts; the ``postgres`` extra).
            ``None``: ``$OXEN_LEDGER`` if set, else this process's memory (exact for its own
            requests only).
        validate: Check parameters locally before sending (for models other than
            ``gpt-image-2`` this fetches the model's schema once). ``False`` sends them as given.
        max_download_bytes: Largest result file ``download`` accepts; ``None`` means no limit.
        allow_insecure_http: Allow a plain ``http://`` base URL that is not loopback.
        verify: TLS certificate verification (on by default).
        transport: An httpx transport for API requests and downloads, used as it is (tests
            pass ``httpx.MockTransport`` or ``httpx.ASGITransport``; ``http_backend`` and
            the environment's proxies then do not apply, as in httpx). ``None``: the one
            ``http_backend`` names.
        http_backend: What carries the API's requests. ``"httpx"`` (the default, on asyncio
            and trio): httpx's own transport, one connection per pool, so its CPU cost per
            request stays flat however many are in flight. ``"aiohttp"`` (asyncio only;
            ``pip install 'oxen-queue[aiohttp]'``): aiohttp's connection pool through
            ``httpx-aiohttp``, about half the CPU per request, which shows only at hundreds
            of enqueues a second. Either way httpx's client sits above it, so the
            environment's proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) apply as in httpx,
            and a request that may have reached the server is never reported as unsent.
            Downloads use httpx's own pool.
        max_spend: The most this client may commit, in the API's currency. An enqueue (or a
            blocking generation) whose estimated cost would take the committed spend past it
            raises [`BudgetExceededError`][oxen_queue.BudgetExceededError] before anything is sent.
            Committed spend counts each job at its estimate (from the model's published pricing)
            until its charged cost is known, then at that; a job cancelled before it ran gives its
            estimate back. Costs one ``GET /api/ai/generations/{id}`` per finished job. ``None``
            means no limit, and no accounting. From 0 to 10**12, with at most 18 decimal
            places; anything else is ``InvalidParamsError``.

    Raises:
        InvalidParamsError: No API key was given or found in the environment.
        InvalidParamsError: ``max_spend`` is not an amount from 0 to 10**12.
        InvalidParamsError: The base URL is unusable, insecure or carries credentials
            (also a ``ValueError``).
        InvalidParamsError: ``http_backend`` is not ``"httpx"`` or ``"aiohttp"``, or is
            ``"aiohttp"`` without the extra installed (and, from ``async with``, outside
            asyncio).
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
        core = ClientCore(
            api_key=api_key,
            base_url=base_url,
            completion=completion,
            poll_policy=poll_policy,
            shared_poll_interval=shared_poll_interval,
            backstop_interval=backstop_interval,
            retry=retry,
            timeout=timeout,
            stall_timeout=stall_timeout,
            max_concurrency=max_concurrency,
            max_downloads=max_downloads,
            ledger=ledger,
            validate=validate,
            max_download_bytes=max_download_bytes,
            allow_insecure_http=allow_insecure_http,
            verify=verify,
            transport=transport,
            http_backend=http_backend,
            max_spend=max_spend,
        )
        self._bind(core, core.defaults)

    def _bind(self, core: ClientCore, options: CallOptions) -> None:
        """Make this client (or view) serve ``core`` with ``options``: its parts."""
        api = core.api.with_timeout(options.timeout)
        self._core = core
        self._options = options
        self._jobs = Jobs(core, api, options)
        self._rows = Rows(core, api, options)
        self._blocking = Blocking(core, api, options)

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | Default = DEFAULT,
        validate: bool | Default = DEFAULT,
        deadline: float | Default | None = DEFAULT,
    ) -> AsyncClient:
        """A view of this client with other defaults for the calls made through it.

        It shares everything else: the connections, the watcher, the pending generations and
        the lifecycle (closing either closes both). Costs nothing; make one per call site:

        ```python
        record = await client.with_options(timeout=5, validate=False).generate(...)
        ```

        Args:
            timeout: Seconds for each request attempt made through the view (as the client's
                ``timeout``). Completion watching keeps the client's own.
            validate: Local parameter checks for calls made through the view.
            deadline: Generations' default deadline (seconds; ``None``: no limit).
        """
        view = object.__new__(AsyncClient)
        view._bind(
            self._core,
            self._options.replace(timeout=timeout, validate=validate, deadline=deadline),
        )
        return view

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<AsyncClient {core.session.base_url} completion={core.completion!r} "
            f"pending={len(core.pending)} {core.state}>"
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._core.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._core.exit()

    async def aclose(self) -> None:
        """Stop watching, close the connections. Jobs on the server carry on.

        Ends the client however it was opened (``async with``, or a first call), or never
        was; a closed client cannot be opened again.

        Enqueues not yet sent are withdrawn; those in flight get a few seconds to land, so
        their jobs are known (their callers get [`ClientClosedError`][oxen_queue.ClientClosedError]
        naming them), as do the upstream cancellations of abandoned ``generate()`` jobs. Generations
        still pending end with [`ClientClosedError`][oxen_queue.ClientClosedError]; reattach to them
        from another client with ``client.generation(id)``.
        """
        await self._core.close()

    @property
    def pending(self) -> Mapping[str, Generation]:
        """The generations this client is still watching, by id (a read-only view)."""
        return MappingProxyType(self._core.pending)

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the client's counters and current limits (see
        [`ClientStats`][oxen_queue.ClientStats])."""
        return self._core.stats()

    @property
    def spend(self) -> SpendSummary | None:
        """What this client has committed against its ``max_spend`` (``None`` without one)."""
        return self._core.spend.summary()

    # -- enqueueing ---------------------------------------------------------------------

    # --- begin generated: overloads of enqueue, one per typed model (.ci/codegen.py) ---
    @overload
    async def enqueue(
        self,
        model: Literal["gpt-image-2"],
        /,
        *,
        prompt: str,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[GptImage2Options],
    ) -> Generation: ...

    @overload
    async def enqueue(
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
    ) -> Generation: ...

    @overload
    async def enqueue(
        self,
        model: Literal["kling-video-v2-6-pro-text-to-video"],
        /,
        *,
        prompt: str,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Unpack[KlingV26ProTextToVideoOptions],
    ) -> Generation: ...

    @overload
    async def enqueue(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Any,
    ) -> Generation: ...

    # --- end generated: overloads of enqueue ---

    async def enqueue(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = DEFAULT,
        validate: bool | None = None,
        extra_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> Generation:
        """Enqueue one generation (``POST /api/ai/queue``) and return its awaitable handle.

        Args:
            model: The model id, e.g. ``"gpt-image-2"``.
            deadline: Seconds until waiting on it gives up with ``GenerationTimeoutError``;
                ``DEFAULT`` takes the poll policy's deadline; ``None`` means no limit. (There
                is no per-call ``timeout=``: it is refused, naming this and, for each HTTP
                request, ``client.with_options(timeout=...)``.)
            validate: Override the client's ``validate`` for this call.
            extra_params: Keys sent as given, unchecked: for a parameter the model's schema
                does not list (yet). ``None``: none.
            **params: The model's parameters (``prompt``, ``resolution``, ...) and the queue's
                (``target_namespace``, ``target_repo``, ``target_directory``). Several
                generations of one request: [`enqueue_many`][oxen_queue.AsyncClient.enqueue_many]
                (not ``n=``).

        Raises:
            InvalidParamsError: Bad parameters, found before anything was sent.
            BadRequestError: The API refused (unknown model, text-only model, ...).
            AmbiguousEnqueueError: The answer was lost and the job could not be settled.
        """
        return await self._jobs.enqueue(
            model, params, deadline=deadline, validate=validate, extra_params=extra_params
        )

    async def enqueue_many(
        self,
        model: str,
        /,
        num_generations: int,
        *,
        deadline: float | Default | None = DEFAULT,
        validate: bool | None = None,
        extra_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> list[Generation]:
        """Enqueue ``num_generations`` generations of the same request; return every one.

        The docs allow 1-4 generations per request ("Call the endpoint multiple times to queue
        more"), so more are split into requests of at most 4, sent together, each with the
        guarantees of [`enqueue`][oxen_queue.AsyncClient.enqueue]. If one of them fails, its error
        is raised once the others have settled; the generations they did create stay registered with
        the client (``client.pending``) and are named in a note on the error.

        Raises:
            InvalidParamsError: ``num_generations`` is not a positive integer, or bad
                parameters (nothing was sent).
        """
        return await self._jobs.enqueue_many(
            model,
            params,
            num_generations,
            deadline=deadline,
            validate=validate,
            extra_params=extra_params,
        )

    # --- begin generated: overloads of generate, one per typed model (.ci/codegen.py) ---
    @overload
    async def generate(
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
    async def generate(
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
    async def generate(
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
    async def generate(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = ...,
        validate: bool | None = ...,
        extra_params: Mapping[str, Any] | None = ...,
        **params: Any,
    ) -> GenerationRecord: ...

    # --- end generated: overloads of generate ---

    async def generate(
        self,
        model: str,
        /,
        *,
        deadline: float | Default | None = DEFAULT,
        validate: bool | None = None,
        extra_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> GenerationRecord:
        """Enqueue one generation and wait for its final record.

        The call owns its job: if it is cancelled (a web client hung up) or its deadline
        passes, the job is cancelled on the server (shielded, best effort) before the error
        is re-raised, since nobody will see its result.

        Raises:
            GenerationFailedError: The generation failed; ``.error_message`` says why.
            GenerationCancelledError: It was cancelled.
            GenerationTimeoutError: The deadline passed (the job was cancelled).
        """
        return await self._jobs.generate(
            model, params, deadline=deadline, validate=validate, extra_params=extra_params
        )

    async def batch(
        self,
        model: str,
        requests: Iterable[Mapping[str, Any] | BatchItem],
        *,
        concurrency: int = 32,
        on_enqueued: ProgressCallback | None = None,
        on_finished: ProgressCallback | None = None,
    ) -> list[BatchItem]:
        """Run many requests with at most ``concurrency`` generations in flight.

        See [`oxen_queue.run_batch`][oxen_queue.run_batch].
        """
        await self._core.opened()
        return await run_batch(
            self,
            model,
            requests,
            concurrency=concurrency,
            on_enqueued=on_enqueued,
            on_finished=on_finished,
        )

    # -- generations and rows -------------------------------------------------------------

    def generation(
        self, generation_id: str, *, deadline: float | Default | None = DEFAULT
    ) -> Generation:
        """Reattach to a generation made elsewhere (another process, an earlier run).

        Returns the handle this client already has for the id, if any. Its status is asked
        at once, so a generation that finished long ago resolves right away.

        Raises:
            InvalidParamsError: The id is not a plausible generation id (1 to 128 letters,
                digits and ``-_.~``, not dots alone), so it could not be asked about.
            ClientClosedError: The client is closed; an ``AsyncClient`` also when it is not
                open yet (this call is not async, so it cannot open it: make another first).
        """
        return self._rows.generation(generation_id, deadline=deadline)

    async def recover(self, *, wait: float | None = 120.0) -> list[Generation]:
        """Every job the ledger knows as enqueued and unfinished, as generations to await.

        With a shared ledger (``ledger=``), a restarted process picks up its billed jobs: those
        of clients that are gone (a crashed process's) are taken over, and their requests
        whose answer never arrived are first settled against the server, once their deadline
        has passed. This client's own pending generations are included. Of several clients
        recovering at once, each job goes to one.

        Args:
            wait: Seconds to wait at most for gone clients' requests still within their
                deadline (they may yet land), zero or more; ``None`` waits as long as it takes.

        Returns:
            The generations, with the model and parameters of the request that made each.

        Raises:
            InvalidParamsError: ``wait`` is not ``None`` nor a finite number of seconds, zero
                or more (nothing was read).
        """
        return await self._rows.recover(wait=wait)

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """The current row of a generation (``GET /api/ai/queue/{id}``).

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
        """
        return await self._rows.get_generation(generation_id)

    async def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """A generation's full history row, with what it was charged
        (``GET /api/ai/generations/{id}``, the docs' "Get generation details").

        Unlike [`get_generation`][oxen_queue.AsyncClient.get_generation] (the queue's lean row),
        this row carries ``cost`` (``None`` while queued), and who made the generation.

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
            NotFoundError: No such generation.
        """
        return await self._rows.get_generation_details(generation_id)

    async def cancel(self, generation: Generation | str) -> None:
        """Cancel a generation (``DELETE /api/ai/queue/{id}``), then learn its final state.

        A generation already finished is left as it is (the API ignores the request).

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
            NotFoundError: No such generation.
        """
        await self._rows.cancel(generation)

    async def list_queue(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        media_type: Literal["image", "video"] | None = None,
        namespace: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
    ) -> list[GenerationRecord]:
        """Rows of ``GET /api/ai/queue``: active ones only, unless ``status`` is given.

        Args:
            model: Only this model's rows.
            status: Only rows in this status (``queued``, ..., ``cancelled``); ``None``:
                the active ones (``queued`` and ``processing``).
            media_type: ``"image"`` or ``"video"``.
            namespace: The namespace whose rows to list (``None``: the caller's).
            repo: Only rows stored in this repo (``target_repo``).
            folder: Only rows stored in this directory (``target_directory``).

        Each filter is ``None`` for no filter.
        """
        return await self._rows.list_queue(
            model=model,
            status=status,
            media_type=media_type,
            namespace=namespace,
            repo=repo,
            folder=folder,
        )

    async def list_generations(
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
        """One page of history with costs (``GET /api/ai/generations``; page_size <= 1000).

        Takes the filters of [`list_queue`][oxen_queue.AsyncClient.list_queue] (``status`` is one
        status; ``None`` is every row, finished or not). The page's ``total_cost`` covers the whole
        filtered set. [`iter_generations`][oxen_queue.AsyncClient.iter_generations] pages through it
        all.
        """
        return await self._rows.list_generations(
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
    ) -> GenerationHistory:
        """Every row of the history that matches the filters, page after page:

        ```python
        history = client.iter_generations(model="gpt-image-2", status="succeeded")
        async for record in history:
            print(record.generation_id, record.cost)
        print(history.total_entries, history.total_cost)
        ```

        Pages (``GET /api/ai/generations``) are fetched as the rows are consumed. Once the
        first page is read, ``total_cost`` and ``total_entries`` describe the whole set.

        The filters are those of [`list_queue`][oxen_queue.AsyncClient.list_queue]; ``None`` leaves
        one out (``status=None`` lists every row, finished or not).

        Args:
            model: Only this model's rows.
            status: Only rows of this status.
            media_type: ``"image"`` or ``"video"`` rows only.
            namespace: The namespace whose history it is (default: the caller's).
            repo: Only rows stored in this target repository.
            folder: Only rows stored in this target directory.
            page_size: Rows per request, 1 to 1000.

        Raises:
            InvalidParamsError: ``page_size`` out of range.
        """
        return self._rows.iter_generations(
            page_size=page_size,
            model=model,
            status=status,
            media_type=media_type,
            namespace=namespace,
            repo=repo,
            folder=folder,
        )

    async def get_model(self, model_id: str) -> Model:
        """A model and its parameter schema (``GET /api/ai/models/{id}``).

        Raises:
            InvalidParamsError: Not a plausible model id (field ``model``; nothing was sent).
            NotFoundError: No such model.
        """
        return await self._rows.get_model(model_id)

    async def list_models(self) -> list[Model]:
        """Every model (``GET /api/ai/models``)."""
        return await self._rows.list_models()

    # -- results ------------------------------------------------------------------------

    async def download(
        self,
        source: Generation | GenerationRecord | str,
        path: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Save a generation's result file and return its path.

        Args:
            source: A finished record, a Generation or a generation id (waited for first).
            path: A file path, or a directory (also any path ending with ``/``, created if
                need be) where the file is named after the generation id with the extension
                its bytes show, or ``None`` for the current directory. The server never names
                the file. A name made from an id is the id itself when it is a plain
                lowercase id (a UUID: ``<uuid>.png``); any other id is cleaned and given a
                short hash of itself (``ab~<16 hex>.png`` for ``a/b``), so two generations
                never share a file and no name is a Windows device name.

        Raises:
            DownloadError: No result URL, a bad one, the file host refused, the transfer
                stalled, the file is too large, or the body is not the media the generation
                asked for (empty, text such as an HTML error page, or a video for an image):
                then no file is left behind.
            GenerationError: The generation did not succeed (when given one to wait for).
        """
        return await self._core.files.save(await self._rows.finished(source), path)

    async def read(self, source: Generation | GenerationRecord | str) -> bytes:
        """A generation's result file, in memory, within the same bounds and by the same rule
        (the media the generation asked for) as [`download`][oxen_queue.AsyncClient.download].

        Raises:
            DownloadError: As for [`download`][oxen_queue.AsyncClient.download].
            GenerationError: The generation did not succeed (when given one to wait for).
        """
        return await self._core.files.read(await self._rows.finished(source))

    # -- the blocking endpoints ---------------------------------------------------------

    async def generate_images(
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
        """Generate images with the blocking endpoint (``POST /api/ai/images/generate``).

        The server holds the request open until the images exist (5-30 s), so nothing is
        polled; prefer [`enqueue`][oxen_queue.AsyncClient.enqueue] for many images. The request is
        resent only if the server refused it; a lost answer is raised, since the images may have
        been billed.

        Args:
            model: The model id.
            prompt: The prompt.
            n: Images to generate (the spec's ``n``); the server's default is 1.
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters.
        """
        return await self._blocking.generate_images(
            model,
            {"prompt": prompt, **params},
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
        )

    async def edit_images(
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
        """Edit images with the blocking endpoint (``POST /api/ai/images/edit``).

        As [`generate_images`][oxen_queue.AsyncClient.generate_images]: nothing is polled, and the
        request is resent only if the server refused it. The provider downloads the input images, so
        their URLs must be publicly reachable (a result's ``result_url`` is).

        Args:
            model: The model id, e.g. ``"gpt-image-2-edit"``.
            prompt: The edit's instruction.
            input_image: The URL of the image to edit, or a list of URLs of images to compose.
            n: Images to generate; the server's default is 1.
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters (``mask``, ``resolution``, ...).

        Raises:
            InvalidParamsError: Bad parameters (nothing was sent).
            BadRequestError: The server refused (an input image it could not download, ...).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        return await self._blocking.edit_images(
            model,
            {"prompt": prompt, "input_image": input_image, **params},
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
        )

    async def generate_videos(
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
        """Generate videos with the blocking endpoint (``POST /api/ai/videos/generate``).

        The server holds the request open until the videos exist: "1-10+ min", so the
        default ``timeout`` is 30 minutes. The docs recommend the queue
        ([`enqueue`][oxen_queue.AsyncClient.enqueue]) instead; this call is here for parity. The
        request is resent only if the server refused it: a lost answer is raised, since the video
        may have been billed.

        Args:
            model: The model id, e.g. ``"kling-video-v2-6-pro-text-to-video"``.
            prompt: The prompt; a multi-shot model takes ``multi_prompt=[{"prompt",
                "duration"}, ...]`` in ``params`` instead (exactly one of the two).
            n: Videos to generate (the server's default is 1).
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters (``duration``, ``aspect_ratio``, ...).

        Raises:
            InvalidParamsError: Bad parameters, or neither or both of ``prompt`` and
                ``multi_prompt`` (nothing was sent).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        if prompt is not None:
            params = {"prompt": prompt, **params}
        return await self._blocking.generate_videos(
            model, params, n=n, response_format=response_format, timeout=timeout, validate=validate
        )

    # -- cost -----------------------------------------------------------------------------

    async def estimate_cost(
        self,
        model: str,
        /,
        *,
        num_generations: int = 1,
        validate: bool | None = None,
        **params: Any,
    ) -> Decimal:
        """What a request would cost, from the model's published pricing; nothing is sent
        but, once per model and client, ``GET /api/ai/models/{id}`` (shared with the
        parameter checks).

        Parameters left out count at their defaults, as the server applies and bills them.
        Images are priced by the ``cost_per_image_grid`` cell of their ``quality`` and
        ``resolution`` (else ``cost_per_image``); videos by seconds of ``duration`` times the
        price of a second (with audio, or by resolution, when the model prices those apart).

        Args:
            model: The model id.
            num_generations: Generations of the request (as
                [`enqueue_many`][oxen_queue.AsyncClient.enqueue_many] makes).
            validate: Override the client's ``validate``: bad parameters raise first.
            **params: The request's parameters, as [`enqueue`][oxen_queue.AsyncClient.enqueue] takes
                them.

        Returns:
            The estimated cost, exact (a ``Decimal``), in the API's currency.

        Raises:
            CostUnknownError: The pricing cannot be resolved for these parameters (billed by
                token or time, no price for this quality and resolution, no ``duration``, a
                published price the client refuses as not an amount...); ``.missing`` names
                what is missing. Never a guess of zero.
            InvalidParamsError: Bad parameters, an unknown model, or ``num_generations``
                below 1 or above 1,000,000.
        """
        await self._core.opened()
        return await self._core.spend.estimate_request(
            model,
            params,
            num_generations=num_generations,
            validate=self._options.validating(validate),
        )
