"""Reading the queue: reattaching, recovering, rows, history, cancellations, models.

A part of the ``AsyncClient`` facade (see ``_parts.py``).
"""

from __future__ import annotations

from typing import Final, Literal

from ._exceptions import InvalidParamsError
from ._generation import Generation, observe
from ._history import GenerationHistory
from ._ids import check_id
from ._models import GenerationPage, GenerationRecord, Model
from ._parts import ClientParts
from ._recover import recover_ids
from ._types import DEFAULT, Default

__all__ = ["RowOperations"]

_MAX_PAGE_SIZE: Final = 1000  # GET /api/ai/generations: "page_size ... max 1000"


class RowOperations(ClientParts):
    """The client's operations on rows, history and models."""

    # -- generations --------------------------------------------------------------------

    def generation(
        self, generation_id: str, *, deadline: float | Default | None = DEFAULT
    ) -> Generation:
        """Reattach to a generation made elsewhere (another process, an earlier run).

        Returns the handle this client already has for the id, if any. Its status is asked
        at once, so a generation that finished long ago resolves right away.

        Raises:
            InvalidParamsError: The id is not a plausible generation id (1 to 128 letters,
                digits and ``-_.~``, not dots alone), so it could not be asked about.
        """
        core = self._core
        core.require_open()
        check_id(generation_id)
        core.enqueuer.own(generation_id)
        return core.track(
            self._owner,
            generation_id,
            model=None,
            params={},
            deadline=self._options.deadline if deadline is DEFAULT else deadline,
            fresh=False,
        )

    async def recover(self, *, wait: float | None = 120.0) -> list[Generation]:
        """Every job the ledger knows as enqueued and unfinished, as generations to await.

        With a shared ledger (``ledger=``), a restarted process picks up its billed jobs: those
        of clients that are gone (a crashed process's) are taken over, and their requests
        whose answer never arrived are first settled against the server, once their deadline
        has passed. This client's own pending generations are included. Of several clients
        recovering at once, each job goes to one.

        Args:
            wait: Seconds to wait at most for gone clients' requests still within their
                deadline (they may yet land); ``None`` waits as long as it takes.

        Returns:
            The generations, with the model and parameters of the request that made each.
        """
        core = self._core
        core.require_open()
        recovered = await recover_ids(core.enqueuer.ledger, core.enqueuer.reconciler, wait=wait)
        for job in recovered:
            core.enqueuer.own(job.generation_id)
            core.track(
                self._owner,
                job.generation_id,
                model=job.model,
                params=job.params,
                deadline=self._options.deadline,
                fresh=False,
            )
        return list(core.pending.values())

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """The current row of a generation (``GET /api/ai/queue/{id}``).

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
        """
        core = self._core
        core.require_open()
        check_id(generation_id)
        record = await core.endpoints.get_generation(generation_id, timeout=self._options.timeout)
        pending = core.pending.get(generation_id)
        if pending is not None:
            observe(pending, record)
        return record

    async def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """A generation's full history row, with what it was charged
        (``GET /api/ai/generations/{id}``, the docs' "Get generation details").

        Unlike :meth:`get_generation` (the queue's lean row), this row carries ``cost``
        (``None`` while queued), and who made the generation.

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
            NotFoundError: No such generation.
        """
        core = self._core
        core.require_open()
        check_id(generation_id)
        record = await core.endpoints.get_generation_details(
            generation_id, timeout=self._options.timeout
        )
        self._spend.observe([record])
        pending = core.pending.get(generation_id)
        if pending is not None:
            observe(pending, record)
        return record

    async def cancel(self, generation: Generation | str) -> None:
        """Cancel a generation (``DELETE /api/ai/queue/{id}``), then learn its final state.

        A generation already finished is left as it is (the API ignores the request).

        Raises:
            InvalidParamsError: Not a plausible generation id (nothing was sent).
            NotFoundError: No such generation.
        """
        self._core.require_open()
        generation_id = check_id(
            generation.id if isinstance(generation, Generation) else generation
        )
        await self._core.endpoints.cancel(generation_id, timeout=self._options.timeout)
        # The event stream announces nothing for cancellations: read the row to settle it.
        await self.get_generation(generation_id)

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
        self._core.require_open()
        return await self._core.endpoints.list_queue(
            timeout=self._options.timeout,
            **_filters(model, status, media_type, namespace, repo, folder),
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

        Takes the filters of :meth:`list_queue` (``status`` is one status; ``None`` is
        every row, finished or not). The page's ``total_cost`` covers the whole filtered
        set. :meth:`iter_generations` pages through it all.
        """
        self._core.require_open()
        listed = await self._core.endpoints.list_generations(
            page=page,
            page_size=page_size,
            timeout=self._options.timeout,
            **_filters(model, status, media_type, namespace, repo, folder),
        )
        self._spend.observe(listed.generations)
        return listed

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
        """Every row of the history that matches the filters, page after page::

            history = client.iter_generations(model="gpt-image-2", status="succeeded")
            async for record in history:
                print(record.generation_id, record.cost)
            print(history.total_entries, history.total_cost)

        Pages (``GET /api/ai/generations``) are fetched as the rows are consumed. Once the
        first page is read, ``total_cost`` and ``total_entries`` describe the whole set.

        The filters are those of :meth:`list_queue`; ``None`` leaves one out (``status=None``
        lists every row, finished or not).

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
        self._core.require_open()
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise InvalidParamsError("page_size must be an integer", field="page_size")
        if not 1 <= page_size <= _MAX_PAGE_SIZE:
            raise InvalidParamsError(
                f"page_size must be 1 to {_MAX_PAGE_SIZE}, not {page_size}", field="page_size"
            )
        filters = _filters(model, status, media_type, namespace, repo, folder)

        async def fetch(page: int) -> GenerationPage:
            self._core.require_open()
            return await self._core.endpoints.list_generations(
                page=page, page_size=page_size, timeout=self._options.timeout, **filters
            )

        return GenerationHistory(fetch, observe=self._spend.observe)

    # -- models -------------------------------------------------------------------------

    async def get_model(self, model_id: str) -> Model:
        """A model and its parameter schema (``GET /api/ai/models/{id}``).

        Raises:
            InvalidParamsError: Not a plausible model id (field ``model``; nothing was sent).
            NotFoundError: No such model.
        """
        self._core.require_open()
        check_id(model_id, field="model")
        return await self._core.endpoints.get_model(model_id, timeout=self._options.timeout)

    async def list_models(self) -> list[Model]:
        """Every model (``GET /api/ai/models``)."""
        self._core.require_open()
        return await self._core.endpoints.list_models(timeout=self._options.timeout)


def _filters(
    model: str | None,
    status: str | None,
    media_type: str | None,
    namespace: str | None,
    repo: str | None,
    folder: str | None,
) -> dict[str, str | None]:
    """The list filters the spec documents, by their query names."""
    return {
        "model": model,
        "status": status,
        "media_type": media_type,
        "namespace": namespace,
        "repo": repo,
        "folder": folder,
    }
