"""The queue's endpoints as typed calls: one place that knows paths and response shapes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from ._exceptions import APIResponseValidationError
from ._models import GenerationPage, GenerationRecord, ImagesResponse, Model

if TYPE_CHECKING:
    import httpx

    from ._http import ApiSession

__all__ = ["QueueEndpoints", "parse"]

logger = logging.getLogger("oxen_queue")

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: object, *, what: str) -> M:
    """Validate a decoded body into a response model, or raise a clear typed error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(map(str, problem["loc"])) or "body"
        raise APIResponseValidationError(
            f"{what}: unexpected answer ({where}: {problem['msg']})"
        ) from exc


def _path_id(value: str) -> str:
    # Ids are interpolated into paths: never let one add segments or a query.
    return quote(value, safe="")


class QueueEndpoints:
    """``/api/ai/queue``, ``/api/ai/generations``, ``/api/ai/models``, ``/api/events``."""

    def __init__(self, session: ApiSession) -> None:
        self._session = session

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        path = f"api/ai/queue/{_path_id(generation_id)}"
        data = await self._session.call("GET", path)
        return parse(GenerationRecord, data, what=f"GET /{path}")

    async def cancel(self, generation_id: str) -> None:
        await self._session.call("DELETE", f"api/ai/queue/{_path_id(generation_id)}")

    async def list_queue(self, **filters: str | None) -> list[GenerationRecord]:
        params = {key: value for key, value in filters.items() if value is not None}
        data = await self._session.call("GET", "api/ai/queue", params=params)
        rows = data.get("generations") if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            raise APIResponseValidationError("GET /api/ai/queue: answer has no generations list")
        return [parse(GenerationRecord, row, what="GET /api/ai/queue") for row in rows]

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        """Id -> status of every active row: parsed leanly, since it runs on every poll tick.

        Rows that are not even a mapping with a string id and status are skipped (and logged):
        one bad row must not blind the poller to every other generation.
        """
        params = {"model": model} if model else None
        data = await self._session.call("GET", "api/ai/queue", params=params)
        rows = data.get("generations") if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            raise APIResponseValidationError("GET /api/ai/queue: answer has no generations list")
        statuses: dict[str, str] = {}
        for row in rows:
            if isinstance(row, Mapping):
                generation_id, status = row.get("generation_id"), row.get("status")
                if isinstance(generation_id, str) and isinstance(status, str):
                    statuses[generation_id] = status
                    continue
            logger.debug("GET /api/ai/queue: skipped a malformed row")
        return statuses

    async def list_generations(self, **query: str | int | None) -> GenerationPage:
        params = {key: value for key, value in query.items() if value is not None}
        data = await self._session.call("GET", "api/ai/generations", params=params)
        return parse(GenerationPage, data, what="GET /api/ai/generations")

    async def get_model(self, model_id: str) -> Model:
        data = await self._session.call("GET", f"api/ai/models/{_path_id(model_id)}")
        return parse(Model, data, what="GET /api/ai/models/{id}")

    async def list_models(self) -> list[Model]:
        data = await self._session.call("GET", "api/ai/models")
        rows = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            raise APIResponseValidationError("GET /api/ai/models: answer has no data list")
        return [parse(Model, row, what="GET /api/ai/models") for row in rows]

    async def generate_images(self, body: Mapping[str, Any], *, timeout: float) -> ImagesResponse:
        data = await self._session.send_create("api/ai/images/generate", body, timeout=timeout)
        return parse(ImagesResponse, data, what="POST /api/ai/images/generate")

    @asynccontextmanager
    async def event_stream(self) -> AsyncIterator[httpx.Response]:
        async with self._session.stream("GET", "api/events") as response:
            yield response
