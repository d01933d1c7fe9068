"""``enqueue``, ``enqueue_many`` and ``generate``: check, reserve the budget, wait until
enqueueing is safe, and hand the request to the client's `Enqueuer`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._core import CLOSE_GRACE
from ._exceptions import ClientClosedError, InvalidParamsError, OxenError
from ._params import check_count, merge_extra

if TYPE_CHECKING:
    from ._api import QueueEndpoints
    from ._core import CallOptions, ClientCore
    from ._generation import Generation
    from ._models import GenerationRecord
    from ._otel import RequestTrace
    from ._spend import Hold
    from ._types import Default

_PER_REQUEST: Final = 4  # generations per enqueue: "Range: 1-4 ... per request" (queue docs)


@dataclass(eq=False, slots=True)
class Jobs:
    """The enqueue operations of one view of a client (its endpoints, timeouts and defaults)."""

    _core: ClientCore
    _api: QueueEndpoints
    _options: CallOptions

    async def enqueue(
        self,
        model: str,
        params: Mapping[str, Any],
        *,
        deadline: float | Default | None,
        validate: bool | None,
        extra_params: Mapping[str, Any] | None,
    ) -> Generation:
        """One request of one generation; its handle."""
        (generation,) = await self._enqueue(model, params, 1, deadline, validate, extra_params)
        return generation

    async def enqueue_many(
        self,
        model: str,
        params: Mapping[str, Any],
        num_generations: int,
        *,
        deadline: float | Default | None,
        validate: bool | None,
        extra_params: Mapping[str, Any] | None,
    ) -> list[Generation]:
        """``num_generations`` of one request, in requests of at most 4 sent together."""
        check_count(num_generations)
        options = (deadline, validate, extra_params)
        if num_generations <= _PER_REQUEST:
            return await self._enqueue(model, params, num_generations, *options)
        full, rest = divmod(num_generations, _PER_REQUEST)
        sizes = [_PER_REQUEST] * full + ([rest] if rest else [])
        results: list[list[Generation] | BaseException] = [[] for _ in sizes]

        async def one(index: int, size: int) -> None:
            try:
                results[index] = await self._enqueue(model, params, size, *options)
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

    async def generate(
        self,
        model: str,
        params: Mapping[str, Any],
        *,
        deadline: float | Default | None,
        validate: bool | None,
        extra_params: Mapping[str, Any] | None,
    ) -> GenerationRecord:
        """One generation, awaited; its job cancelled upstream if its caller gives up on it."""
        created: list[Generation] = []
        try:
            (generation,) = await self._enqueue(
                model, params, 1, deadline, validate, extra_params, created
            )
            return await generation
        except BaseException:
            # The cancellation runs in the client's task, which no cancellation of this caller
            # reaches; waiting briefly only makes it done by the time the caller sees the error.
            abandoned = [g.id for g in created if not g.done() or _timed_out(g)]
            done = self._core.cancel_upstream(abandoned)
            if done is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                    await done.wait()
            raise

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
        # The request's spans start now, under the caller's span; current while it is prepared.
        trace = core.telemetry.request(model, params, count)
        token = trace.attach()
        try:
            try:
                await core.opened()
                if "num_generations" in params:
                    raise InvalidParamsError(
                        "pass num_generations to enqueue_many(), which returns every generation",
                        field="num_generations",
                    )
                lasts = self._options.deadline_or(deadline)  # refused before any request
                checked = await core.params.check(model, params, self._options.validating(validate))
                body = merge_extra(checked, extra_params)
                try:
                    hold = await core.spend.reserve(model, body, count)
                except BaseException as exc:
                    trace.budget_refused(exc)
                    raise
                trace.budget_reserved(hold.estimate)
                track = _Track(core, model, body, lasts, created, hold, trace)
                try:
                    await core.watcher.ready()
                except BaseException as exc:
                    hold.release_after(exc, sent=False)
                    raise
            except BaseException as exc:
                trace.failed(exc)  # before the request was handed over: ended here
                raise
            # The worker settles the estimate and the spans (track.failed): its job may exist.
            ids = await core.enqueuer.enqueue(track, count, self._api)
            if core.closed:
                raise ClientClosedError(
                    f"the client closed while enqueueing; the job(s) {', '.join(ids)} exist: "
                    "reattach with client.generation(id)",
                    generation_ids=ids,
                )
            return track.generations
        finally:
            trace.detach(token)


@dataclass(eq=False, slots=True)
class _Track:
    """One enqueue as the `Enqueuer` takes it: its request, and its jobs registered with the
    client as their ids arrive, waited for or not. An object, not a closure: thousands wait at
    once, and cells cost several times more."""

    core: ClientCore
    model: str
    params: dict[str, Any]
    deadline: float | None
    created: list[Generation] | None  # a generate()'s: the jobs it owns
    hold: Hold
    trace: RequestTrace
    generations: list[Generation] = field(default_factory=list)

    def __call__(self, ids: list[str]) -> None:
        for generation_id in ids:
            generation = self.core.track(
                generation_id,
                model=self.model,
                params=self.params,
                deadline=self.deadline,
                fresh=True,
            )
            self.hold.confirm(generation)  # counted at its estimate until its charge is known
            # After the budget: a generation already done (its completion event came before
            # its id) ends its span at once, and the span must see that a charge will come.
            self.trace.created(generation)
            self.generations.append(generation)
            if self.created is not None:
                self.created.append(generation)

    def abandoned(self, ids: list[str]) -> None:
        """Jobs made after the caller gave up: a generate()'s (it owns them) are cancelled."""
        if self.created is not None:
            self.core.cancel_upstream(ids)

    def failed(self, error: BaseException, sent: bool) -> None:
        """The enqueue ended without (all its) jobs: the reservation and the spans are told."""
        self.hold.release_after(error, sent)
        self.trace.failed(error)


def _timed_out(generation: Generation) -> bool:
    try:
        generation.result()
    except Exception as exc:
        return isinstance(exc, TimeoutError)
    return False
