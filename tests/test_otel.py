"""OpenTelemetry (issue 18): one span per generation, under the caller's span, with the GenAI
conventions' attributes, its outcome as status, the enqueue's moments as events; the metrics
move as generations come and go; nothing is recorded without an SDK.

The generations run on the emulator in process, on a manual clock: nothing finishes until a
test moves it, so every outcome (succeeded, failed, cancelled, timed out) is the test's choice.
The SDK records in memory (``tests/otel_support.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind, StatusCode

from oxen_queue import (
    AsyncClient,
    BudgetExceededError,
    ClientClosedError,
    Generation,
    GenerationCancelledError,
    GenerationFailedError,
    GenerationTimeoutError,
)
from oxen_queue._otel import CAPTURE_ENV, NO_TRACE, PROMPT_LIMIT, use_providers
from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp

from .otel_support import Recorded, attributes, by_id, event_names, recording

pytestmark = pytest.mark.anyio

HUB = "https://hub.oxen.test"
KEY = "sk-otel-SECRET-4f1c9a7e"
MODEL = "gpt-image-2"
DURATION = "gen_ai.client.operation.duration"
ENQUEUE = "oxen.enqueue.duration"
PENDING = "oxen.generations.pending"
LIMIT = "oxen.http.concurrency_limit"
COMMON = {
    "gen_ai.operation.name": "generate_content",
    "gen_ai.provider.name": "oxen",
    "gen_ai.request.model": MODEL,
}


@pytest.fixture
def otel() -> Iterator[Recorded]:
    with recording() as recorded:
        yield recorded


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=18, unrelated_event_rate=0.0), clock=clock)


def in_process(app: EmulatorApp, **options: Any) -> AsyncClient:
    """A client of the in-process emulator, polling every pending generation at once, often."""
    settings: dict[str, Any] = {
        "api_key": KEY,
        "base_url": HUB,
        "transport": httpx.ASGITransport(app=app),
        "completion": "shared",
        "shared_poll_interval": 0.01,
    }
    return AsyncClient(**{**settings, **options})


def pending(otel: Recorded) -> float:
    (point,) = otel.points(PENDING)
    return float(point.value)


def by_error(otel: Recorded, name: str) -> dict[str | None, int]:
    """A histogram's counts by ``error.type`` (``None``: no error)."""
    counts: dict[str | None, int] = {}
    for point in otel.points(name):
        error = point.attributes.get("error.type")
        counts[error] = counts.get(error, 0) + point.count
    return counts


async def wait_for_spans(otel: Recorded, count: int) -> None:
    """Until ``count`` generation spans have ended (some end in a background task)."""
    with anyio.fail_after(10):
        while len(otel.generation_spans()) < count:
            await anyio.sleep(0.01)


# -- spans: one per generation, under the caller's span -------------------------------------


async def test_each_generation_is_one_span_under_the_callers_span_ending_with_its_outcome(
    otel: Recorded, app: EmulatorApp, clock: ManualClock
) -> None:
    """Succeeded, failed and cancelled generations: one span each, children of the span that
    was current when they were enqueued, named and attributed as the GenAI conventions say,
    ending unset, or with an error status and the server's message."""
    async with in_process(app) as client:
        with otel.tracer.start_as_current_span("POST /pictures") as parent:
            ok = await client.enqueue(MODEL, prompt="An ox at dawn", quality="low")
            # Sent unchecked: the server takes it, and the job fails as it starts.
            failing = await client.enqueue(
                MODEL, prompt="An ox at noon", quality="bogus", validate=False
            )
            cancelled = await client.enqueue(MODEL, prompt="An ox at dusk", quality="low")
            assert pending(otel) == 3
            await cancelled.cancel()
            with pytest.raises(GenerationCancelledError):
                await cancelled
            clock.advance(1000)
            await ok
            with pytest.raises(GenerationFailedError) as failed:
                await failing
        assert pending(otel) == 0
    spans = by_id(otel.generation_spans())
    assert len(otel.generation_spans()) == 3
    assert set(spans) == {ok.id, failing.id, cancelled.id}
    parent_context = parent.get_span_context()
    for generation_id, span in spans.items():
        assert span.parent is not None and span.parent.span_id == parent_context.span_id
        assert span.context is not None and span.context.trace_id == parent_context.trace_id
        assert span.name == f"generate_content {MODEL}"
        assert span.kind is SpanKind.CLIENT
        assert (
            attributes(span).items()
            >= {
                **COMMON,
                "gen_ai.response.id": generation_id,
                "gen_ai.response.model": MODEL,
                "gen_ai.output.type": "image",
                "server.address": "hub.oxen.test",
                "server.port": 443,
            }.items()
        )
        assert "oxen.generation.created" in event_names(span)
    assert spans[ok.id].status.status_code is StatusCode.UNSET
    assert attributes(spans[ok.id])["oxen.generation.status"] == "succeeded"
    assert "error.type" not in attributes(spans[ok.id])
    failed_span = spans[failing.id]
    assert failed_span.status.status_code is StatusCode.ERROR
    assert failed.value.error_message
    assert failed_span.status.description == failed.value.error_message
    assert attributes(failed_span)["error.type"] == "GenerationFailedError"
    assert attributes(failed_span)["oxen.generation.status"] == "failed"
    cancelled_span = spans[cancelled.id]
    assert cancelled_span.status.status_code is StatusCode.ERROR
    assert attributes(cancelled_span)["error.type"] == "GenerationCancelledError"
    assert attributes(cancelled_span)["oxen.generation.status"] == "cancelled"
    # The metrics: three enqueues answered, three outcomes timed, by error.
    assert by_error(otel, ENQUEUE) == {None: 3}
    assert by_error(otel, DURATION) == {
        None: 1,
        "GenerationFailedError": 1,
        "GenerationCancelledError": 1,
    }
    for point in otel.points(DURATION):
        assert {k: v for k, v in point.attributes.items() if k != "error.type"} == COMMON
    # Prompts are not recorded by default; the key never is.
    recorded = otel.text()
    for secret in (KEY, "An ox at dawn", "An ox at noon", "An ox at dusk"):
        assert secret not in recorded


