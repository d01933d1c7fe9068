"""What records, once an SDK is configured: a client's telemetry, an enqueue's spans, a
generation's end. See the package's docstring for what each span and metric holds."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._api import url_template
from .._exceptions import BudgetExceededError, CostUnknownError
from ._base import NO_TRACE, RequestTrace, Telemetry, WillSettle
from ._signals import Signals, global_signals
from ._text import Redactor, error_type, input_messages, scrubbed

if TYPE_CHECKING:
    from decimal import Decimal

    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from .._admission import AdmissionControl
    from .._generation import Generation

__all__ = ["OPERATION", "PROVIDER", "ClientTelemetry"]

OPERATION: Final = "generate_content"
"""``gen_ai.operation.name``: the conventions' name for multimodal content generation."""
PROVIDER: Final = "oxen"
"""``gen_ai.provider.name``."""
_MODEL_CACHE: Final = 256


class ClientTelemetry(Telemetry):
    """A client's telemetry with OpenTelemetry installed; imports it at first use."""

    __slots__ = ("__weakref__", "_awaiting", "_capture", "_model_attributes", "_redactor",
                 "_server", "_signals", "_signals_given", "admission", "pending",
                 "will_settle")  # fmt: skip

    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        redactor: Redactor,
        capture: bool,
        signals: Signals | None,
    ) -> None:
        self._server: dict[str, str | int] = {"server.address": host}
        if port is not None:
            self._server["server.port"] = port
        self._redactor = redactor
        self._capture = capture
        self._signals_given = signals
        self._signals: Signals | None = None
        self._model_attributes: dict[str, dict[str, str]] = {}
        # Spans of finished generations whose charge the budget is reading: id -> (span, end).
        self._awaiting: dict[str, tuple[Span, int]] = {}
        self.pending: Mapping[str, object] | None = None
        self.admission: AdmissionControl | None = None
        self.will_settle: WillSettle | None = None

    def signals(self) -> Signals | None:
        """The tracer and instruments (``None``: nothing to record to yet).

        OpenTelemetry is imported here, at the first call made once something in the process
        has imported it: configuring an SDK does, and so does any library instrumented with
        it. Until then no SDK can have been configured, and importing it (some 35 ms of CPU)
        would buy nothing: the look costs two dictionary look-ups a call.
        """
        signals = self._signals
        if signals is None:
            signals = self._signals_given
            if signals is None:
                if "opentelemetry.trace" not in sys.modules and (
                    "opentelemetry.metrics" not in sys.modules
                ):
                    return None
                signals = global_signals()
                if signals is None:
                    return None
            self._signals = signals
            signals.register(self)
        return signals

    def watch(
        self,
        *,
        pending: Mapping[str, object],
        admission: AdmissionControl,
        will_settle: WillSettle,
    ) -> None:
        self.pending = pending
        self.admission = admission
        self.will_settle = will_settle

    def request(self, model: object, params: Mapping[str, Any], count: int) -> RequestTrace:
        signals = self.signals()
        if signals is None:
            return NO_TRACE
        tracing, metering = signals.recording()
        if not (tracing or metering):
            return NO_TRACE
        return _Request(self, signals, model, params, count, tracing=tracing)

    def model_attributes(self, model: object) -> dict[str, str]:
        """The metric attributes of a model's generations (one dict per model, reused)."""
        name = model if isinstance(model, str) else ""
        cached = self._model_attributes.get(name)
        if cached is None:
            cached = {"gen_ai.operation.name": OPERATION, "gen_ai.provider.name": PROVIDER}
            if name:
                cached["gen_ai.request.model"] = name
            if len(self._model_attributes) < _MODEL_CACHE:
                self._model_attributes[name] = cached
        return cached

    def span_attributes(self) -> dict[str, str | int]:
        """``server.address`` and ``server.port``."""
        return self._server

    @property
    def redactor(self) -> Redactor:
        return self._redactor

    @property
    def capture(self) -> bool:
        return self._capture

    def retried(self, method: str, path: str, error: BaseException | None) -> None:
        signals = self.signals()
        if signals is None:
            return
        signals.retries.add(
            1,
            {
                "http.request.method": method,
                "url.template": url_template(path),
                "error.type": error_type(error),
            },
        )

    def refused(self, method: str, path: str, status: int) -> None:
        signals = self.signals()
        if signals is None:
            return
        signals.refusals.add(
            1,
            {
                "http.request.method": method,
                "url.template": url_template(path),
                "http.response.status_code": status,
            },
        )

    def charged(self, generation_id: str, model: str | None, cost: Decimal) -> None:
        signals = self.signals()
        if signals is not None:
            signals.cost.add(float(cost), self.model_attributes(model))
        waiting = self._awaiting.pop(generation_id, None)
        if waiting is not None:
            span, end = waiting
            span.set_attribute("oxen.generation.cost", float(cost))
            span.end(end_time=end)

    def charge_unknown(self, generation_id: str) -> None:
        waiting = self._awaiting.pop(generation_id, None)
        if waiting is not None:
            span, end = waiting
            span.end(end_time=end)

    def attach_charge(self, generation_id: str) -> object:
        waiting = self._awaiting.get(generation_id)
        signals = self._signals
        if waiting is None or signals is None:
            return None
        return signals.context.attach(signals.trace.set_span_in_context(waiting[0]))

    def detach(self, token: object) -> None:
        if token is not None and self._signals is not None:
            self._signals.context.detach(token)

    def defer_end(self, generation_id: str, span: Span, end: int) -> None:
        """End ``span`` once the budget has read the generation's charge."""
        self._awaiting[generation_id] = (span, end)

    def close(self) -> None:
        awaiting, self._awaiting = self._awaiting, {}
        for span, end in awaiting.values():
            span.end(end_time=end)
        if self._signals is not None:
            self._signals.unregister(self)


