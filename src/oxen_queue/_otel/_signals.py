"""The tracer and the instruments, made once per pair of providers, and whether an SDK records.

Made when OpenTelemetry is first needed (`global_signals`), which imports it; tests hand
providers of their own to the clients they make (`use_providers`), since a process's
global providers can be set only once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from .._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

    from ._spans import ClientTelemetry

__all__ = ["Signals", "global_signals", "override", "use_providers"]

logger = logging.getLogger("oxen_queue")

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.37.0"
_RECHECK: Final = 1.0  # seconds between looks at whether an SDK was configured meanwhile
# The conventions' boundaries for gen_ai.client.operation.duration (0.01 s doubling to 81.92 s),
# and three doublings more: a video takes minutes.
_DURATION_BUCKETS: Final = tuple(round(0.01 * 2**i, 2) for i in range(17))
_ENQUEUE_BUCKETS: Final = tuple(round(0.005 * 2**i, 3) for i in range(15))


class Signals:
    """The tracer and the instruments of one pair of providers (``None``: the global ones), and
    whether an SDK records behind them. Imports OpenTelemetry when made."""

    def __init__(
        self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
    ) -> None:
        from opentelemetry import context, metrics, trace

        self.context = context
        self.trace = trace
        self._metrics = metrics
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracer = trace.get_tracer(
            "oxen_queue", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter("oxen_queue", __version__, meter_provider, schema_url=SCHEMA_URL)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Time from the enqueue call to the generation's final status.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.enqueue = meter.create_histogram(
            "oxen.enqueue.duration",
            unit="s",
            description="Time from the enqueue call to its answer (the ids) or its failure.",
            explicit_bucket_boundaries_advisory=_ENQUEUE_BUCKETS,
        )
        self.cost = meter.create_counter(
            "oxen.generation.cost",
            unit="{currency}",
            description="Charged cost of finished generations, in the API's currency, as the "
            "client's budget (max_spend) settles them.",
        )
        self.retries = meter.create_counter(
            "oxen.http.retries",
            unit="{request}",
            description="API request attempts that failed and were tried again.",
        )
        self.refusals = meter.create_counter(
            "oxen.http.refusals",
            unit="{response}",
            description="API answers refusing a request as too much (429, 503).",
        )
        self._lock = threading.Lock()  # observable callbacks run in the SDK's reader thread
        self._clients: weakref.WeakSet[ClientTelemetry] = weakref.WeakSet()
        meter.create_observable_up_down_counter(
            "oxen.generations.pending",
            callbacks=[self._observe_pending],
            unit="{generation}",
            description="Generations the process's clients watch until their final status.",
        )
        meter.create_observable_gauge(
            "oxen.http.concurrency_limit",
            callbacks=[self._observe_limit],
            unit="{request}",
            description="API requests the clients allow in flight now (the adaptive bound).",
        )
        self._tracing = False
        self._metering = False
        self._next_look = -math.inf

    def recording(self) -> tuple[bool, bool]:
        """Whether traces and metrics have an SDK behind them (looked at once a second)."""
        if self._tracing and self._metering:
            return True, True
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + _RECHECK
            tracer_provider = self._tracer_provider or self.trace.get_tracer_provider()
            meter_provider = self._meter_provider or self._metrics.get_meter_provider()
            # The API's own providers (a proxy until one is set, or a no-op one) live in its
            # modules; an SDK's, or a vendor's, elsewhere.
            self._tracing = not type(tracer_provider).__module__.startswith("opentelemetry.trace")
            self._metering = not type(meter_provider).__module__.startswith("opentelemetry.metrics")
        return self._tracing, self._metering

    def register(self, client: ClientTelemetry) -> None:
        with self._lock:
            self._clients.add(client)

    def unregister(self, client: ClientTelemetry) -> None:
        with self._lock:
            self._clients.discard(client)

    def _observed(self) -> list[ClientTelemetry]:
        with self._lock:
            return list(self._clients)

    def _observe_pending(self, options: CallbackOptions) -> Iterator[Observation]:
        total = sum(len(c.pending) for c in self._observed() if c.pending is not None)
        yield self._metrics.Observation(total)

    def _observe_limit(self, options: CallbackOptions) -> Iterator[Observation]:
        bounds = [c.admission.bound for c in self._observed() if c.admission is not None]
        if bounds:
            yield self._metrics.Observation(sum(bounds))


_global_signals: Signals | bool = False  # False: not made yet; True: cannot be made
_override: Signals | None = None


def override() -> Signals | None:
    """The providers of `use_providers`, while it is in force (``None``: the global ones)."""
    return _override


def global_signals() -> Signals | None:
    """The signals of the global providers, made once (``None``: OpenTelemetry, though found,
    cannot be imported, which is logged once)."""
    global _global_signals
    if _global_signals is False:
        try:
            _global_signals = Signals(None, None)
        except ImportError as exc:
            logger.warning(
                "oxen_queue: OpenTelemetry could not be imported (%s): no telemetry", exc
            )
            _global_signals = True
    return None if isinstance(_global_signals, bool) else _global_signals


@contextmanager
def use_providers(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    """Clients made inside record to these providers rather than the global ones (tests: a
    process's global providers can be set only once)."""
    global _override
    previous, _override = _override, Signals(tracer_provider, meter_provider)
    try:
        yield
    finally:
        _override = previous
