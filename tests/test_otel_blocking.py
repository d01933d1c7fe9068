"""OpenTelemetry with the blocking ``Client`` (issue 18): its calls run on an event loop in
another thread, and a generation's span is still a child of the span current in the thread
that called (a Flask or Django view's)."""

from __future__ import annotations

import httpx

from oxen_queue import Client
from oxen_queue.testing import EmulatorConfig, create_app

from .otel_support import attributes, recording


def test_a_blocking_generation_is_a_span_under_the_calling_threads_span() -> None:
    app = create_app(config=EmulatorConfig(time_scale=0.0, seed=5))
    with recording() as otel:
        with (
            Client(
                api_key="blocking-key",
                base_url="https://hub.oxen.test",
                transport=httpx.ASGITransport(app=app),
                completion="shared",
                shared_poll_interval=0.01,
            ) as client,
            otel.tracer.start_as_current_span("GET /view") as view,
        ):
            record = client.generate("gpt-image-2", prompt="A blocking ox", quality="low")
        (span,) = otel.generation_spans()
    assert span.parent is not None
    assert span.parent.span_id == view.get_span_context().span_id
    assert attributes(span)["gen_ai.response.id"] == record.generation_id
    assert attributes(span)["oxen.generation.status"] == "succeeded"
