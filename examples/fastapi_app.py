"""A FastAPI app in front of the generation queue: wait for an image, enqueue and follow it,
or watch jobs on a small page.

Shows:

- one ``AsyncClient`` for the whole app, opened and closed in the lifespan and handed to
  every request by a dependency;
- ``POST /images``: generate one image and answer when it exists. Bad parameters answer 422
  (checked by the SDK before anything is sent), a failed generation 502, and a caller who
  hangs up has the job cancelled upstream (``oxen_queue.asgi.cancel_on_disconnect``);
- ``POST /jobs`` (202 and an id), ``GET /jobs/{id}`` (the current row), ``DELETE /jobs/{id}``
  (cancel), ``GET /jobs/{id}/image`` (the result, through the app) and
  ``GET /jobs/{id}/events`` (status changes as Server-Sent Events, from
  ``generation.updates()``: the client's one watcher tells every stream, no request each).
  An id from the URL is passed to the SDK as it came: one that is not a plausible generation
  id (``..``, ``a/b``, ``x?y``, ...) is refused by the SDK before anything is sent, and
  answers 422 naming the field, like every other bad parameter (not 404: nothing was looked
  up, and the caller's request, not the hub, is at fault);
- ``GET /``: a page to type prompts into, with the estimated cost, where each job's status
  arrives over one event stream for the whole page (``GET /events?id=...``) and each image
  shows as it lands (``examples/static/index.html``).

Run it offline: without ``OXEN_API_KEY``, it starts an embedded emulator (and logs so)::

    uv run uvicorn examples.fastapi_app:app --port 8080

then open http://localhost:8080/. Against the hub, with your key (``OXEN_API_KEY=... uv run
uvicorn ...``), or against an emulator of your own (``OXEN_BASE_URL=http://127.0.0.1:8000
OXEN_API_KEY=anything``). Or from a shell::

    curl -X POST localhost:8080/images -H 'content-type: application/json' \\
        -d '{"prompt": "An ox at sunset", "resolution": "1024x1024"}'
    curl -X POST localhost:8080/jobs -H 'content-type: application/json' \\
        -d '{"prompt": "An ox at dawn"}'
    curl -N localhost:8080/jobs/<generation_id>/events
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Final, TypedDict, get_args

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel

from oxen_queue import (
    AsyncClient,
    GenerationCancelledError,
    GenerationFailedError,
    GenerationRecord,
    GenerationTimeoutError,
    GptImage2Params,
    InvalidParamsError,
    NotFoundError,
    OutputFormat,
    OxenError,
    Quality,
    Resolution,
)
from oxen_queue.asgi import ClientDisconnectedError, cancel_on_disconnect

# uvicorn configures this logger: the line shows up next to its own startup lines.
logger = logging.getLogger("uvicorn.error")

MODEL: Final = "gpt-image-2"
PAGE: Final = Path(__file__).with_name("static") / "index.html"
KEEPALIVE: Final = 15.0  # seconds of silence before an event stream sends a comment
MAX_FOLLOWED: Final = 50  # generations one event stream may follow


class State(TypedDict):
    client: AsyncClient
    tasks: TaskGroup


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    # One client for the whole app, shared by every request. A client per request leaks
    # connections and pays a TLS handshake each time; a shared client whose pool is too small
    # makes requests time out waiting for a connection under load (both known complaints
    # about peer SDKs). This client bounds its own concurrency (max_concurrency: adaptive,
    # as many requests in flight as the hub's latency needs) and queues the rest, and one
    # watcher learns about every generation at once.
    # The task group holds what the event streams follow (see _events); nothing outlives it.
    with _hub():
        async with AsyncClient() as client, anyio.create_task_group() as tasks:
            yield {"client": client, "tasks": tasks}
            tasks.cancel_scope.cancel()  # event streams still open at shutdown


@contextlib.contextmanager
def _hub() -> Iterator[None]:
    """The hub named by the environment; without ``OXEN_API_KEY``, an embedded emulator."""
    if os.environ.get("OXEN_API_KEY", "").strip():
        url = os.environ.get("OXEN_BASE_URL") or "https://hub.oxen.ai"
        logger.info("oxen-queue: using the hub at %s", url)
        yield
        return
    from oxen_queue.testing import use_emulator  # the emulator extra, needed only here

    with use_emulator() as emulator:
        assert emulator is not None
        logger.info(
            "oxen-queue: OXEN_API_KEY is not set; using an embedded emulator at %s",
            emulator.base_url,
        )
        yield


app = FastAPI(title="oxen-queue example", lifespan=lifespan)


async def shared_client(request: Request) -> AsyncClient:
    """The app's one client (see ``lifespan``)."""
    client: AsyncClient = request.state.client
    return client


