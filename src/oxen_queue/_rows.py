"""Reattaching, recovering, rows, history, cancellations, models and results (documented on
``AsyncClient``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ._durations import optional_seconds
from ._exceptions import InvalidParamsError
from ._generation import Generation, observe
from ._history import GenerationHistory
from ._ids import check_id
from ._models import GenerationRecord
from ._recover import recover_ids

if TYPE_CHECKING:
    from ._api import QueueEndpoints
    from ._core import CallOptions, ClientCore
    from ._models import GenerationPage, Model
    from ._types import Default

_MAX_PAGE_SIZE: Final = 1000  # GET /api/ai/generations: "page_size ... max 1000"


@dataclass(eq=False, slots=True)
class Rows:
    """The row operations of one view of a client (its endpoints, timeouts and defaults)."""

    _core: ClientCore
    _api: QueueEndpoints
    _options: CallOptions

    def generation(self, generation_id: str, *, deadline: float | Default | None) -> Generation:
        """The client's handle of a generation made elsewhere, watched from now on."""
        core = self._core
        core.require_open()
        check_id(generation_id)
        core.enqueuer.own(generation_id)
        return core.track(
            generation_id,
            model=None,
            params={},
            deadline=self._options.deadline_or(deadline),
            fresh=False,
        )

    async def recover(self, *, wait: float | None, include_own: bool) -> list[Generation]:
        """The ledger's unfinished jobs, taken over and watched (with this client's own
        pending ones if ``include_own``)."""
        core = self._core
        wait = optional_seconds(wait, field="wait", zero=True)
        await core.opened()
        recovered = await recover_ids(core.enqueuer.ledger, core.enqueuer.reconciler, wait=wait)
        taken: list[Generation] = []
        for generation_id, intent in recovered:
            core.enqueuer.own(generation_id)
            generation = core.track(
                generation_id,
                model=intent.model,
                params=intent.params,
                deadline=self._options.deadline,
                fresh=False,
            )
            taken.append(generation)
        return list(core.pending.values()) if include_own else taken

    async def orphaned_requests(self) -> list[tuple[str, dict[str, Any], str | None]]:
        """Gone clients' requests whose jobs `recover` would take over: ``(model, params,
        id)`` for each generation unfinished (its id) or not known yet (``None``)."""
        core = self._core
        await core.opened()
        listed: list[tuple[str, dict[str, Any], str | None]] = []
        for intent in await core.enqueuer.ledger.unfinished(orphaned_only=True):
            unanswered = intent.state in ("in_flight", "lost")
            ids = [None] * intent.count if unanswered else list(intent.pending)
            listed.extend((intent.model, dict(intent.params), i) for i in ids)
        return listed

    async def finished(self, source: Generation | GenerationRecord | str) -> GenerationRecord:
        """The final record of a record, a generation or an id (waited for; ``GenerationError``
        if it did not succeed)."""
        if not isinstance(source, Generation | GenerationRecord):
            check_id(source)  # refused before the client opens
        await self._core.opened()
        if isinstance(source, str):
            source = self.generation(source, deadline=self._options.deadline)
        return await source if isinstance(source, Generation) else source

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """``GET /api/ai/queue/{id}``; the row also settles the client's handle, if any."""
        await self._core.opened()
        return self._noted(await self._api.get_generation(generation_id))

    async def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """``GET /api/ai/generations/{id}``; its cost also settles the budget."""
        await self._core.opened()
        record = await self._api.get_generation_details(generation_id)
        self._core.spend.observe([record])
        return self._noted(record)

    async def cancel(self, generation: Generation | str) -> None:
        """``DELETE /api/ai/queue/{id}``, then the row (no event announces a cancellation)."""
        await self._core.opened()
        generation_id = generation.id if isinstance(generation, Generation) else generation
        await self._api.cancel(generation_id)
        await self.get_generation(generation_id)

    def _noted(self, record: GenerationRecord) -> GenerationRecord:
        if (pending := self._core.pending.get(record.generation_id)) is not None:
            observe(pending, record)
        return record

    async def list_queue(self, **filters: str | None) -> list[GenerationRecord]:
        """``GET /api/ai/queue`` with the filters given (``None`` leaves one out)."""
        await self._core.opened()
        return await self._api.list_queue(**filters)

    async def list_generations(
        self, *, page: int, page_size: int, **filters: str | None
    ) -> GenerationPage:
        """One page of ``GET /api/ai/generations``; its costs also settle the budget."""
        await self._core.opened()
        listed = await self._api.list_generations(page=page, page_size=page_size, **filters)
        self._core.spend.observe(listed.generations)
        return listed

    def iter_generations(self, *, page_size: int, **filters: str | None) -> GenerationHistory:
        """The history, page after page as it is consumed (a client not open yet opens on the
        first page; a closed one raises ``ClientClosedError``)."""
        self._core.check_not_closed()
        integer = isinstance(page_size, int) and not isinstance(page_size, bool)
        if not integer or not 1 <= page_size <= _MAX_PAGE_SIZE:
            raise InvalidParamsError(
                f"page_size must be an integer from 1 to {_MAX_PAGE_SIZE}, not {page_size!r}",
                field="page_size",
            )

        async def fetch(page: int) -> GenerationPage:
            await self._core.opened()
            return await self._api.list_generations(page=page, page_size=page_size, **filters)

        return GenerationHistory(fetch, observe=self._core.spend.observe)

    async def get_model(self, model_id: str) -> Model:
        await self._core.opened()
        return await self._api.get_model(model_id)

    async def list_models(self) -> list[Model]:
        await self._core.opened()
        return await self._api.list_models()
