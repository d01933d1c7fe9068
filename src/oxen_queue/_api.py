"""The API's endpoints as typed calls: the one module that knows paths and response shapes.

Bodies arrive decoded (bounded, by `_json` through the session); here they become models.
A body of the wrong shape fails its one request with ``APIResponseValidationError``, and so does
a row fetched for one id that is about another (``GET /api/ai/queue/A`` answering id ``B``
settles neither). Where one bad row must not blind a caller to the others (a poller's list),
rows are parsed leniently: a malformed row is skipped and logged. Reconciliation's search is
the exception: a row it cannot read might be the very job it looks for, so it gets the rows
as they came and judges each itself (``_reconcile``).

The answer to ``POST /api/ai/queue`` is never refused whole: jobs it names exist, and are
billed. `parse_enqueue_answer` (see `EnqueueAnswer`) keeps every id it names and
says what else is wrong with it; the enqueuer decides what that means.

Ids in answers are data until they reach a path. The poller's statuses skip a row whose id is
not plausible (`_ids`: no generation of the client's can have it). Reconciliation's rows
keep such a row: it is evidence that a request made a job, and hiding it could turn a lost
answer into a second request; a job adopted with such an id is never watched (see
``ClientCore.track``).

Paths are built, never pasted together: a path with an id in it comes from `id_path`
alone, which judges the id (`_ids.check_id`) and encodes it as one segment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

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
    import httpx

    from ._http import ApiSession


__all__ = [
    "COMPLETED_EVENT",
    "ROW_FIELDS",
    "EnqueueAnswer",
    "HistorySlice",
    "QueueEndpoints",
    "id_path",
    "parse",
    "parse_enqueue_answer",
    "parse_event",
    "row_params",
    "url_template",
]

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

_TEMPLATES: Final = {
    path: f"/{path}" for path in (QUEUE, HISTORY, MODELS, EVENTS, IMAGES, EDITS, VIDEOS)
}
_ID_TEMPLATES: Final = {
    QUEUE: f"/{QUEUE}/{{generation_id}}",
    HISTORY: f"/{HISTORY}/{{generation_id}}",
    MODELS: f"/{MODELS}/{{model}}",
}

ROW_FIELDS: Final = frozenset(GenerationRecord.model_fields)
"""The fields a row declares; every other key of a row is a request parameter merged in."""


def id_path(collection: str, value: str, *, field: str = "generation_id") -> str:
    """``{collection}/{id}``: the one way an id becomes part of a path.

    The id must be plausible (`_ids.check_id`: so ``..``, ``/``, ``?``, ``#``, CR LF or
    NUL never reach a URL), and is then percent-encoded whole, as one segment.

    Args:
        collection: One of the fixed paths (`QUEUE`, `HISTORY`, `MODELS`).
        value: The id.
        field: The parameter named when the id is refused.

    Raises:
        InvalidParamsError: An implausible id, before anything is sent.
    """
    return f"{collection}/{segment(check_id(value, field=field))}"


def url_template(path: str) -> str:
    """The template of one of the API's paths, ids replaced by their names
    (``/api/ai/queue/{generation_id}``): for metrics, where an id must never be an attribute.
    A path none of the endpoints here builds is ``"_OTHER"``."""
    template = _TEMPLATES.get(path)
    if template is None:
        template = _ID_TEMPLATES.get(path.rpartition("/")[0], "_OTHER")
    return template


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
    """One page of history, as it came: what reconciliation needs.

    Attributes:
        rows: The page's entries, unparsed (a malformed one may be the job looked for).
        total_pages: Pages in all, or ``None`` when the answer does not say (readably).
    """

    rows: list[object]
    total_pages: int | None


@dataclass(frozen=True, slots=True)
class EnqueueAnswer:
    """What a successful answer to ``POST /api/ai/queue`` named.

    Attributes:
        ids: The plausible ids it named (``_ids.plausible_id``), each once, in order.
        unwatchable: The ids it named that are strings but not plausible ids: jobs that
            exist and cannot be watched (never put into a URL).
        unidentified: Its entries that name no id at all (not a mapping, no
            ``generation_id``, or one that is not a string): jobs that exist, ids unknown.
        problems: What is wrong with it, for errors and logs; empty when it is exactly as
            documented (``count`` entries, each with a distinct plausible id).
    """

    ids: tuple[str, ...]
    unwatchable: tuple[str, ...] = ()
    unidentified: int = 0
    problems: tuple[str, ...] = ()


def parse_enqueue_answer(data: object, count: int) -> EnqueueAnswer:
    """Every id a successful enqueue answer names, and what is wrong with it.

    Accepts anything: a documented answer (``{"generations": [{"generation_id": ...}, ...]}``
    with ``count`` entries) is the fast path; anything else still gives up every id it names.
    """
    rows = data.get("generations") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        return EnqueueAnswer((), problems=("the answer has no generations list",))
    if len(rows) == count:  # the documented answer: one cheap pass
        named = [row.get("generation_id") if isinstance(row, Mapping) else None for row in rows]
        if all(plausible_id(i) for i in named) and len(set(named)) == count:
            return EnqueueAnswer(tuple(cast("list[str]", named)))  # plausible: strings
    ids: dict[str, None] = {}
    unwatchable: dict[str, None] = {}
    unidentified = repeated = 0
    for row in rows:
        value = row.get("generation_id") if isinstance(row, Mapping) else None
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
    """``/api/ai/queue``, ``/api/ai/generations``, ``/api/ai/models``, ``/api/events``, ...

    One per client, and one per view of it (``client.with_options(timeout=...)``): the view's
    timeout is applied here, to every request made through it, and nowhere else.

    Args:
        session: The client's session.
        timeout: Each request's timeouts; ``None``: the session's.
    """

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
        """These timeouts with a read timeout of ``read`` seconds: for the blocking endpoints,
        whose answer takes as long as the work."""
        return self._session.read_timeout(read, base=self._timeout)

    # -- the queue ------------------------------------------------------------------------

    async def enqueue(
        self,
        body: Mapping[str, Any],
        count: int,
        *,
        on_admitted: Callable[[], Awaitable[object]] | None = None,
    ) -> EnqueueAnswer:
        """One attempt at ``POST /api/ai/queue``; what its successful answer named.

        A decoded success is never an error here, whatever its shape: see
        `parse_enqueue_answer`.

        Raises:
            APIResponseValidationError: A success whose body could not be decoded (the jobs
                exist: see ``certainly_created``).
        """
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
        """One generation's row (``GET /api/ai/queue/{id}``).

        Raises:
            APIResponseValidationError: The answer is malformed, or is about another id.
        """
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
        return [parse(GenerationRecord, row, what=what) for row in _rows(data, what)]

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        """Id -> status of every active row: parsed leanly, since it runs on every poll tick.

        Rows that are not even a mapping with a string id and status are skipped (and logged):
        one bad row must not blind the poller to every other generation. So is a row whose id
        is not plausible (`_ids`): no generation of the client's can have it.
        """
        params = {"model": model} if model else None
        data = await self._call("GET", QUEUE, params)
        statuses: dict[str, str] = {}
        for row in _rows(data, f"GET /{QUEUE}"):
            if isinstance(row, Mapping):
                generation_id, status = row.get("generation_id"), row.get("status")
                if plausible_id(generation_id) and isinstance(status, str):
                    statuses[generation_id] = status
                    continue
                if isinstance(generation_id, str) and isinstance(status, str):
                    logger.debug(
                        "GET /%s: skipped a row whose generation_id %.80r is not a plausible id",
                        QUEUE,
                        generation_id,
                    )
                    continue
            logger.debug("GET /%s: skipped a malformed row", QUEUE)
        return statuses

    async def active_rows(self, model: str) -> list[object]:
        """The active rows of one model as they came (reconciliation's first look)."""
        data = await self._call("GET", QUEUE, {"model": model})
        return _rows(data, f"GET /{QUEUE}")

    # -- history --------------------------------------------------------------------------

    async def history_slice(self, *, model: str, page: int, page_size: int) -> HistorySlice:
        """One page of one model's history, its rows as they came."""
        data = await self._call(
            "GET", HISTORY, {"model": model, "page": page, "page_size": page_size}
        )
        total = data.get("total_pages") if isinstance(data, Mapping) else None
        pages = total if type(total) is int and total >= 1 else None
        return HistorySlice(_rows(data, f"GET /{HISTORY}"), pages)

    async def list_generations(self, **query: str | int | None) -> GenerationPage:
        params = {key: value for key, value in query.items() if value is not None}
        data = await self._call("GET", HISTORY, params)
        return parse(GenerationPage, data, what=f"GET /{HISTORY}")

    async def get_generation_details(self, generation_id: str) -> GenerationRecord:
        """One history row, with its cost, out of its envelope: ``{"status": "success",
        "status_message": "resource_found", "generation": {...}}`` (unlike the queue's row,
        which is bare)."""
        data = await self._call("GET", id_path(HISTORY, generation_id))
        what = f"GET /{HISTORY}/{{id}}"
        row = data.get("generation") if isinstance(data, Mapping) else None
        if not isinstance(row, Mapping):
            raise APIResponseValidationError(f"{what}: answer has no generation object")
        return _same_record(parse(GenerationRecord, row, what=what), generation_id, what)

    # -- models ---------------------------------------------------------------------------

    async def get_model(self, model_id: str) -> Model:
        data = await self._call("GET", id_path(MODELS, model_id, field="model"))
        return parse(Model, data, what=f"GET /{MODELS}/{{id}}")

    async def list_models(self) -> list[Model]:
        data = await self._call("GET", MODELS)
        rows = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(rows, list):
            raise APIResponseValidationError(f"GET /{MODELS}: answer has no data list")
        return [parse(Model, row, what=f"GET /{MODELS}") for row in rows]

    # -- blocking generation ----------------------------------------------------------------

    async def generate_images(self, body: Mapping[str, Any], *, read: float) -> ImagesResponse:
        data = await self._session.send_create(IMAGES, body, timeout=self._slow(read))
        return parse(ImagesResponse, data, what=f"POST /{IMAGES}")

    async def edit_images(self, body: Mapping[str, Any], *, read: float) -> ImagesResponse:
        data = await self._session.send_create(EDITS, body, timeout=self._slow(read))
        return parse(ImagesResponse, data, what=f"POST /{EDITS}")

    async def generate_videos(self, body: Mapping[str, Any], *, read: float) -> VideosResponse:
        data = await self._session.send_create(VIDEOS, body, timeout=self._slow(read))
        return parse(VideosResponse, data, what=f"POST /{VIDEOS}")

    # -- events ---------------------------------------------------------------------------

    @asynccontextmanager
    async def event_stream(self) -> AsyncIterator[httpx.Response]:
        async with self._session.stream("GET", EVENTS) as response:
            yield response
