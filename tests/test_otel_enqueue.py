"""OpenTelemetry (issue 18): what happens to an enqueue shows on its generation's span as
events (retries, a lost answer reconciled, a resend), retries and refusals are counted by
endpoint without an id, and no recorded text carries the key or, by default, the prompt.

On the scripted fake (``tests/fakes.py``): each answer is the test's choice.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from oxen_queue import BadRequestError

from .fakes import FakeAPI, on_enqueue
from .helpers import fake_client
from .otel_support import Recorded, attributes, event_names, recording

pytestmark = pytest.mark.anyio

MODEL = "gpt-image-2"
PROMPT = "A guarded ox, secret-ish"
RETRIES = "oxen.http.retries"
REFUSALS = "oxen.http.refusals"


@pytest.fixture
def otel() -> Iterator[Recorded]:
    with recording() as recorded:
        yield recorded


async def test_refused_attempts_are_retry_events_and_are_counted_by_endpoint(
    otel: Recorded,
) -> None:
    api = FakeAPI()
    on_enqueue(api, ["429", "503", "ok"])
    async with fake_client(api) as client:
        generation = await client.enqueue(MODEL, prompt=PROMPT)
        await generation
    (span,) = otel.generation_spans()
    retries = [e for e in span.events if e.name == "oxen.enqueue.retry"]
    assert [e.attributes["error.type"] for e in retries if e.attributes] == ["429", "503"]
    assert event_names(span)[-1] == "oxen.generation.created"
    endpoint = {"http.request.method": "POST", "url.template": "/api/ai/queue"}
    assert otel.counts(RETRIES) == {
        frozenset({**endpoint, "error.type": "429"}.items()): 1,
        frozenset({**endpoint, "error.type": "503"}.items()): 1,
    }
    assert otel.counts(REFUSALS) == {
        frozenset({**endpoint, "http.response.status_code": 429}.items()): 1,
        frozenset({**endpoint, "http.response.status_code": 503}.items()): 1,
    }


async def test_a_lost_answer_whose_job_is_found_is_reconciled_on_the_span(
    otel: Recorded,
) -> None:
    api = FakeAPI()
    on_enqueue(api, ["cut"])
    async with fake_client(api) as client:
        generation = await client.enqueue(MODEL, prompt=PROMPT)
        await generation
    (span,) = otel.generation_spans()
    assert event_names(span) == [
        "oxen.enqueue.answer_lost",
        "oxen.enqueue.reconciled",
        "oxen.generation.created",
    ]
    lost, reconciled, _ = span.events
    assert lost.attributes is not None and lost.attributes["error.type"] == "APIConnectionError"
    assert reconciled.attributes is not None
    assert reconciled.attributes["oxen.enqueue.adopted"] == 1
    assert attributes(span)["gen_ai.response.id"] == generation.id


async def test_a_lost_answer_that_made_nothing_is_resent_on_the_span(otel: Recorded) -> None:
    api = FakeAPI()
    on_enqueue(api, ["lost"])
    async with fake_client(api) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0  # the second look at once
        generation = await client.enqueue(MODEL, prompt=PROMPT)
        await generation
    assert api.calls["POST /api/ai/queue"] == 2
    (span,) = otel.generation_spans()
    assert event_names(span) == [
        "oxen.enqueue.answer_lost",
        "oxen.enqueue.resent",
        "oxen.generation.created",
    ]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["error.type"] == "APITimeoutError"


async def test_a_retried_read_is_counted_under_its_template_never_its_id(
    otel: Recorded,
) -> None:
    api = FakeAPI()
    failed: list[str] = []

    def first_read_fails(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and request.url.path.startswith("/api/ai/queue/") and not failed:
            failed.append(request.url.path)
            return httpx.Response(500, json={"error": {"message": "try again"}})
        return None

    api.before.append(first_read_fails)
    async with fake_client(api) as client:
        generation = await client.enqueue(MODEL, prompt=PROMPT)
        await generation
    endpoint = {"http.request.method": "GET", "url.template": "/api/ai/queue/{generation_id}"}
    assert otel.counts(RETRIES) == {frozenset({**endpoint, "error.type": "500"}.items()): 1}
    assert generation.id not in otel.reader.get_metrics_data().to_json()  # type: ignore[union-attr]


async def test_an_error_echoing_the_key_and_the_prompt_shows_neither_on_the_span(
    otel: Recorded,
) -> None:
    """A refusal whose message repeats the key and the prompt: the span's status says what
    happened without them (and, by default, no prompt is recorded anywhere)."""
    api = FakeAPI()

    def echo(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            key = request.headers["authorization"].removeprefix("Bearer ")
            message = f"refused {key} for prompt {PROMPT!r}"
            return httpx.Response(400, json={"error": {"message": message}})
        return None

    api.before.append(echo)
    async with fake_client(api) as client:
        with pytest.raises(BadRequestError, match="refused"):
            await client.enqueue(MODEL, prompt=PROMPT)
    (span,) = otel.generation_spans()
    description = span.status.description or ""
    assert "refused [redacted] for prompt '[prompt]'" in description
    assert attributes(span)["error.type"] == "400"
    recorded = otel.text()
    assert api.key not in recorded
    assert PROMPT not in recorded
