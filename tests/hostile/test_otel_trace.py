"""A FastAPI request's trace holds its generation, and the generation its HTTP calls (issue 18).

A FastAPI app instrumented by ``opentelemetry-instrumentation-fastapi`` awaits a generation; our
client's HTTP requests are instrumented by ``opentelemetry-instrumentation-httpx``; the server
refuses the first enqueue with a 429. The request's span is the generation's parent; the
``POST``\\ s (the refused one, then the one that made the job), the model's one-off ``GET`` and
the budget's read of the charge are the generation's children, with the retry among them as an
event. This SDK records no HTTP span of its own: the two instrumentations combine.

The trace, drawn as text, is the picture in ``docs/guides/observability.md``: this test
fails when they differ, showing the new drawing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from oxen_queue import AsyncClient
from oxen_queue._watch._events import EventWatcher

from ..otel_support import Recorded, attributes, recording, render_trace
from .actions import reply
from .server import Action, Exchange, HostileServer
from .support import PROMPT, make_client

pytestmark = pytest.mark.anyio

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "observability.md"
PICTURE = re.compile(
    r"<!-- trace-picture: start -->\s*```text\n(.*?)```\s*<!-- trace-picture: end -->", re.DOTALL
)


@pytest.fixture
def otel() -> Iterator[Recorded]:
    with recording() as recorded:
        yield recorded


@contextmanager
def httpx_instrumented(otel: Recorded) -> Iterator[None]:
    """Every httpx transport's requests traced, as ``HTTPXClientInstrumentor().instrument()``
    does in an application, for the test's duration."""
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


class PictureRequest(BaseModel):
    prompt: str


def url(span: ReadableSpan) -> object:
    """An HTTP client span's URL, by either conventions' name (old by default, new opted in)."""
    values = attributes(span)
    return values.get("url.full", values.get("http.url"))


def pictures_app(client: AsyncClient, otel: Recorded) -> FastAPI:
    """A web app whose route awaits a generation, instrumented as its docs say."""
    app = FastAPI()

    @app.post("/pictures")
    async def make_picture(picture: PictureRequest) -> dict[str, str]:
        record = await client.generate("gpt-image-2", prompt=picture.prompt, quality="low")
        return {"generation_id": record.generation_id, "status": record.status}

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        exclude_spans=["receive", "send"],  # the ASGI messages: not this picture's subject
    )
    return app


async def test_a_fastapi_requests_trace_holds_its_generation_and_the_http_calls_under_it(
    server: HostileServer, otel: Recorded
) -> None:
    server.on("POST", "/api/ai/queue", reply(429, b"{}", headers=[("Retry-After", "0")]), times=1)
    with httpx_instrumented(otel):
        async with make_client(server, completion="auto", max_spend=100) as client:
            app = pictures_app(client, otel)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as web:
                answer = await web.post("/pictures", json={"prompt": PROMPT})
            assert answer.status_code == 200, answer.text
            generation_id = answer.json()["generation_id"]
            with anyio.fail_after(10):  # its span ends once the budget has read the charge
                while not otel.generation_spans():
                    await anyio.sleep(0.02)
    (request,) = [s for s in otel.spans() if s.kind is SpanKind.SERVER]
    (generation,) = otel.generation_spans()
    assert request.context is not None and generation.context is not None
    assert generation.parent is not None
    assert generation.parent.span_id == request.context.span_id
    assert attributes(generation)["gen_ai.response.id"] == generation_id
    under = [s for s in otel.spans() if s.parent and s.parent.span_id == generation.context.span_id]
    assert sorted(s.kind.name for s in under) == ["CLIENT"] * 4  # httpx's, none of ours
    # The event stream serves every generation: it opened for this request, outside its trace.
    (stream,) = [s for s in otel.spans() if str(url(s)).endswith("/api/events")]
    assert stream.parent is None
    picture = render_trace(otel.spans(), request)
    found = PICTURE.search(PAGE.read_text(encoding="utf-8"))
    assert found is not None, f"{PAGE.name} has no trace picture"
    assert found.group(1).rstrip() == picture, f"the trace now draws as:\n{picture}"


def answered_after_its_event(clients: list[AsyncClient]) -> Action:
    """Let the emulator make the job, and answer only once the client holds the job's
    completion event: the event overtakes the answer, so the generation is done the moment
    its id is known."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        generation_id = json.loads(captured.body)["generations"][0]["generation_id"]
        watcher = clients[0]._core.watcher
        assert isinstance(watcher, EventWatcher)
        with anyio.fail_after(10):
            while generation_id not in watcher._recent:
                await anyio.sleep(0.01)
        await ex.start(captured.status, captured.headers, len(captured.body))
        await ex.body(captured.body, more=False)

    return action


async def test_a_generation_done_before_its_id_arrives_still_waits_for_its_charge(
    server: HostileServer, otel: Recorded
) -> None:
    """Its span ends as its id arrives (the generation is already done), yet waits for the
    budget's read of the charge, and carries it."""
    clients: list[AsyncClient] = []
    server.on("POST", "/api/ai/queue", answered_after_its_event(clients), times=1)
    async with make_client(server, completion="auto", max_spend=100) as client:
        clients.append(client)
        record = await client.generate("gpt-image-2", prompt=PROMPT, quality="low")
        with anyio.fail_after(10):
            while not otel.generation_spans():
                await anyio.sleep(0.02)
        charged = client.spend
    (span,) = otel.generation_spans()
    assert attributes(span)["gen_ai.response.id"] == record.generation_id
    assert charged is not None and charged.charged > 0
    assert attributes(span)["oxen.generation.cost"] == float(charged.charged)