class _Request(RequestTrace):
    """The spans and clocks of one enqueue with an SDK recording."""

    __slots__ = ("_answered", "_child_context", "_client", "_hide", "_model", "_params",
                 "_parent", "_signals", "_spans", "_start_ns", "_started", "_tracing")  # fmt: skip

    def __init__(
        self,
        client: ClientTelemetry,
        signals: Signals,
        model: object,
        params: Mapping[str, Any],
        count: int,
        *,
        tracing: bool,
    ) -> None:
        self._client = client
        self._signals = signals
        self._model = model
        self._params = params
        self._tracing = tracing
        self._started = time.monotonic()
        self._start_ns = time.time_ns()
        self._answered = False
        self._parent: Context = signals.context.get_current()
        self._spans: list[Span] = []
        self._child_context: Context | None = None
        self._hide: tuple[str, ...] = () if client.capture else scrubbed(params)
        if tracing:
            attributes = self._span_attributes(count)
            self._spans = [self._start_span(attributes) for _ in range(max(count, 1))]
            if len(self._spans) == 1:
                self._child_context = signals.trace.set_span_in_context(
                    self._spans[0], self._parent
                )
            else:  # several generations: their request belongs to none of them
                self._child_context = self._parent

    def _span_attributes(self, count: int) -> dict[str, Any]:
        """What a span of this request starts with (given at the start: a sampler reads it)."""
        attributes: dict[str, Any] = {
            **self._client.model_attributes(self._model),
            **self._client.span_attributes(),
        }
        if count != 1:
            attributes["gen_ai.request.choice.count"] = count
        if self._client.capture:
            messages = input_messages(self._params, self._client.redactor)
            if messages is not None:
                attributes["gen_ai.input.messages"] = messages
        return attributes

    def _start_span(self, attributes: dict[str, Any]) -> Span:
        model = self._model
        named = isinstance(model, str) and model.strip()
        return self._signals.tracer.start_span(
            f"{OPERATION} {model}" if named else OPERATION,
            context=self._parent,
            kind=self._signals.trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=self._start_ns,
        )

    # -- context ----------------------------------------------------------------------------

    def attach(self) -> object:
        if self._child_context is None:
            return None
        return self._signals.context.attach(self._child_context)

    def detach(self, token: object) -> None:
        if token is not None:
            self._signals.context.detach(token)

    # -- the enqueue's moments --------------------------------------------------------------

    def _event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        for span in self._spans:
            if span.is_recording():
                span.add_event(name, attributes)

    def budget_reserved(self, estimate: Decimal | None) -> None:
        if estimate is not None:
            self._event("oxen.budget.reserved", {"oxen.budget.estimate": float(estimate)})

    def budget_refused(self, error: BaseException) -> None:
        if isinstance(error, BudgetExceededError | CostUnknownError):
            attributes: dict[str, Any] = {"error.type": error_type(error)}
            if isinstance(error, BudgetExceededError) and error.estimate is not None:
                attributes["oxen.budget.estimate"] = float(error.estimate)
            self._event("oxen.budget.refused", attributes)

    def retried(self, error: BaseException | None, delay: float) -> None:
        self._event(
            "oxen.enqueue.retry", {"error.type": error_type(error), "oxen.retry.delay": delay}
        )

    def answer_lost(self, error: BaseException) -> None:
        self._event("oxen.enqueue.answer_lost", {"error.type": error_type(error)})

    def reconciled(self, adopted: int) -> None:
        self._event("oxen.enqueue.reconciled", {"oxen.enqueue.adopted": adopted})

    def resent(self) -> None:
        self._event("oxen.enqueue.resent")

    # -- the outcome ------------------------------------------------------------------------

    def _answer(self, error: BaseException | None) -> None:
        if self._answered:
            return
        self._answered = True
        attributes = self._client.model_attributes(self._model)
        if error is not None:
            attributes = {**attributes, "error.type": error_type(error)}
        self._signals.enqueue.record(time.monotonic() - self._started, attributes)

    def created(self, generation: Generation) -> None:
        self._answer(None)
        span: Span | None = None
        if self._spans:
            span = self._spans.pop(0)
        elif self._tracing:  # more jobs than asked: each has its span all the same
            span = self._start_span(self._span_attributes(1))
        if span is not None and span.is_recording():
            span.set_attribute("gen_ai.response.id", generation.id)
            span.add_event("oxen.generation.created")
        generation.add_done_callback(
            _Watched(self._client, self._signals, span, self._started, self._model, self._hide)
        )

    def failed(self, error: BaseException) -> None:
        self._answer(error)
        spans, self._spans = self._spans, []
        for span in spans:
            if span.is_recording():
                _set_error(span, self._signals, error, self._client.redactor, self._hide)
            span.end()


