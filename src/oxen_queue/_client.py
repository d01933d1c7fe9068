"""``AsyncClient``: the facade. Signatures, docstrings and one-line delegations to the parts
of ``_core`` (`Jobs`, `Rows`, `Blocking`, the core's files and spend)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Self, Unpack, overload

import httpx

from ._batch import run_batch
from ._blocking import Blocking, Call
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


class AsyncClient:
    """An asyncio (and trio) client for Oxen.ai's generation queue.

    Use it as an async context manager; one client serves a whole application:

    ```python
    async with AsyncClient() as client:
        generation = await client.enqueue("gpt-image-2", prompt="An ox at sunset")
        record = await generation
    ```

    Or without one (a notebook): it opens on its first awaited call, and ``aclose()`` or the end
    of its event loop closes it.

    Args:
        api_key: The Oxen API key (default ``$OXEN_API_KEY``); sent only to the API's origin.
        base_url: The hub (default ``$OXEN_BASE_URL``, then ``https://hub.oxen.ai``).
        completion: How completion is learned: ``"auto"`` (the event stream, backed by slow
            polls), ``"events"``, ``"shared"`` (one list request per tick for all pending
            generations) or ``"poll"`` (each on its own timer).
        poll_policy: Per-generation polling; its ``deadline`` is the default deadline.
        shared_poll_interval: Seconds between shared polls.
        backstop_interval: Seconds between the slow polls behind a healthy event stream.
        retry: Which transient HTTP failures are retried, and how.
        timeout: Seconds for one request attempt (an ``httpx.Timeout`` sets the phases apart).
        stall_timeout: Seconds without progress before the event stream is reopened, or a
            download fails.
        max_concurrency: API requests in flight at once; ``None`` adapts it to the latency (4-256).
        max_downloads: Result downloads at once, on a pool of their own.
        ledger: Where enqueues are written ahead, for exact reconciliation and recovery:
            ``sqlite:///path/ledger.db`` (one host) or ``postgresql://user:password@host/db``
            (several; the ``postgres`` extra). ``None``: ``$OXEN_LEDGER`` if set, else memory.
        validate: Check parameters locally before sending them.
        max_download_bytes: Largest result file accepted; ``None`` means no limit.
        allow_insecure_http: Allow a plain ``http://`` base URL that is not loopback.
        verify: TLS certificate verification.
        transport: An httpx transport, used as it is (no ``http_backend``, no proxies).
        http_backend: ``"httpx"``, or ``"aiohttp"`` (asyncio only; the ``aiohttp`` extra).
        max_spend: The most this client may commit, in the API's currency (0 to 10**12, at most
            18 decimal places): a request whose estimate would take the committed spend past it
            raises [`BudgetExceededError`][oxen_queue.BudgetExceededError] before anything is
            sent. A job counts at its estimate until its charge is known (one
            ``GET /api/ai/generations/{id}`` per finished job). ``None`` means no limit, and no
            accounting.

    Raises:
        InvalidParamsError: No API key; ``max_spend`` out of range; a base URL unusable,
            insecure or carrying credentials (also a ``ValueError``); an unknown, uninstalled
            or (``"aiohttp"`` outside asyncio) unusable ``http_backend``.
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
        api = core.api.with_timeout(options.timeout)
        self._core, self._options = core, options
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
        """A view of this client with other defaults for the calls made through it (all else
        shared: connections, watcher, lifecycle).

        Args:
            timeout: Seconds for each request attempt (completion watching keeps the client's).
            validate: Local parameter checks.
            deadline: Generations' default deadline in seconds; ``None`` means no limit.
        """
        options = self._options.replace(timeout=timeout, validate=validate, deadline=deadline)
        view = object.__new__(AsyncClient)
        view._bind(self._core, options)
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

    async def __aexit__(self, *exc_info: object) -> None:
        await self._core.exit()

    async def aclose(self) -> None:
        """Stop watching and close the connections, for good; jobs on the server carry on.

        Enqueues in flight get a few seconds to land; then they, and the generations still
        pending, raise [`ClientClosedError`][oxen_queue.ClientClosedError].
        """
        await self._core.close()

    @property
    def pending(self) -> Mapping[str, Generation]:
        """The generations this client is still watching, by id (a read-only view)."""
        return MappingProxyType(self._core.pending)

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the client's counters and limits."""
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
        """Enqueue one generation (``POST /api/ai/queue``) and return its handle.

        Args:
            model: The model id, e.g. ``"gpt-image-2"``.
            deadline: Seconds until waiting on it raises ``GenerationTimeoutError``; ``DEFAULT``:
                the poll policy's; ``None`` means no limit.
            validate: Override the client's ``validate`` for this call.
            extra_params: Keys sent unchecked (parameters the model's schema does not list yet).
            **params: The model's parameters (``prompt``, ``resolution``, ...) and the queue's
                (``target_namespace``, ``target_repo``, ``target_directory``). ``timeout=`` is
                refused (see ``with_options``); several generations of one request are
                ``enqueue_many``'s (not ``n=``).

        Raises:
            InvalidParamsError: Bad parameters, found before anything was sent.
            BadRequestError: The API refused (unknown model, text-only model, ...).
            AmbiguousEnqueueError: The answer was lost and the job could not be settled.
        """
        return await self._jobs.enqueue(
            model=model,
            deadline=deadline,
            validate=validate,
            extra_params=extra_params,
            params=params,
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

        They go in requests of at most 4 (the docs' limit), sent together. If one fails, its error
        is raised once the others have settled, noting the generations they made (still watched).

        Raises:
            InvalidParamsError: ``num_generations`` is not a positive integer, or bad parameters.
        """
        return await self._jobs.enqueue_many(
            model=model,
            num_generations=num_generations,
            deadline=deadline,
            validate=validate,
            extra_params=extra_params,
            params=params,
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

        Takes [`enqueue`][oxen_queue.AsyncClient.enqueue]'s arguments. If the call is cancelled or
        its deadline passes, the job is cancelled on the server (best effort).

        Raises:
            GenerationFailedError: The generation failed; ``.error_message`` says why.
            GenerationCancelledError: It was cancelled.
            GenerationTimeoutError: The deadline passed (the job was cancelled).
        """
        return await self._jobs.generate(
            model=model,
            deadline=deadline,
            validate=validate,
            extra_params=extra_params,
            params=params,
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
        """Run many requests with at most ``concurrency`` generations in flight: see
        [`run_batch`][oxen_queue.run_batch].
        """
        await self._core.opened()
        return await run_batch(
            self,
            model=model,
            requests=requests,
            concurrency=concurrency,
            on_enqueued=on_enqueued,
            on_finished=on_finished,
        )

    # -- generations and rows -------------------------------------------------------------
    def generation(
        self, generation_id: str, *, deadline: float | Default | None = DEFAULT
    ) -> Generation:
        """Reattach to a generation made elsewhere (another process, an earlier run).

        Returns:
            This client's handle for the id if it has one; else a new one, its status asked.

        Raises:
            InvalidParamsError: Not a plausible generation id (1 to 128 letters, digits and
                ``-_.~``, not dots alone).
            ClientClosedError: The client is closed, or (an ``AsyncClient``) not open yet.
        """
        return self._rows.generation(generation_id, deadline=deadline)

    async def recover(
        self, *, wait: float | None = 120.0, include_own: bool = True
    ) -> list[Generation]:
        """The jobs the ledger knows as enqueued and unfinished, as generations: those of
        gone clients, taken over, and this client's own (unless ``include_own`` is false).

        With a shared ledger, a restarted process takes over the jobs of clients that are gone,
        first settling their unanswered requests; each job goes to one recovering client.

        Args:
            wait: Seconds to wait at most for gone clients' requests still within their deadline;
                ``None`` waits as long as it takes (at most twice their timeout).
            include_own: Return this client's own pending generations too; ``False``: only
                the jobs this call took over (for a client that sends while it recovers).

        Returns:
            The generations, with their requests' parameters.

        Raises:
            InvalidParamsError: ``wait`` is neither ``None`` nor finite seconds, zero or more.
        """
        return await self._rows.recover(wait=wait, include_own=include_own)

    async def orphaned_requests(self) -> list[tuple[str, dict[str, Any], str | None]]:
        """The requests of gone clients whose jobs `recover` would take over, read from the
        ledger at once: ``(model, params, generation_id)`` for each generation not finished
        (its id) or not known yet (``None``: its request was never answered).

        `recover` waits up to twice the request timeout for the unanswered ones (they may
        still reach the server). A batch resumed meanwhile sends its other requests at once
        and holds back only those identical to these (one for each generation listed that
        it does not already know by id): `recover` may hand their jobs back.
        """
        return await self._rows.orphaned_requests()

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """The current row of a generation (``GET /api/ai/queue/{id}``).

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
        """
        return await self._rows.get_generation(generation_id)

    async def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """A generation's history row (``GET /api/ai/generations/{id}``), with its ``cost``
        (``None`` while queued) and who made it.

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
            NotFoundError: No such generation.
        """
        return await self._rows.get_generation_details(generation_id)

    async def cancel(self, generation: Generation | str) -> None:
        """Cancel a generation (``DELETE /api/ai/queue/{id}``; a finished one is left as it is).

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
        """Rows of ``GET /api/ai/queue``; a filter left ``None`` filters nothing.

        Args:
            model: Only this model's rows.
            status: Only rows in this status; ``None``: ``queued`` and ``processing`` ones.
            media_type: Only ``"image"`` or ``"video"`` rows.
            namespace: The namespace whose rows to list; ``None``: the caller's.
            repo: Only rows stored in this repo (``target_repo``).
            folder: Only rows stored in this directory (``target_directory``).
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

        The filters are [`list_queue`][oxen_queue.AsyncClient.list_queue]'s, but ``status=None``
        is every row. The page's ``total_cost`` covers the whole filtered set.
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
        """Every row of the history that matches the filters, fetched page after page as
        they are consumed; the filters are [`list_queue`][oxen_queue.AsyncClient.list_queue]'s, but
        ``status=None`` is every row.

        Args:
            page_size: Rows per request, 1 to 1000.

        Returns:
            The history; its ``total_cost`` and ``total_entries`` describe the whole set once the
            first page is read.

        Raises:
            InvalidParamsError: ``page_size`` out of range.
        """
        return self._rows.iter_generations(
            model=model,
            status=status,
            media_type=media_type,
            namespace=namespace,
            repo=repo,
            folder=folder,
            page_size=page_size,
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
            path: A file path; or a directory (or a path ending with ``/``, made if need be) for a
                file named after the generation id; ``None``: the current directory.

        Raises:
            DownloadError: No or a bad result URL, the host refused, the transfer stalled, the file
                is too large, or it is not the media asked for (no file is left behind).
            GenerationError: The generation did not succeed (when given one to wait for).
        """
        return await self._core.files.save(await self._rows.finished(source), path)

    async def read(self, source: Generation | GenerationRecord | str) -> bytes:
        """A generation's result file, in memory, checked as by
        [`download`][oxen_queue.AsyncClient.download].

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
        """Generate images with the blocking endpoint (``POST /api/ai/images/generate``), held
        open until they exist (5-30 s); resent only if the server refused it (a lost answer is
        raised: the images may have been billed).

        Args:
            model: The model id.
            prompt: The prompt.
            n: Images to generate; ``None``: the server's default, 1.
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters.

        Raises:
            InvalidParamsError: Bad parameters (nothing was sent).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        params = {"prompt": prompt, **params}
        call = Call(n=n, response_format=response_format, timeout=timeout, validate=validate)
        return await self._blocking.images(model, params, call)

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
        """Edit images with the blocking endpoint (``POST /api/ai/images/edit``); ``n``,
        ``response_format``, ``timeout`` and ``validate`` as in
        [`generate_images`][oxen_queue.AsyncClient.generate_images].

        Args:
            model: The model id, e.g. ``"gpt-image-2-edit"``.
            prompt: The edit's instruction.
            input_image: The public URL of the image to edit, or a list of URLs to compose.
            **params: The model's other parameters (``mask``, ``resolution``, ...).

        Raises:
            InvalidParamsError: Bad parameters (nothing was sent).
            BadRequestError: The server refused (an input image it could not download, ...).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        params = {"prompt": prompt, "input_image": input_image, **params}
        call = Call(n=n, response_format=response_format, timeout=timeout, validate=validate)
        return await self._blocking.edit(model, params, call)

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
        """Generate videos with the blocking endpoint (``POST /api/ai/videos/generate``), held
        open "1-10+ min"; ``n``, ``response_format``, ``timeout`` and ``validate`` as in
        [`generate_images`][oxen_queue.AsyncClient.generate_images].

        Args:
            model: The model id, e.g. ``"kling-video-v2-6-pro-text-to-video"``.
            prompt: The prompt; ``None`` for a multi-shot model's
                ``multi_prompt=[{"prompt", "duration"}, ...]`` (in ``params``).
            **params: The model's other parameters (``duration``, ``aspect_ratio``, ...).

        Raises:
            InvalidParamsError: Bad parameters, or neither or both of ``prompt`` and
                ``multi_prompt`` (nothing was sent).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        if prompt is not None:
            params = {"prompt": prompt, **params}
        call = Call(n=n, response_format=response_format, timeout=timeout, validate=validate)
        return await self._blocking.videos(model, params, call)

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
        """What a request would cost, from the model's published pricing (fetched once per model
        and client); parameters left out count at the server's defaults.

        Args:
            model: The model id.
            num_generations: Generations of the request.
            validate: Override the client's ``validate``: bad parameters raise first.
            **params: The request's parameters, as ``enqueue`` takes them.

        Returns:
            The estimated cost, exact (a ``Decimal``), in the API's currency.

        Raises:
            CostUnknownError: The pricing does not resolve for these parameters (never a guess of
                zero); ``.missing`` names what is missing.
            InvalidParamsError: Bad parameters, an unknown model, or ``num_generations`` out of 1
                to 1,000,000.
        """
        await self._core.opened()
        return await self._core.spend.estimate_request(
            model,
            params,
            num_generations=num_generations,
            validate=self._options.validating(validate),
        )