async def app_tasks(request: Request) -> TaskGroup:
    """The app's task group (see ``lifespan``)."""
    tasks: TaskGroup = request.state.tasks
    return tasks


SharedClient = Annotated[AsyncClient, Depends(shared_client)]
AppTasks = Annotated[TaskGroup, Depends(app_tasks)]


class ImageOptions(BaseModel):
    """How to generate: each one left out takes the model's default.

    The options are plain strings, not Literals: the SDK checks them and names the allowed
    values, so it stays the one source of truth when the model gains, say, a resolution.
    """

    resolution: str | None = None
    quality: str | None = None
    output_format: str | None = None


class ImageRequest(ImageOptions):
    """What to generate."""

    prompt: str


class Image(BaseModel):
    generation_id: str
    status: str
    result_url: str | None


class Job(BaseModel):
    generation_id: str
    status: str


class Choices(BaseModel):
    model: str
    choices: dict[str, list[str]]
    defaults: dict[str, str]


class Estimate(BaseModel):
    model: str
    cost: Decimal | None
    """In the API's currency (USD); ``None`` when the pricing cannot tell (see ``reason``)."""
    reason: str | None = None


@app.exception_handler(InvalidParamsError)
async def invalid_params(request: Request, exc: InvalidParamsError) -> JSONResponse:
    # Caught by the SDK before anything was sent: nothing was enqueued, nothing billed. Also
    # a route's generation id that could not be a path segment of the hub's URL.
    detail = {"field": exc.field, "message": str(exc), "allowed": exc.allowed}
    return JSONResponse({"detail": detail}, status_code=422)


@app.exception_handler(GenerationFailedError)
async def generation_failed(request: Request, exc: GenerationFailedError) -> JSONResponse:
    detail = {"generation_id": exc.generation_id, "error_message": exc.error_message}
    return JSONResponse({"detail": detail}, status_code=502)


@app.exception_handler(GenerationCancelledError)
async def generation_cancelled(request: Request, exc: GenerationCancelledError) -> JSONResponse:
    # Someone cancelled it elsewhere (another request, the CLI, the Oxen UI).
    return JSONResponse({"detail": {"generation_id": exc.generation_id}}, status_code=409)


@app.exception_handler(GenerationTimeoutError)
async def generation_timed_out(request: Request, exc: GenerationTimeoutError) -> JSONResponse:
    # generate() has already cancelled the job upstream: its result would come too late.
    return JSONResponse({"detail": {"generation_id": exc.generation_id}}, status_code=504)


@app.exception_handler(ClientDisconnectedError)
async def client_disconnected(request: Request, exc: ClientDisconnectedError) -> Response:
    # The caller hung up and the job was cancelled upstream: nobody reads this answer.
    return Response(status_code=499)  # nginx's "client closed request"


@app.exception_handler(NotFoundError)
async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
    return JSONResponse({"detail": "no such generation"}, status_code=404)


@app.post("/images")
async def create_image(body: ImageRequest, request: Request, client: SharedClient) -> Image:
    """Generate one image and answer once it exists (5-30 s on the hub).

    Starlette does not cancel a handler whose caller hung up: ``cancel_on_disconnect`` does,
    and cancelled, ``client.generate()`` cancels its job upstream. Nobody will see the result,
    so nobody should pay for it.
    """
    params = body.model_dump(exclude_none=True)
    record = await cancel_on_disconnect(request, client.generate(MODEL, **params))
    return Image(
        generation_id=record.generation_id, status=record.status, result_url=record.result_url
    )


@app.post("/jobs", status_code=202)
async def create_job(body: ImageRequest, client: SharedClient) -> Job:
    """Enqueue one image and answer at once; follow it with the routes below."""
    generation = await client.enqueue(MODEL, **body.model_dump(exclude_none=True))
    return Job(generation_id=generation.id, status=generation.status)


@app.get("/jobs/{generation_id}")
async def get_job(generation_id: str, client: SharedClient) -> GenerationRecord:
    """The job's current row."""
    return await client.get_generation(generation_id)


@app.delete("/jobs/{generation_id}", status_code=204)
async def cancel_job(generation_id: str, client: SharedClient) -> Response:
    """Cancel the job (one already finished stays as it is); its event stream tells the rest."""
    await client.cancel(generation_id)
    return Response(status_code=204)


@app.get("/jobs/{generation_id}/image")
async def job_image(generation_id: str, client: SharedClient) -> Response:
    """The result file, read through the app: the file host is another origin, and its links
    expire. Waits for a job still running; a failed one answers 502 with its message."""
    data = await client.read(generation_id)
    headers = {"Cache-Control": "private, max-age=3600"}
    return Response(data, media_type=_image_type(data), headers=headers)


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


# -- following jobs as Server-Sent Events --------------------------------------------------------


