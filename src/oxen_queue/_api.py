"""The API's endpoints as typed calls: the one module that knows paths and response shapes.

Bodies arrive decoded (bounded, by :mod:`._json` through the session); here they become models.
A body of the wrong shape fails its one request with ``APIResponseValidationError``. Where one
bad row must not blind a caller to the others (a poller's list, reconciliation's search), rows
are parsed leniently: a malformed row is skipped and logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from . import _json
from ._exceptions import APIResponseValidationError
from ._models import (
    TERMINAL_STATUSES,
    CompletionEvent,
    GenerationPage,
    GenerationRecord,
    ImagesResponse,
    Model,
    VideosResponse,
)

if TYPE_CHECKING:
    import httpx

    from ._http import ApiSession

    Timeout = httpx.Timeout | None

__all__ = ["COMPLETED_EVENT", "HistorySlice", "QueueEndpoints", "parse", "parse_event"]

logger = logging.getLogger("oxen_queue")

M = TypeVar("M", bound=BaseModel)

QUEUE: Final = "api/ai/queue"
HISTORY: Final = "api/ai/generations"
MODELS: Final = "api/ai/models"
EVENTS: Final = "api/events"
IMAGES: Final = "api/ai/images/generate"
EDITS: Final = "api/ai/images/edit"
VIDEOS: Final = "api/ai/videos/generate"
COMPLETED_EVENT: Final = "media_generation_completed"


def parse(model: type[M], data: object, *, what: str) -> M:
    """Validate a decoded body into a response model, or raise a clear typed error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(map(str, problem["loc"])) or "body"
        raise APIResponseValidationError(
            f"{what}: unexpected answer ({where}: {problem['msg']})"
        ) from None


def parse_event(data: str) -> CompletionEvent | None:
    """The payload of a ``media_generation_completed`` event, or ``None`` if it is unusable.

    Only final statuses are returned: the API documents the event for those alone.
    """
    try:
        payload = CompletionEvent.model_validate(_json.loads(data))
    except (ValueError, ValidationError):  # BodyError is a ValueError
        logger.debug("skipped a malformed %s event: %.200r", COMPLETED_EVENT, data)
        return None
    return payload if payload.status in TERMINAL_STATUSES else None


def _rows(data: object, what: str) -> list[Any]:
    rows = data.get("generations") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        raise APIResponseValidationError(f"{what}: answer has no generations list")
    return rows


def _lenient_records(rows: list[Any], what: str) -> list[GenerationRecord]:
    records: list[GenerationRecord] = []
    for row in rows:
        try:
            records.append(GenerationRecord.model_validate(row))
        except ValidationError:
            logger.debug("%s: skipped a malformed row", what)
    return records


def _path_id(value: str) -> str:
    # Ids are interpolated into paths: never let one add segments or a query.
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class HistorySlice:
    """One page of history, parsed leniently: what reconciliation needs.

    Attributes:
        rows: The well-formed rows of the page.
        total_pages: Pages in all (at least 1).
    """

    rows: list[GenerationRecord]
    total_pages: int


