"""What the OpenTelemetry tests share: an SDK that records in memory, and ways to read it.

The SDK's providers are handed to the clients a test makes through
``oxen_queue._otel.use_providers`` rather than set globally: a process's global providers can
be set only once, and the other tests must keep running without an SDK.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from oxen_queue._otel import use_providers

GENERATION_SPAN = "generate_content"


@dataclass
class Recorded:
    """An SDK recording in memory: the spans ended so far, the metrics on demand."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @property
    def tracer(self) -> Tracer:
        """The application's own tracer (its spans are the parents of the generations')."""
        return self.tracer_provider.get_tracer("the-app")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def generation_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(GENERATION_SPAN)]

    def points(self, name: str) -> list[Any]:
        """The data points of one metric, as collected now (observables are read now)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def counts(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """A counter's values, or a histogram's counts, by attribute set."""
        return {
            frozenset(point.attributes.items()): point.count
            if hasattr(point, "bucket_counts")
            else point.value
            for point in self.points(name)
        }

    def text(self) -> str:
        """Everything recorded, spans and metrics, as text (to look for what must not be)."""
        spans = "\n".join(span.to_json() for span in self.spans())
        data = self.reader.get_metrics_data()
        metrics = data.to_json() if data is not None else ""
        return f"{spans}\n{metrics}"


@contextmanager
def recording() -> Iterator[Recorded]:
    """Clients made inside record to a fresh in-memory SDK (no global provider is set)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        with use_providers(tracer_provider, meter_provider):
            yield Recorded(exporter, reader, tracer_provider, meter_provider)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def event_names(span: ReadableSpan) -> list[str]:
    return [event.name for event in span.events]


def by_id(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Generation spans by their generation id (``gen_ai.response.id``)."""
    return {str(attributes(s)["gen_ai.response.id"]): s for s in spans if s.attributes}


# -- a trace as text (the picture in docs/guides/observability.md) ----------------------------

# What the picture shows of each of this SDK's spans: the attributes a reader looks for, not the
# ones that differ from run to run (a port) or that every span repeats.
_SHOWN = (
    "gen_ai.request.model",
    "gen_ai.response.id",
    "oxen.generation.status",
    "oxen.generation.cost",
    "error.type",
)
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _http_name(span: ReadableSpan) -> str | None:
    """An HTTP client or server span as ``METHOD path -> status``, whichever semantic
    conventions its instrumentation's version follows (their attribute names changed)."""
    values = dict(span.attributes or {})
    method = values.get("http.request.method", values.get("http.method"))
    url = values.get("url.full", values.get("http.url"))
    status = values.get("http.response.status_code", values.get("http.status_code"))
    if method is None or url is None or span.kind is not SpanKind.CLIENT:
        return None
    path = _ID.sub("{generation_id}", httpx.URL(str(url)).path)
    return f"{method} {path} -> {status}"


def _describe(span: ReadableSpan) -> list[str]:
    values = dict(span.attributes or {})
    head = _http_name(span) or span.name
    scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
    # opentelemetry.instrumentation.httpx -> httpx: which package drew the span
    head = f"{head}  [{span.kind.name}, {scope.rpartition('.')[2]}]"
    if span.status.status_code is StatusCode.ERROR:
        head += f"  ERROR: {span.status.description}" if span.status.description else "  ERROR"
    lines = [head]
    if scope == "oxen_queue":
        lines += [f"{key}={_ID.sub('<id>', str(values[key]))}" for key in _SHOWN if key in values]
    return lines


def render_trace(spans: Sequence[ReadableSpan], root: ReadableSpan) -> str:
    """The trace under ``root`` as a text tree: each span (HTTP ones as ``METHOD path ->
    status``), this SDK's chosen attributes, and its events in time order among its children."""
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, prefix: str, last: bool, top: bool) -> None:
        head, *rest = _describe(span)
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(prefix + branch + head)
        inner = prefix if top else prefix + ("    " if last else "│   ")
        assert span.context is not None
        items: list[tuple[int, str, ReadableSpan | None]] = [
            (event.timestamp, _event_text(event.name, event.attributes), None)
            for event in span.events
        ]
        items += [
            (child.start_time or 0, "", child) for child in children.get(span.context.span_id, [])
        ]
        items.sort(key=lambda item: item[0])
        lines.extend(inner + ("│ " if items else "  ") + line.strip() for line in rest)
        for index, (_, text, child) in enumerate(items):
            is_last = index == len(items) - 1
            if child is None:
                lines.append(inner + ("└── " if is_last else "├── ") + "event " + text)
            else:
                walk(child, inner, is_last, False)

    walk(root, "", True, True)
    return "\n".join(lines)


def _event_text(name: str, values: Any) -> str:
    shown = [
        f"{key}={value}"
        for key, value in dict(values or {}).items()
        if key != "oxen.retry.delay"  # drawn at random (jitter): not the same twice
    ]
    return "  ".join([name, *shown])
