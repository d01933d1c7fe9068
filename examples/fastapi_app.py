"""A FastAPI app in front of the generation queue: wait for an image, or enqueue and follow it.

Shows:

- one ``AsyncClient`` for the whole app, opened and closed in the lifespan and handed to
  every request by a dependency;
- ``POST /images``: generate one image and answer when it exists. Bad parameters answer 422
  (checked by the SDK before anything is sent), a failed generation 502, and a caller who
  hangs up has the job cancelled upstream (``oxen_queue.asgi.cancel_on_disconnect``);
- ``POST /jobs`` (202 and an id), ``GET /jobs/{id}`` (the current row) and
  ``GET /jobs/{id}/events`` (status changes as Server-Sent Events, for a browser's
  ``EventSource``).

Run it offline: without ``OXEN_API_KEY``, it starts an embedded emulator (and logs so)::

    uv run uvicorn examples.fastapi_app:app --port 8080

against the hub, with your key (``OXEN_API_KEY=... uv run uvicorn ...``), or against an
emulator of your own (``OXEN_BASE_URL=http://127.0.0.1:8000 OXEN_API_KEY=anything``). Then::

    curl -X POST localhost:8080/images -H 'content-type: application/json' \\
        -d '{"prompt": "An ox at sunset", "resolution": "1024x1024"}'
    curl -X POST localhost:8080/jobs -H 'content-type: application/json' \\
        -d '{"prompt": "An ox at dawn"}'
    curl -N localhost:8080/jobs/<generation_id>/events
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, TypedDict

import anyio
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from oxen_queue import (
    TERMINAL_STATUSES,
    AsyncClient,
    Generation,
    GenerationCancelledError,
    GenerationFailedError,
    GenerationRecord,
    GenerationTimeoutError,
    InvalidParamsError,
    NotFoundError,
    OxenError,
)
from oxen_queue.asgi import ClientDisconnectedError, cancel_on_disconnect

# uvicorn configures this logger: the line shows up next to its own startup lines.
logger = logging.getLogger("uvicorn.error")


class State(TypedDict):
    client: AsyncClient


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    # One client for the whole app, shared by every request. A client per request leaks
    # connections and pays a TLS handshake each time; a shared client whose pool is too small
    # makes requests time out waiting for a connection under load (both known complaints
    # about peer SDKs). This client bounds its own concurrency (max_concurrency, 16 requests
    # in flight) and queues the rest, and one watcher learns about every generation at once.
    with _hub():
        async with AsyncClient() as client:  # $OXEN_API_KEY, $OXEN_BASE_URL
            yield {"client": client}


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


SharedClient = Annotated[AsyncClient, Depends(shared_client)]


class ImageRequest(BaseModel):
    """What to generate.

    The options are plain strings, not Literals: the SDK checks them and names the allowed
    values, so it stays the one source of truth when the model gains, say, a resolution.
    """

    prompt: str
    resolution: str | None = None
    quality: str | None = None
    output_format: str | None = None


class Image(BaseModel):
    generation_id: str
    status: str
    result_url: str | None


class Job(BaseModel):
    generation_id: str
    status: str


@app.exception_handler(InvalidParamsError)
async def invalid_params(request: Request, exc: InvalidParamsError) -> JSONResponse:
    # Caught by the SDK before anything was sent: nothing was enqueued, nothing billed.
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
    record = await cancel_on_disconnect(request, client.generate("gpt-image-2", **params))
    return Image(
        generation_id=record.generation_id, status=record.status, result_url=record.result_url
    )


@app.post("/jobs", status_code=202)
async def create_job(body: ImageRequest, client: SharedClient) -> Job:
    """Enqueue one image and answer at once; follow it with the two routes below."""
    generation = await client.enqueue("gpt-image-2", **body.model_dump(exclude_none=True))
    return Job(generation_id=generation.id, status=generation.status)


@app.get("/jobs/{generation_id}")
async def get_job(generation_id: str, client: SharedClient) -> GenerationRecord:
    """The job's current row."""
    return await client.get_generation(generation_id)


@app.get("/jobs/{generation_id}/events")
async def job_events(generation_id: str, client: SharedClient) -> StreamingResponse:
    """Status changes as Server-Sent Events (``event: status``), until the status is final."""
    record = await client.get_generation(generation_id)  # an unknown id answers 404 here
    return StreamingResponse(
        _status_events(client, record),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _status_events(client: AsyncClient, record: GenerationRecord) -> AsyncIterator[str]:
    # Reattach, so the client's one watcher tells us the moment the job finishes. No
    # deadline: an expired handle would return at once and turn this loop into a busy poll.
    generation = client.generation(record.generation_id, deadline=None)
    last_status = None
    while True:
        if record.status != last_status:
            last_status = record.status
            yield f"event: status\ndata: {record.model_dump_json()}\n\n"
        if record.status in TERMINAL_STATUSES:
            return
        # Completion is pushed at once; other changes (queued -> processing) within 1 s.
        with anyio.move_on_after(1.0):
            await _finished(generation)
        record = await client.get_generation(record.generation_id)


async def _finished(generation: Generation) -> None:
    """Wait until the generation has an outcome, whichever: the next row tells what it is."""
    with contextlib.suppress(OxenError):
        await generation