@app.get("/jobs/{generation_id}/events")
async def job_events(
    generation_id: str, client: SharedClient, tasks: AppTasks
) -> StreamingResponse:
    """One job's status changes as Server-Sent Events (see :func:`_events`)."""
    # No deadline: a browser may watch a reattached job for as long as it runs.
    updates = client.generation(generation_id, deadline=None).updates()
    first = await anext(updates)  # an unknown id raises NotFoundError here: 404
    return _event_stream(tasks, [(generation_id, _chain(first, updates))])


@app.get("/events")
async def page_events(
    client: SharedClient,
    tasks: AppTasks,
    ids: Annotated[list[str], Query(alias="id", min_length=1, max_length=MAX_FOLLOWED)],
) -> StreamingResponse:
    """Several jobs' status changes on one stream (a page's, in one of the six connections a
    browser opens to a host); an unknown id gets a ``lost`` event, not a 404."""
    followed = [
        (generation_id, client.generation(generation_id, deadline=None).updates())
        for generation_id in dict.fromkeys(ids)
    ]
    return _event_stream(tasks, followed)


Followed = list[tuple[str, AsyncGenerator[GenerationRecord, None]]]


def _event_stream(tasks: TaskGroup, followed: Followed) -> StreamingResponse:
    return StreamingResponse(
        _events(tasks, followed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _events(tasks: TaskGroup, followed: Followed) -> AsyncIterator[str]:
    """``event: status`` with the record at each change of each followed generation (the
    first is its current state, the last its final one), ``event: lost`` for one whose status
    could not be learned, then ``event: end`` once every one is over: a browser's
    ``EventSource`` would reconnect when the stream ends, so the page closes it on ``end``.

    Each generation is followed by a task in the app's group (an async generator must not
    hold a task group across a ``yield``); the stream cancels them when it ends, however it
    ends, so a browser leaving the page unsubscribes at once. Between events, a comment every
    ``KEEPALIVE`` seconds, so a dead connection shows.
    """
    send, receive = anyio.create_memory_object_stream[str](max_buffer_size=16)
    scopes: list[anyio.CancelScope] = []
    try:
        with send:
            for generation_id, updates in followed:
                scopes.append(await tasks.start(_follow, generation_id, updates, send.clone()))
        with receive:
            while True:
                message = ": keep-alive\n\n"
                with anyio.move_on_after(KEEPALIVE):
                    try:
                        message = await receive.receive()
                    except anyio.EndOfStream:  # every follower is done
                        break
                yield message
        yield _sse("end", "{}")
    finally:
        for scope in scopes:
            scope.cancel()


async def _follow(
    generation_id: str,
    updates: AsyncGenerator[GenerationRecord, None],
    send: MemoryObjectSendStream[str],
    *,
    task_status: TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Pass one generation's updates on to a stream, until its end or the stream's."""
    with anyio.CancelScope() as scope, send:
        task_status.started(scope)
        try:
            async with contextlib.aclosing(updates):
                try:
                    async for record in updates:
                        await send.send(_sse("status", record.model_dump_json()))
                except OxenError as exc:  # no final row: an unknown id, a closed client
                    lost = {"generation_id": generation_id, "message": str(exc)}
                    await send.send(_sse("lost", json.dumps(lost)))
        except anyio.BrokenResourceError:
            pass  # the stream ended first
        except Exception:  # a task of the app's group must not take the app down
            logger.exception("following generation %s failed", generation_id)


async def _chain(
    first: GenerationRecord, rest: AsyncGenerator[GenerationRecord, None]
) -> AsyncGenerator[GenerationRecord, None]:
    async with contextlib.aclosing(rest):
        yield first
        async for record in rest:
            yield record


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"  # data is one line of JSON


# -- the page ------------------------------------------------------------------------------------


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The page: plain HTML and a little JavaScript, no build step."""
    return FileResponse(PAGE)


@app.get("/options")
async def options() -> Choices:
    """The choices the page offers: the SDK's own lists and defaults."""
    choices = {
        "resolution": list(get_args(Resolution)),
        "quality": list(get_args(Quality)),
        "output_format": list(get_args(OutputFormat)),
    }
    fields = GptImage2Params.model_fields
    defaults = {name: str(fields[name].default) for name in choices}
    return Choices(model=MODEL, choices=choices, defaults=defaults)


@app.get("/estimate")
async def estimate(client: SharedClient, params: Annotated[ImageOptions, Query()]) -> Estimate:
    """What one image with these options would cost, from the model's published pricing."""
    try:
        cost = await client.estimate_cost(MODEL, **params.model_dump(exclude_none=True))
    except InvalidParamsError:
        raise  # 422, naming the field
    except OxenError as exc:  # the pricing cannot tell (billed by time, a missing price...)
        return Estimate(model=MODEL, cost=None, reason=str(exc))
    return Estimate(model=MODEL, cost=cost)