class _Watched:
    """A generation's done callback: its duration, and its span's end."""

    __slots__ = ("_client", "_hide", "_model", "_signals", "_span", "_started")

    def __init__(
        self,
        client: ClientTelemetry,
        signals: Signals,
        span: Span | None,
        started: float,
        model: object,
        hide: tuple[str, ...],
    ) -> None:
        self._client = client
        self._signals = signals
        self._span = span
        self._started = started
        self._model = model
        self._hide = hide

    def __call__(self, generation: Generation) -> None:
        try:
            generation.result()
        except Exception as exc:
            error: BaseException | None = exc
        else:
            error = None
        attributes = self._client.model_attributes(self._model)
        if error is not None:
            attributes = {**attributes, "error.type": error_type(error)}
        self._signals.duration.record(time.monotonic() - self._started, attributes)
        span = self._span
        if span is None or not span.is_recording():
            return
        span.set_attribute("oxen.generation.status", generation.status)
        record = generation.record
        if record is not None:
            if record.model_name:
                span.set_attribute("gen_ai.response.model", record.model_name)
            if isinstance(record.media_type, str):
                span.set_attribute("gen_ai.output.type", record.media_type)
            if record.cost is not None:
                span.set_attribute("oxen.generation.cost", float(record.cost))
        if error is not None:
            _set_error(span, self._signals, error, self._client.redactor, self._hide)
        will_settle = self._client.will_settle
        if will_settle is not None and will_settle(generation):
            self._client.defer_end(generation.id, span, time.time_ns())
            return
        span.end()


def _set_error(
    span: Span, signals: Signals, error: BaseException, redactor: Redactor, hide: tuple[str, ...]
) -> None:
    span.set_attribute("error.type", error_type(error))
    status = signals.trace.Status(
        signals.trace.StatusCode.ERROR, redactor.describe(error, hide=hide)
    )
    span.set_status(status)
