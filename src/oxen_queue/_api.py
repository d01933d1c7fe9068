"""The API's endpoints as typed calls: the one module that knows paths and response shapes.

Refuses (``APIResponseValidationError``, for that request) a decoded body of the wrong shape
or a row about another id than asked, but where one bad row must not blind the caller: a
poller's list skips (and logs) it; reconciliation gets rows as they came; an enqueue's answer
is never refused whole (its jobs exist, billed). Paths with an id come from `id_path` alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import httpx
from pydantic import BaseModel, ValidationError

from . import _json
from ._exceptions import APIResponseValidationError
from ._ids import check_id, plausible_id, segment
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
    from ._http import ApiSession

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

PATHS: Final = (QUEUE, HISTORY, MODELS, EVENTS, IMAGES, EDITS, VIDEOS)
_TEMPLATES: Final = {path: f"/{path}" for path in PATHS}
_ID_TEMPLATES: Final = {
    QUEUE: f"/{QUEUE}/{{generation_id}}",
    HISTORY: f"/{HISTORY}/{{generation_id}}",
    MODELS: f"/{MODELS}/{{model}}",
}

ROW_FIELDS: Final = frozenset(GenerationRecord.model_fields)
"""The fields a row declares; every other key of a row is a request parameter merged in."""


def id_path(collection: str, value: str, *, field: str = "generation_id") -> str:
    """``{collection}/{id}``, the id judged (``InvalidParamsError`` naming ``field``), encoded."""
    return f"{collection}/{segment(check_id(value, field=field))}"


def url_template(path: str) -> str:
    """A path's template, ids replaced by their names (``/api/ai/queue/{generation_id}``), for
    metrics, where an id must never be an attribute; ``"_OTHER"`` for a path not built here."""
    return _TEMPLATES.get(path) or _ID_TEMPLATES.get(path.rpartition("/")[0], "_OTHER")


def parse(model: type[M], data: object, *, what: str) -> M:
    """Validate a decoded body into a response model, or raise a clear typed error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(map(str, problem["loc"])) or "body"
        message = f"{what}: unexpected answer ({where}: {problem['msg']})"
        raise APIResponseValidationError(message) from None


def parse_event(data: str) -> CompletionEvent | None:
    """The payload of a ``media_generation_completed`` event, or ``None`` if it is unusable
    or not final (the API documents the event for final statuses alone)."""
    try:
        payload = CompletionEvent.model_validate(_json.loads(data))
    except (ValueError, ValidationError):  # BodyError is a ValueError
        logger.debug("skipped a malformed %s event: %.200r", COMPLETED_EVENT, data)
        return None
    return payload if payload.status in TERMINAL_STATUSES else None


def _get(data: object, key: str) -> Any:
    return data.get(key) if isinstance(data, Mapping) else None


def _list(data: object, what: str, key: str = "generations") -> list[Any]:
    rows = _get(data, key)
    if not isinstance(rows, list):
        raise APIResponseValidationError(f"{what}: answer has no {key} list")
    return rows