class QueueEndpoints:
    """``/api/ai/queue``, ``/api/ai/generations``, ``/api/ai/models``, ``/api/events``, ..."""

    def __init__(self, session: ApiSession) -> None:
        self._session = session

    # -- the queue ------------------------------------------------------------------------

    async def enqueue(
        self,
        body: Mapping[str, Any],
        count: int,
        *,
        timeout: Timeout = None,
        on_admitted: Callable[[], Awaitable[object]] | None = None,
    ) -> list[str]:
        """One attempt at ``POST /api/ai/queue``; the ids it created.

        Raises:
            APIResponseValidationError: A success whose body lacks the ``count`` ids (the
                jobs exist: see ``certainly_created``).
        """
        data = await self._session.send(
            "POST", QUEUE, json_body=body, timeout=timeout, on_admitted=on_admitted, paced=True
        )
        ids = [
            row["generation_id"]
            for row in _rows(data, f"POST /{QUEUE}")
            if isinstance(row, Mapping) and isinstance(row.get("generation_id"), str)
        ]
        if len(ids) != count:
            raise APIResponseValidationError(
                f"POST /{QUEUE}: expected {count} generation ids in the answer, got {len(ids)}"
            )
        return ids

    async def get_generation(
        self, generation_id: str, *, timeout: Timeout = None
    ) -> GenerationRecord:
        path = f"{QUEUE}/{_path_id(generation_id)}"
        data = await self._session.call("GET", path, timeout=timeout)
        return parse(GenerationRecord, data, what=f"GET /{path}")

    async def cancel(self, generation_id: str, *, timeout: Timeout = None) -> None:
        await self._session.call("DELETE", f"{QUEUE}/{_path_id(generation_id)}", timeout=timeout)

    async def list_queue(
        self, *, timeout: Timeout = None, **filters: str | None
    ) -> list[GenerationRecord]:
        params = {key: value for key, value in filters.items() if value is not None}
        data = await self._session.call("GET", QUEUE, params=params, timeout=timeout)
        what = f"GET /{QUEUE}"
        return [parse(GenerationRecord, row, what=what) for row in _rows(data, what)]

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        """Id -> status of every active row: parsed leanly, since it runs on every poll tick.

        Rows that are not even a mapping with a string id and status are skipped (and logged):
        one bad row must not blind the poller to every other generation.
        """
        params = {"model": model} if model else None
        data = await self._session.call("GET", QUEUE, params=params)
        statuses: dict[str, str] = {}
        for row in _rows(data, f"GET /{QUEUE}"):
            if isinstance(row, Mapping):
                generation_id, status = row.get("generation_id"), row.get("status")
                if isinstance(generation_id, str) and isinstance(status, str):
                    statuses[generation_id] = status
                    continue
            logger.debug("GET /%s: skipped a malformed row", QUEUE)
        return statuses

    async def active_rows(self, model: str) -> list[GenerationRecord]:
        """The well-formed active rows of one model (reconciliation's first look)."""
        data = await self._session.call("GET", QUEUE, params={"model": model})
        what = f"GET /{QUEUE}"
        return _lenient_records(_rows(data, what), what)

    # -- history --------------------------------------------------------------------------

    async def history_slice(self, *, model: str, page: int, page_size: int) -> HistorySlice:
        """One page of one model's history, rows parsed leniently."""
        data = await self._session.call(
            "GET", HISTORY, params={"model": model, "page": page, "page_size": page_size}
        )
        what = f"GET /{HISTORY}"
        total = data.get("total_pages") if isinstance(data, Mapping) else None
        pages = total if isinstance(total, int) and not isinstance(total, bool) else 1
        return HistorySlice(_lenient_records(_rows(data, what), what), max(pages, 1))

    async def list_generations(
        self, *, timeout: Timeout = None, **query: str | int | None
    ) -> GenerationPage:
        params = {key: value for key, value in query.items() if value is not None}
        data = await self._session.call("GET", HISTORY, params=params, timeout=timeout)
        return parse(GenerationPage, data, what=f"GET /{HISTORY}")

    async def get_generation_details(
        self, generation_id: str, *, timeout: Timeout = None
    ) -> GenerationRecord:
        """One history row, with its cost, out of its envelope: ``{"status": "success",
        "status_message": "resource_found", "generation": {...}}`` (unlike the queue's row,
        which is bare)."""
        data = await self._session.call(
            "GET", f"{HISTORY}/{_path_id(generation_id)}", timeout=timeout
        )
        what = f"GET /{HISTORY}/{{id}}"
        row = data.get("generation") if isinstance(data, Mapping) else None
        if not isinstance(row, Mapping):
            raise APIResponseValidationError(f"{what}: answer has no generation object")
        return parse(GenerationRecord, row, what=what)

    # -- models ---------------------------------------------------------------------------

    async def get_model(self, model_id: str, *, timeout: Timeout = None) -> Model:
        data = await self._session.call("GET", f"{MODELS}/{_path_id(model_id)}", timeout=timeout)
        return parse(Model, data, what=f"GET /{MODELS}/{{id}}")

    async def list_models(self, *, timeout: Timeout = None) -> list[Model]:
        data = await self._session.call("GET", MODELS, timeout=timeout)
        rows = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            raise APIResponseValidationError(f"GET /{MODELS}: answer has no data list")
        return [parse(Model, row, what=f"GET /{MODELS}") for row in rows]

    # -- blocking generation ----------------------------------------------------------------

    async def generate_images(
        self, body: Mapping[str, Any], *, timeout: httpx.Timeout
    ) -> ImagesResponse:
        data = await self._session.send_create(IMAGES, body, timeout=timeout)
        return parse(ImagesResponse, data, what=f"POST /{IMAGES}")

    async def edit_images(
        self, body: Mapping[str, Any], *, timeout: httpx.Timeout
    ) -> ImagesResponse:
        data = await self._session.send_create(EDITS, body, timeout=timeout)
        return parse(ImagesResponse, data, what=f"POST /{EDITS}")

    async def generate_videos(
        self, body: Mapping[str, Any], *, timeout: httpx.Timeout
    ) -> VideosResponse:
        data = await self._session.send_create(VIDEOS, body, timeout=timeout)
        return parse(VideosResponse, data, what=f"POST /{VIDEOS}")

    # -- events ---------------------------------------------------------------------------

    @asynccontextmanager
    async def event_stream(self) -> AsyncIterator[httpx.Response]:
        async with self._session.stream("GET", EVENTS) as response:
            yield response