async def test_a_request_of_several_generations_has_a_span_for_each_under_the_same_parent(
    otel: Recorded, app: EmulatorApp, clock: ManualClock
) -> None:
    """``enqueue_many(6)`` sends requests of 4 and 2: six spans, each with its request's
    ``gen_ai.request.choice.count``, all children of the caller's span."""
    async with in_process(app) as client:
        with otel.tracer.start_as_current_span("batch") as parent:
            generations = await client.enqueue_many(MODEL, 6, prompt="Six oxen", quality="low")
            clock.advance(1000)
            for generation in generations:
                await generation
    spans = by_id(otel.generation_spans())
    assert set(spans) == {g.id for g in generations}
    assert sorted(attributes(s)["gen_ai.request.choice.count"] for s in spans.values()) == [
        2,
        2,
        4,
        4,
        4,
        4,
    ]
    assert {s.parent.span_id for s in spans.values() if s.parent} == {
        parent.get_span_context().span_id
    }
    assert by_error(otel, ENQUEUE) == {None: 2}  # one per request
    assert by_error(otel, DURATION) == {None: 6}  # one per generation


async def test_a_generation_past_its_deadline_ends_its_span_with_a_timeout(
    otel: Recorded, app: EmulatorApp
) -> None:
    """The clock stands still, so the job stays queued: its deadline ends it, and its span,
    with ``GenerationTimeoutError`` and the last status seen."""
    async with in_process(app) as client:
        generation = await client.enqueue(MODEL, prompt="A slow ox", quality="low", deadline=0.05)
        with pytest.raises(GenerationTimeoutError):
            await generation
    (span,) = otel.generation_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "GenerationTimeoutError"
    assert attributes(span)["oxen.generation.status"] == "queued"
    assert by_error(otel, DURATION) == {"GenerationTimeoutError": 1}


async def test_a_generation_pending_when_the_client_closes_ends_its_span_with_the_close(
    otel: Recorded, app: EmulatorApp
) -> None:
    async with in_process(app) as client:
        generation = await client.enqueue(MODEL, prompt="An ox left behind", quality="low")
    with pytest.raises(ClientClosedError):
        await generation
    (span,) = otel.generation_spans()
    assert attributes(span)["error.type"] == "ClientClosedError"
    assert span.status.status_code is StatusCode.ERROR
    assert generation.id in (span.status.description or "")


async def test_an_enqueue_refused_before_sending_is_one_error_span_and_no_generation(
    otel: Recorded, app: EmulatorApp
) -> None:
    """Refused by the budget: a span with the budget's decision as an event, the error as its
    status, no generation id; the enqueue's latency counted with its error."""
    async with in_process(app, max_spend=0) as client:
        with pytest.raises(BudgetExceededError) as refused:
            await client.enqueue(MODEL, prompt="An ox too dear", quality="low")
        assert not client.pending
    (span,) = otel.generation_spans()
    assert "gen_ai.response.id" not in attributes(span)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "BudgetExceededError"
    (event,) = span.events
    assert event.name == "oxen.budget.refused"
    assert event.attributes is not None
    assert event.attributes["oxen.budget.estimate"] == float(refused.value.estimate or 0)
    assert by_error(otel, ENQUEUE) == {"BudgetExceededError": 1}
    assert otel.points(DURATION) == []  # no generation, no generation duration