def row_params(row: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters merged into a row as it came: every key it does not declare."""
    return {key: value for key, value in row.items() if key not in ROW_FIELDS}


def _same_record(record: GenerationRecord, generation_id: str, what: str) -> GenerationRecord:
    if record.generation_id != generation_id:
        raise APIResponseValidationError(
            f"{what}: asked for generation {generation_id!r}, the answer is about "
            f"{record.generation_id[:200]!r}"
        )
    return record


@dataclass(frozen=True, slots=True)
class HistorySlice:
    """A page of history: rows unparsed (one may be the job sought); pages in all, if said."""

    rows: list[object]
    total_pages: int | None


@dataclass(frozen=True, slots=True)
class EnqueueAnswer:
    """What a successful answer to ``POST /api/ai/queue`` named.

    Attributes:
        ids: The plausible ids it named, each once, in order.
        unwatchable: The other string ids it named: jobs that exist and cannot be watched.
        unidentified: Its entries that name no string id: jobs that exist, ids unknown.
        problems: What is wrong with it, for errors and logs; empty when it is as documented.
    """

    ids: tuple[str, ...]
    unwatchable: tuple[str, ...] = ()
    unidentified: int = 0
    problems: tuple[str, ...] = ()


def parse_enqueue_answer(data: object, count: int) -> EnqueueAnswer:
    """Every id a successful enqueue answer names, and what is wrong with it: accepts anything."""
    rows = _get(data, "generations")
    if not isinstance(rows, list):
        return EnqueueAnswer((), problems=("the answer has no generations list",))
    if len(rows) == count:  # the documented answer: one cheap pass
        named = [_get(row, "generation_id") for row in rows]
        if all(plausible_id(i) for i in named) and len(set(named)) == count:
            return EnqueueAnswer(tuple(cast("list[str]", named)))  # plausible: strings
    ids: dict[str, None] = {}
    unwatchable: dict[str, None] = {}
    unidentified = repeated = 0
    for row in rows:
        value = _get(row, "generation_id")
        if not isinstance(value, str):
            unidentified += 1
        elif value in ids or value in unwatchable:
            repeated += 1
        elif plausible_id(value):
            ids[value] = None
        else:
            unwatchable[value] = None
    problems: list[str] = []
    if len(rows) != count:
        problems.append(f"{len(rows)} entries for {count} generations asked")
    if unidentified:
        problems.append(f"{unidentified} entries without a string generation_id")
    if repeated:
        problems.append(f"{repeated} ids named more than once")
    if unwatchable:
        shown = ", ".join(repr(i[:80]) for i in list(unwatchable)[:3])
        problems.append(f"{len(unwatchable)} ids that cannot be watched ({shown})")
    return EnqueueAnswer(tuple(ids), tuple(unwatchable), unidentified, tuple(problems))


class QueueEndpoints:
    """The API's endpoints, with one view's ``timeout`` (``None``: the session's) applied here to
    every request, and nowhere else; one per client and per ``client.with_options(timeout=)``."""

    __slots__ = ("_session", "_timeout")

    def __init__(self, session: ApiSession, timeout: httpx.Timeout | None = None) -> None:
        self._session = session
        self._timeout = timeout

    def with_timeout(self, timeout: httpx.Timeout | None) -> QueueEndpoints:
        """These endpoints with other timeouts (``None``: the session's)."""
        return self if timeout is self._timeout else QueueEndpoints(self._session, timeout)

    async def _call(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None
    ) -> Any:
        return await self._session.call(method, path, params=params, timeout=self._timeout)

    def _slow(self, read: float) -> httpx.Timeout:
        """These timeouts, reading for ``read`` seconds: for the blocking endpoints."""
        base = self._timeout or self._session.http.timeout
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    async def enqueue(
        self,
        body: Mapping[str, Any],
        count: int,
        *,
        on_admitted: Callable[[], Awaitable[object]] | None = None,
    ) -> EnqueueAnswer:
        """One attempt at ``POST /api/ai/queue``: what its success named, whatever its shape
        (``APIResponseValidationError`` if undecodable: the jobs exist)."""
        data = await self._session.send(
            "POST",
            QUEUE,
            json_body=body,
            timeout=self._timeout,
            on_admitted=on_admitted,
            paced=True,
        )
        return parse_enqueue_answer(data, count)

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """``GET /api/ai/queue/{id}`` (``APIResponseValidationError``: malformed, another id's)."""
        path = id_path(QUEUE, generation_id)
        data = await self._call("GET", path)
        what = f"GET /{path}"
        return _same_record(parse(GenerationRecord, data, what=what), generation_id, what)

    async def cancel(self, generation_id: str) -> None:
        await self._call("DELETE", id_path(QUEUE, generation_id))

    async def list_queue(self, **filters: str | None) -> list[GenerationRecord]:
        params = {key: value for key, value in filters.items() if value is not None}
        data = await self._call("GET", QUEUE, params)
        what = f"GET /{QUEUE}"
        return [parse(GenerationRecord, row, what=what) for row in _list(data, what)]

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        """Id -> status of every active row, parsed leanly (every poll tick runs it); a row
        without a string id and status, or with an implausible id, is skipped and logged."""
        data = await self._call("GET", QUEUE, {"model": model} if model else None)
        statuses: dict[str, str] = {}
        what = f"GET /{QUEUE}"
        for row in _list(data, what):
            generation_id, status = _get(row, "generation_id"), _get(row, "status")
            if not isinstance(status, str) or not isinstance(generation_id, str):
                logger.debug("%s: skipped a malformed row", what)
            elif plausible_id(generation_id):
                statuses[generation_id] = status
            else:
                note = "%s: skipped a row whose generation_id %.80r is not a plausible id"
                logger.debug(note, what, generation_id)
        return statuses

    async def active_rows(self, model: str) -> list[object]:
        """The active rows of one model as they came (reconciliation's first look)."""
        data = await self._call("GET", QUEUE, {"model": model})
        return _list(data, f"GET /{QUEUE}")

    async def history_slice(self, *, model: str, page: int, page_size: int) -> HistorySlice:
        """One page of one model's history, its rows as they came."""
        data = await self._call(
            "GET", HISTORY, {"model": model, "page": page, "page_size": page_size}
        )
        total = _get(data, "total_pages")
        pages = total if type(total) is int and total >= 1 else None
        return HistorySlice(_list(data, f"GET /{HISTORY}"), pages)

    async def list_generations(self, **query: str | int | None) -> GenerationPage:
        params = {key: value for key, value in query.items() if value is not None}
        data = await self._call("GET", HISTORY, params)
        return parse(GenerationPage, data, what=f"GET /{HISTORY}")

    async def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """One history row, with its cost, out of its envelope (``{"generation": {...}, ...}``;
        the queue's row is bare)."""
        data = await self._call("GET", id_path(HISTORY, generation_id))
        what = f"GET /{HISTORY}/{{id}}"
        row = _get(data, "generation")
        if not isinstance(row, Mapping):
            raise APIResponseValidationError(f"{what}: answer has no generation object")
        return _same_record(parse(GenerationRecord, row, what=what), generation_id, what)

    async def get_model(self, model_id: str) -> Model:
        data = await self._call("GET", id_path(MODELS, model_id, field="model"))
        return parse(Model, data, what=f"GET /{MODELS}/{{id}}")

    async def list_models(self) -> list[Model]:
        data = await self._call("GET", MODELS)
        what = f"GET /{MODELS}"
        return [parse(Model, row, what=what) for row in _list(data, what, "data")]

    async def generate_images(self, body: Mapping[str, Any], *, read: float) -> ImagesResponse:
        data = await self._session.send_create(IMAGES, body, timeout=self._slow(read))
        return parse(ImagesResponse, data, what=f"POST /{IMAGES}")

    async def edit_images(self, body: Mapping[str, Any], *, read: float) -> ImagesResponse:
        data = await self._session.send_create(EDITS, body, timeout=self._slow(read))
        return parse(ImagesResponse, data, what=f"POST /{EDITS}")

    async def generate_videos(self, body: Mapping[str, Any], *, read: float) -> VideosResponse:
        data = await self._session.send_create(VIDEOS, body, timeout=self._slow(read))
        return parse(VideosResponse, data, what=f"POST /{VIDEOS}")

    def event_stream(self) -> AbstractAsyncContextManager[httpx.Response]:
        return self._session.stream("GET", EVENTS)
