"""``AsyncClient``: configuration, lifecycle, and the operations of the queue."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, Unpack, overload

import anyio
import httpx

from ._api import QueueEndpoints
from ._batch import run_batch
from ._blocking import BlockingOperations
from ._budget import Budget
from ._core import CLOSE_GRACE, ClientCore
from ._download import FileFetcher
from ._enqueue import Enqueuer
from ._exceptions import ClientClosedError, InvalidParamsError, OxenError
from ._generation import Generation
from ._http import DEFAULT_BASE_URL, USER_AGENT, ApiSession, attempt_deadline, check_base_url
from ._ledger import Ledger, open_ledger
from ._ledger._memory import MemoryLedger
from ._models import (
    GenerationRecord,
    to_decimal,
)
from ._params import (
    GptImage2EditOptions,
    GptImage2Options,
    KlingV26ProTextToVideoOptions,
    ParamChecker,
    check_count,
    merge_extra,
)
from ._parts import Options
from ._poll import PollPolicy
from ._results import ResultOperations
from ._retry import RetryPolicy
from ._spend import Hold, SpendControl
from ._transport import HttpBackend
from ._types import DEFAULT, Default
from ._watch import CompletionMode, make_watcher

if TYPE_CHECKING:
    from ._batch import BatchItem, ProgressCallback
    from ._budget import SpendSummary
    from ._stats import ClientStats

__all__ = ["AsyncClient"]


_PER_REQUEST: Final = 4  # generations per enqueue: "Range: 1-4 ... per request" (queue docs)


class AsyncClient(ResultOperations, BlockingOperations):
    """An asyncio (and trio) client for Oxen.ai's generation queue.

    Use it as an async context manager; one client serves a whole application::

        async with AsyncClient() as client:
            generation = await client.enqueue("gpt-image-2", prompt="An ox at sunset")
            record = await generation

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
            raises :class:`BudgetExceededError` before anything is sent. Committed spend counts
            each job at its estimate (from the model's published pricing) until its charged
            cost is known, then at that; a job cancelled before it ran gives its estimate
            back. Costs one ``GET /api/ai/generations/{id}`` per finished job. ``None``
            means no limit, and no accounting.

    Raises:
        InvalidParamsError: No API key was given or found in the environment.
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
        key = api_key if api_key is not None else os.environ.get("OXEN_API_KEY", "")
        if not key.strip():
            raise InvalidParamsError(
                "no API key: pass api_key=... or set the OXEN_API_KEY environment variable "
                "(create a key at https://www.oxen.ai under your profile's API keys)",
                field="api_key",
            )
        url = check_base_url(
            base_url or os.environ.get("OXEN_BASE_URL") or DEFAULT_BASE_URL,
            allow_insecure_http=allow_insecure_http,
        )
        if shared_poll_interval <= 0 or backstop_interval <= 0 or stall_timeout <= 0:
            raise ValueError(
                "shared_poll_interval, backstop_interval and stall_timeout must be positive"
            )
        budget = None if max_spend is None else _budget(max_spend)
        retry = retry or RetryPolicy()
        poll_policy = poll_policy or PollPolicy()
        http_timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        session = ApiSession(
            base_url=url,
            api_key=key.strip(),
            timeout=http_timeout,
            max_concurrency=max_concurrency,
            retry=retry,
            transport=transport,
            http_backend=http_backend,
            verify=verify,
        )
        endpoints = QueueEndpoints(session)
        admission = session.admission
        ledger_url = ledger if ledger is not None else os.environ.get("OXEN_LEDGER") or None
        try:
            enqueue_ledger: Ledger = open_ledger(ledger_url) or MemoryLedger()
        except ValueError as exc:
            raise InvalidParamsError(str(exc), field="ledger") from None
        self._core = ClientCore(
            session=session,
            files=FileFetcher(
                auth=session.auth,
                connect_timeout=http_timeout.connect,
                stall_timeout=stall_timeout,
                max_downloads=max_downloads,
                max_bytes=max_download_bytes,
                transport=transport,
                verify=verify,
                headers={"User-Agent": USER_AGENT},
            ),
            endpoints=endpoints,
            enqueuer=Enqueuer(
                endpoints,
                ledger=enqueue_ledger,
                clock=session.clock,
                retry=retry,
                attempt_deadline=attempt_deadline(http_timeout),
                workers=lambda: admission.bound,
                on_retry=session.note_retry,
            ),
            params=ParamChecker(endpoints.get_model, enabled=True),
            watcher=make_watcher(
                completion,
                endpoints,
                poll_policy,
                shared_interval=shared_poll_interval,
                backstop_interval=backstop_interval,
                stall_timeout=stall_timeout,
            ),
            poll_policy=poll_policy,
            completion=completion,
        )
        self._options = Options(timeout=None, validate=validate, deadline=poll_policy.deadline)
        self._spend = SpendControl(
            params=self._core.params,
            endpoints=endpoints,
            task_group=self._core.require_open,
            budget=budget,
        )

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | Default = DEFAULT,
        validate: bool | Default = DEFAULT,
        deadline: float | Default | None = DEFAULT,
    ) -> AsyncClient:
        """A view of this client with other defaults for the calls made through it.

        It shares everything else: the connections, the watcher, the pending generations and
        the lifecycle (closing either closes both). Costs nothing; make one per call site::

            record = await client.with_options(timeout=5, validate=False).generate(...)

        Args:
            timeout: Seconds for each request attempt made through the view (as the client's
                ``timeout``). Completion watching keeps the client's own.
            validate: Local parameter checks for calls made through the view.
            deadline: Generations' default deadline (seconds; ``None``: no limit).
        """
        options = self._options
        if timeout is not DEFAULT:
            options = dataclasses.replace(
                options,
                timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            )
        if validate is not DEFAULT:
            options = dataclasses.replace(options, validate=validate)
        if deadline is not DEFAULT:
            options = dataclasses.replace(options, deadline=deadline)
        view = object.__new__(AsyncClient)
        view._core = self._core
        view._options = options
        view._spend = self._spend
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

        Enqueues not yet sent are withdrawn; those in flight get a few seconds to land, so
        their jobs are known (their callers get :class:`ClientClosedError` naming them), as do
        the upstream cancellations of abandoned ``generate()`` jobs. Generations still pending
        end with :class:`ClientClosedError`; reattach to them from another client with
        ``client.generation(id)``.
        """
        await self._core.close()

    @property
    def pending(self) -> Mapping[str, Generation]:
        """The generations this client is still watching, by id (a read-only view)."""
        return MappingProxyType(self._core.pending)

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the client's counters and current limits (see :class:`ClientStats`)."""
        return self._core.stats()

    @property
    def spend(self) -> SpendSummary | None:
        """What this client has committed against its ``max_spend`` (``None`` without one)."""
        return self._spend.summary()

    # -- enqueueing ---------------------------------------------------------------------

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
                ``DEFAULT`` takes the poll policy's deadline; ``None`` means no limit.
            validate: Override the client's ``validate`` for this call.
            extra_params: Keys sent as given, unchecked: for a parameter the model's schema
                does not list (yet). ``None``: none.
            **params: The model's parameters (``prompt``, ``resolution``, ...) and the queue's
                (``target_namespace``, ``target_repo``, ``target_directory``).

        Raises:
            InvalidParamsError: Bad parameters, found before anything was sent.
            BadRequestError: The API refused (unknown model, text-only model, ...).
            AmbiguousEnqueueError: The answer was lost and the job could not be settled.
        """
        (generation,) = await self._enqueue(model, params, 1, deadline, validate, extra_params)
        return generation

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
        guarantees of :meth:`enqueue`. If one of them fails, its error is raised once the
        others have settled; the generations they did create stay registered with the client
        (``client.pending``) and are named in a note on the error.

        Raises:
            InvalidParamsError: ``num_generations`` is not a positive integer, or bad
                parameters (nothing was sent).
        """
        check_count(num_generations)
        sizes = [_PER_REQUEST] * (num_generations // _PER_REQUEST)
        if num_generations % _PER_REQUEST:
            sizes.append(num_generations % _PER_REQUEST)
        if len(sizes) == 1:
            return await self._enqueue(
                model, params, num_generations, deadline, validate, extra_params
            )
        results: list[list[Generation] | BaseException] = [[] for _ in sizes]

        async def one(index: int, size: int) -> None:
            try:
                results[index] = await self._enqueue(
                    model, params, size, deadline, validate, extra_params
                )
            except OxenError as exc:
                results[index] = exc

        async with anyio.create_task_group() as task_group:
            for index, size in enumerate(sizes):
                task_group.start_soon(one, index, size)
        made = [g for result in results if isinstance(result, list) for g in result]
        for result in results:
            if isinstance(result, BaseException):
                if made:
                    result.add_note(
                        f"{len(made)} of {num_generations} generations were created and are "
                        f"being watched (client.pending): {', '.join(g.id for g in made)}"
                    )
                raise result
        return made

    async def _enqueue(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        deadline: float | Default | None,
        validate: bool | None,
        extra_params: Mapping[str, Any] | None,
        created: list[Generation] | None = None,
    ) -> list[Generation]:
        core = self._core
        core.require_open()
        if not isinstance(model, str) or not model.strip():
            raise InvalidParamsError("model must be a non-empty model id", field="model")
        if "num_generations" in params:
            raise InvalidParamsError(
                "pass num_generations to enqueue_many(), which returns every generation",
                field="num_generations",
            )
        checked = await core.params.check(model, params, self._validate(validate))
        body = merge_extra(checked, extra_params)
        # The budget (max_spend): the estimate is reserved before anything is sent, the
        # event stream included; BudgetExceededError (or CostUnknownError) otherwise.
        hold = await self._spend.reserve(model, body, count)
        if deadline is DEFAULT:
            deadline = self._options.deadline
        track = _Track(self, model, body, deadline, created, hold)
        # A generate() owns its job: answered after its caller was cancelled, it is cancelled.
        on_abandoned = core.cancel_upstream if created is not None else None
        try:
            await core.watcher.ready()
        except BaseException as exc:
            hold.release_after(exc, sent=False)
            raise
        # The estimate is given back, or kept, once the enqueue's outcome is known: a caller
        # cancelled mid-request leaves it to the worker, whose job may exist.
        ids = await core.enqueuer.enqueue(
            model,
            body,
            count,
            track,
            on_abandoned=on_abandoned,
            on_failed=hold.release_after,
            timeout=self._options.timeout,
        )
        if core.closed:
            raise ClientClosedError(
                f"the client closed while enqueueing; the job(s) {', '.join(ids)} exist: "
                "reattach with client.generation(id)",
                generation_ids=ids,
            )
        return track.generations

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
        created: list[Generation] = []
        try:
            (generation,) = await self._enqueue(
                model, params, 1, deadline, validate, extra_params, created
            )
            return await generation
        except BaseException:
            # The cancellation runs in a task of the client's, which no cancellation of this
            # caller reaches (asyncio's own task.cancel() and wait_for included); waiting for
            # it here, briefly, only makes it done by the time the caller sees the error.
            abandoned = [g.id for g in created if not g.done() or _timed_out(g)]
            done = self._core.cancel_upstream(abandoned)
            if done is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                    await done.wait()
            raise

    # -- many at once -------------------------------------------------------------------

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

        See :func:`oxen_queue.run_batch`.
        """
        self._core.require_open()
        return await run_batch(
            self,
            model,
            requests,
            concurrency=concurrency,
            on_enqueued=on_enqueued,
            on_finished=on_finished,
        )


def _budget(max_spend: object) -> Budget:
    try:
        limit = to_decimal(max_spend)
    except ValueError:
        raise InvalidParamsError(
            f"max_spend must be an amount (a Decimal), not {max_spend!r}", field="max_spend"
        ) from None
    if limit < 0:
        raise InvalidParamsError(f"max_spend cannot be negative ({limit})", field="max_spend")
    return Budget(limit)


class _Track:
    """Registers the generations of one enqueue with the client as their ids arrive.

    Called by the enqueue's worker, whether or not the caller still waits. An object rather
    than a closure: thousands wait at once, and a closure's cells cost several times more.
    """

    __slots__ = ("client", "created", "deadline", "generations", "hold", "model", "params")

    def __init__(
        self,
        client: AsyncClient,
        model: str,
        params: dict[str, Any],
        deadline: float | None,
        created: list[Generation] | None,
        hold: Hold,
    ) -> None:
        self.client = client
        self.hold = hold
        self.model = model
        self.params = params
        self.deadline = deadline
        self.created = created  # a generate()'s: the jobs it owns
        self.generations: list[Generation] = []

    def __call__(self, ids: list[str]) -> None:
        for generation_id in ids:
            generation = self.client._core.track(
                self.client,
                generation_id,
                model=self.model,
                params=self.params,
                deadline=self.deadline,
                fresh=True,
            )
            self.hold.confirm(generation)  # counted at its estimate until its charge is known
            self.generations.append(generation)
            if self.created is not None:
                self.created.append(generation)


def _timed_out(generation: Generation) -> bool:
    try:
        generation.result()
    except TimeoutError:
        return True
    except Exception:
        return False
    return False
