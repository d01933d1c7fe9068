"""OpenTelemetry traces and metrics of every generation: the one package that knows it.

**Optional, and free when unused.** ``opentelemetry-api`` is the ``otel`` extra. Whether it is
installed is looked up once (``importlib.util.find_spec``, nothing imported); without it every
hook is a no-op of `Telemetry` and no ``opentelemetry`` module is ever imported. With it,
this module imports it only once something else in the process has (configuring an SDK does):
until then no SDK can be configured, so an installed but unused API costs a dictionary look-up
a call, not its import. Nothing is recorded until the application configures an SDK: whether
the tracer and meter providers are still the API's own (its proxy or no-op ones) is read at
most once a second, a provider once set staying set, and until then an enqueue costs a clock
read and gets the shared no-op `NO_TRACE`. No code of the user's is needed beyond
configuring OpenTelemetry as usual (``trace.set_tracer_provider``,
``metrics.set_meter_provider``), before or after the client is made.

**One span per generation** (kind ``CLIENT``, named ``generate_content {model}``, after the
GenAI semantic conventions v1.37.0 and later: ``gen_ai.operation.name``,
``gen_ai.provider.name`` ``"oxen"``, ``gen_ai.request.model``, ``gen_ai.response.id`` the
generation id, ``gen_ai.response.model``, ``gen_ai.output.type``, ``gen_ai.request.choice.count``,
``server.address``/``server.port``, ``error.type``; and ``oxen.generation.status``,
``oxen.generation.cost``). It starts when the enqueue call starts, as a child of the caller's
current context, captured there: the request is sent by a worker task of the client and the
generation is resolved by the watcher's, neither of them the caller. A request of *n*
generations starts *n* spans; each becomes its generation's when the id arrives; an enqueue
that fails ends those it has not handed over, with the error. A span ends with the final
status (``succeeded``: status unset; ``failed``, ``cancelled``, a deadline, a closed client:
``ERROR`` with the server's message or the error's), or, when the client's budget reads the
charge of the job (``max_spend``), once the charge is known, timed at the final status. The
enqueue's moments are span events: ``oxen.budget.reserved``/``oxen.budget.refused``,
``oxen.enqueue.retry``, ``oxen.enqueue.answer_lost``, ``oxen.enqueue.reconciled``,
``oxen.enqueue.resent``, ``oxen.generation.created``.

**Context.** While the request is prepared (by the caller) and sent (by a worker), the current
context is the caller's, with the generation's span current when the request makes one
generation: an HTTP instrumentation's spans (``opentelemetry-instrumentation-httpx``) of the
``POST`` then fall under the generation's span, and this module records no HTTP spans of its
own. The watcher's requests serve every pending generation at once and belong to none.

**Metrics** (instruments made once per meter; attribute sets small, never an id, a prompt or
the key): ``oxen.generations.pending`` (observable up-down counter, no attributes: the
pending generations of every client of the process), ``gen_ai.client.operation.duration``
(histogram, s: from the enqueue call to the final status; model and ``error.type``),
``oxen.enqueue.duration`` (histogram, s: from the call to the ids, or the failure),
``oxen.generation.cost`` (counter: charges the budget settles, by model),
``oxen.http.retries`` and ``oxen.http.refusals`` (counters: by method and ``url.template``,
with ``error.type`` or the 429/503 status), ``oxen.http.concurrency_limit`` (observable
gauge: the adaptive bound, summed over the process's clients).

**Redaction.** Prompts are not recorded unless
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true`` (read when a client is
made), as the conventions' instrumentations do; then ``gen_ai.input.messages`` holds them,
1,000 characters at most in all. Every text that reaches a span passes `_text.Redactor`:
the API key never does, nor (without capture) the request's prompts, and an
``InvalidParamsError``, whose message may quote the caller's values, is described by its
field alone.

The parts: `_base` (the no-op surface the SDK calls), `_spans` (what records),
`_signals` (the tracer and the instruments), `_text` (what text is recorded).
Only `_signals` imports OpenTelemetry, and only when it is first needed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._base import NO_TELEMETRY, NO_TRACE, RequestTrace, Telemetry, WillSettle
from ._signals import use_providers
from ._text import CAPTURE_ENV, PROMPT_LIMIT, Redactor, capture_enabled

__all__ = [
    "CAPTURE_ENV",
    "NO_TELEMETRY",
    "NO_TRACE",
    "PROMPT_LIMIT",
    "RequestTrace",
    "Telemetry",
    "WillSettle",
    "client_telemetry",
    "installed",
    "unparented",
    "use_providers",
]

_installed: bool | None = None


def installed() -> bool:
    """Whether ``opentelemetry`` is there to import (looked up once; nothing is imported: not
    even its namespace package, which a look-up of a submodule would import)."""
    global _installed
    if _installed is None:
        try:
            _installed = importlib.util.find_spec("opentelemetry") is not None
        except (ImportError, ValueError):  # blocked (``sys.modules[...] = None``, an import hook)
            _installed = False
    return _installed


@contextmanager
def unparented() -> Iterator[None]:
    """Within, no span is current: for starting work that serves every generation (the event
    stream), which a caller's task would otherwise hand its span (a task inherits the context
    of the one that starts it). Nothing to do if OpenTelemetry was never imported: then no
    span can be current."""
    context = sys.modules.get("opentelemetry.context")
    if context is None:
        yield
        return
    token = context.attach(context.Context())
    try:
        yield
    finally:
        context.detach(token)


def client_telemetry(*, base_url: Any, secret: str) -> Telemetry:
    """A client's telemetry: `NO_TELEMETRY` without OpenTelemetry, else one that imports
    it when it is first needed (see the module docstring).

    Args:
        base_url: The API's origin (an ``httpx.URL``): ``server.address`` and ``server.port``.
        secret: The API key, which `_text.Redactor` keeps out of every recorded text.
    """
    if not installed():
        return NO_TELEMETRY
    from ._signals import override
    from ._spans import ClientTelemetry

    return ClientTelemetry(
        host=str(base_url.host),
        port=base_url.port or {"http": 80, "https": 443}.get(base_url.scheme),
        redactor=Redactor(secret),
        capture=capture_enabled(os.environ.get(CAPTURE_ENV)),
        signals=override(),
    )