# -- cost ---------------------------------------------------------------------------------------


async def test_with_a_budget_the_span_carries_the_charge_and_the_cost_counter_adds_it(
    otel: Recorded, app: EmulatorApp, clock: ManualClock
) -> None:
    """The budget reads each finished job's charge: the span waits for it (timed at the final
    status all the same), and ``oxen.generation.cost`` counts it by model."""
    async with in_process(app, max_spend=Decimal(100)) as client:
        estimate = await client.estimate_cost(MODEL, prompt="A priced ox", quality="low")
        generations = await client.enqueue_many(MODEL, 2, prompt="A priced ox", quality="low")
        clock.advance(1000)
        for generation in generations:
            await generation
        finished = time.time_ns()
        await wait_for_spans(otel, 2)
    spans = otel.generation_spans()
    for span in spans:
        assert attributes(span)["oxen.generation.cost"] == float(estimate)
        assert span.end_time is not None and span.end_time <= finished
        reserved = [e for e in span.events if e.name == "oxen.budget.reserved"]
        assert len(reserved) == 1 and reserved[0].attributes is not None
        assert reserved[0].attributes["oxen.budget.estimate"] == float(estimate)
    assert otel.counts("oxen.generation.cost") == {frozenset(COMMON.items()): float(estimate) * 2}


# -- metrics: pending and the bound ---------------------------------------------------------


async def test_pending_follows_the_generations_and_the_limit_shows_the_adaptive_bound(
    otel: Recorded, app: EmulatorApp, clock: ManualClock
) -> None:
    async with in_process(app) as client:
        generations = await client.enqueue_many(MODEL, 3, prompt="Three oxen", quality="low")
        assert pending(otel) == 3
        (limit,) = otel.points(LIMIT)
        assert limit.value == client.stats.max_concurrency == 64
        clock.advance(1000)
        for generation in generations:
            await generation
        assert pending(otel) == 0
    assert otel.points(LIMIT) == []  # a closed client is no longer observed


# -- without an SDK: nothing recorded, nothing kept --------------------------------------------


async def test_without_an_sdk_nothing_is_recorded_and_a_generation_carries_nothing_more(
    app: EmulatorApp, clock: ManualClock
) -> None:
    """The API's own no-op providers: an enqueue gets the shared no-op trace, and a generation
    has only the client's own done callback (no span, no timer kept for it)."""
    with use_providers(trace.NoOpTracerProvider(), NoOpMeterProvider()):
        async with in_process(app) as client:
            assert client._core.telemetry.request(MODEL, {}, 1) is NO_TRACE
            generation = await client.enqueue(MODEL, prompt="An unseen ox", quality="low")
            assert generation._callbacks == client._core._finished
            clock.advance(1000)
            await generation


# -- content capture ------------------------------------------------------------------------------


async def test_prompts_are_recorded_truncated_only_when_capture_is_turned_on(
    otel: Recorded, app: EmulatorApp, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    prompt = "An ox " + "x" * 1500
    async with in_process(app) as client:
        generation = await client.enqueue(MODEL, prompt=prompt, quality="low")
        clock.advance(1000)
        await generation
    (span,) = otel.generation_spans()
    messages = json.loads(str(attributes(span)["gen_ai.input.messages"]))
    assert [m["role"] for m in messages] == ["user"]
    ((part,),) = [m["parts"] for m in messages]
    assert part["type"] == "text"
    assert prompt.startswith(part["content"][:-3]) and part["content"].endswith("...")
    assert len(part["content"]) == PROMPT_LIMIT
    assert KEY not in otel.text()


# -- the request's context while it is sent ---------------------------------------------------


async def test_the_enqueue_is_sent_with_its_generations_span_current(otel: Recorded) -> None:
    """The worker that sends the request makes the generation's span current, so an HTTP
    instrumentation's span of the POST falls under it (seen here from inside the transport)."""
    from .fakes import FakeAPI
    from .helpers import fake_client

    api = FakeAPI()
    current: list[int] = []

    def note(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            current.append(trace.get_current_span().get_span_context().span_id)
        return None

    api.before.append(note)
    async with fake_client(api) as client:
        generation: Generation = await client.enqueue(MODEL, prompt="A watched ox")
        await generation
    (span,) = otel.generation_spans()
    assert span.context is not None
    assert current == [span.context.span_id]
