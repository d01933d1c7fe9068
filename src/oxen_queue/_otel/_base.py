"""The instrumentation's surface, as the rest of the SDK calls it: each class a no-op.

Without OpenTelemetry every client has `NO_TELEMETRY` and every enqueue `NO_TRACE`;
with it, `_spans` overrides what records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from decimal import Decimal

    from .._admission import AdmissionControl
    from .._generation import Generation

__all__ = ["NO_TELEMETRY", "NO_TRACE", "RequestTrace", "Telemetry", "WillSettle"]

WillSettle = Callable[["Generation"], bool]
"""Whether the budget will read a finished generation's charge (``SpendControl.will_settle``)."""


class RequestTrace:
    """One enqueue's telemetry, as the SDK sees it; this base does nothing (`NO_TRACE`).

    Called by the caller's task (``_jobs``) and the enqueue's worker (``_enqueue``): attach the
    request's context while working on it, tell its moments, hand over each generation as its
    id arrives (`created`, before anything else registers on it), and end the rest with
    the error if it fails (`failed`, idempotent).
    """

    __slots__ = ()

    def attach(self) -> object:
        """Make the request's context current in this task; a token for `detach`."""
        return None

    def detach(self, token: object) -> None:
        """Undo `attach` (same task)."""

    def budget_reserved(self, estimate: Decimal | None) -> None:
        """The budget let the request go, reserving ``estimate`` per generation (``None``: no
        budget)."""

    def budget_refused(self, error: BaseException) -> None:
        """The budget (or its estimate) refused the request."""

    def retried(self, error: BaseException | None, delay: float) -> None:
        """An attempt was refused (429, 503, never connected); the next in ``delay`` s."""

    def answer_lost(self, error: BaseException) -> None:
        """The answer was lost after the request left: it is reconciled, never resent blindly."""

    def reconciled(self, adopted: int) -> None:
        """A reconciliation adopted ``adopted`` jobs as this request's."""

    def resent(self) -> None:
        """A reconciliation showed no job was made: the request is sent again."""

    def created(self, generation: Generation) -> None:
        """A generation of this request exists (its id arrived)."""

    def failed(self, error: BaseException) -> None:
        """The request ended with ``error``: what it has not handed over ends with it."""


NO_TRACE: Final = RequestTrace()


class Telemetry:
    """A client's telemetry; this base does nothing (`NO_TELEMETRY`: OpenTelemetry absent)."""

    __slots__ = ()

    def request(self, model: object, params: Mapping[str, Any], count: int) -> RequestTrace:
        """An enqueue call starts, in the caller's task (its context is the parent)."""
        return NO_TRACE

    def watch(
        self,
        *,
        pending: Mapping[str, object],
        admission: AdmissionControl,
        will_settle: WillSettle,
    ) -> None:
        """What the observable instruments read (the pending generations, the bound), and
        whether the budget will read a finished generation's charge."""

    def retried(self, method: str, path: str, error: BaseException | None) -> None:
        """An API request attempt failed and is tried again."""

    def refused(self, method: str, path: str, status: int) -> None:
        """The server answered 429 or 503."""

    def charged(self, generation_id: str, model: str | None, cost: Decimal) -> None:
        """The budget settled a job at its charge (each job once)."""

    def charge_unknown(self, generation_id: str) -> None:
        """The budget will not learn this job's charge after all."""

    def attach_charge(self, generation_id: str) -> object:
        """Make the span of a finished generation whose charge is being read current in this
        task, the one reading it (a token for `detach`), so that the read's HTTP span
        falls under it."""
        return None

    def detach(self, token: object) -> None:
        """Undo `attach_charge` (same task)."""

    def close(self) -> None:
        """The client closed: end what waits, stop being observed."""


NO_TELEMETRY: Final = Telemetry()
