"""The client's side of cost: estimates from the published pricing, and the budget's moments.

`SpendControl` prices requests (the model's ``pricing``, fetched once per client with the
schema the parameter checks already fetch) and, when the client has a ``max_spend``, drives
its `Budget`:

- ``reserve`` before an enqueue is handed over to be sent (refused: ``BudgetExceededError``,
  nothing sent);
- ``confirm`` each job it creates, from the enqueue's own ``on_created`` callback, which runs
  whether or not its caller still waits, so a job is counted even when its answer arrives
  after its caller was cancelled;
- ``release`` (or keep, when a job may exist) when the enqueue fails;
- ``settle`` each job at its charged ``cost`` when it finishes: from a done callback on its
  ``Generation``, which reads the row (``GET /api/ai/generations/{id}``, one request per
  finished job, only with a budget), or from any history row the client reads meanwhile.

A job that ends without a final status (its deadline passed, the client closed) may still run,
and be billed: it stays counted at its estimate. So does a final row with no ``cost``, or with
one the client refuses (negative, ``NaN``, out of range: read as ``None``, with a warning):
the budget never moves backwards on the server's say-so. Settling runs in done callbacks and
background tasks of the client's task group: nothing in it raises.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ._budget import Budget, Reservation, SpendSummary
from ._cost import check_priced_count, estimate_cost, schema_defaults
from ._exceptions import (
    AmbiguousEnqueueError,
    APIResponseValidationError,
    ClientClosedError,
    OxenError,
)
from ._models import TERMINAL_STATUSES
from ._otel import NO_TELEMETRY, Telemetry
from ._params import check_count, typed_defaults
from ._retry import is_ambiguous

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from anyio.abc import TaskGroup

    from ._api import QueueEndpoints
    from ._generation import Generation
    from ._models import GenerationRecord
    from ._params import ParamChecker

__all__ = ["NO_HOLD", "Hold", "SpendControl"]

logger = logging.getLogger("oxen_queue")


class Hold:
    """An enqueue's reserved estimate (a no-op without a budget: `NO_HOLD`)."""

    __slots__ = ("_control", "_reservation")

    def __init__(self, control: SpendControl | None, reservation: Reservation | None) -> None:
        self._control = control
        self._reservation = reservation

    @property
    def estimate(self) -> Decimal | None:
        """One generation's reserved estimate (``None`` without a budget)."""
        return None if self._reservation is None else self._reservation.estimate

    def confirm(self, generation: Generation) -> None:
        """A job was created: count it, and settle it at its charge when it finishes."""
        if self._control is not None and self._reservation is not None:
            self._reservation.confirm(generation.id)
            generation.add_done_callback(self._control.finished)

    def release_after(self, error: BaseException, sent: bool = True) -> None:
        """An enqueue ended without a job: give back what it reserved, unless one may exist.

        ``AmbiguousEnqueueError`` (and a client closing while an enqueue was in flight) may
        hide a billed job: that estimate stays; so does that of a malformed answer that names
        jobs (``APIResponseValidationError.generation_ids``: one it names may not be
        watchable, so never confirmed). A refusal, or a request never ``sent``
        (withdrawn by its cancelled caller, or by the client closing first), gives it back.
        A caller cancelled while its request was in flight is not an ending: the request's
        own outcome decides, once known.
        """
        if self._reservation is None:
            return
        if sent and (
            isinstance(error, AmbiguousEnqueueError | ClientClosedError)
            or (isinstance(error, APIResponseValidationError) and error.generation_ids)
        ):
            self._reservation.commit()
        else:
            self._reservation.release()

    def settle_blocking(self, error: BaseException | None) -> None:
        """A blocking endpoint's call ended: its result has no row to settle by, so its
        estimate stays, unless the server certainly did nothing (a refusal)."""
        if self._reservation is None:
            return
        if isinstance(error, OxenError) and not is_ambiguous(error):
            self._reservation.release()
        else:
            self._reservation.commit()


NO_HOLD: Final = Hold(None, None)


class SpendControl:
    """Estimates and the budget of one client (and its option views).

    Args:
        params: The client's parameter checker, whose model cache holds the pricing.
        endpoints: The API.
        task_group: The client's background task group (raises once the client is closed).
        budget: The ``max_spend`` accounts; ``None`` for no budget.
        telemetry: Told of each charge the budget settles (once per job), and of a job whose
            charge it will not learn after all (`will_settle` said it would).
    """

    def __init__(
        self,
        *,
        params: ParamChecker,
        endpoints: QueueEndpoints,
        task_group: Callable[[], TaskGroup],
        budget: Budget | None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._params = params
        self._endpoints = endpoints
        self._task_group = task_group
        self.budget = budget
        self._telemetry = telemetry

    async def estimate(self, model: str, params: Mapping[str, Any], count: int = 1) -> Decimal:
        """The cost of ``count`` generations of a request (its pricing fetched once).

        Raises:
            CostUnknownError: The pricing cannot be resolved for these parameters.
            InvalidParamsError: The API does not know the model.
        """
        described = await self._params.describe(model)
        defaults = {**schema_defaults(described.parameter_schema), **typed_defaults(model)}
        return estimate_cost(model, described.pricing, params, defaults=defaults, count=count)

    async def estimate_request(
        self, model: str, params: Mapping[str, Any], *, num_generations: int, validate: bool
    ) -> Decimal:
        """What a request would cost (``AsyncClient.estimate_cost``): what is given is
        checked (``validate``), what is absent counts at its default; a price depends on no
        prompt or input image, so none is required.

        Raises:
            CostUnknownError: The pricing cannot be resolved for these parameters.
            InvalidParamsError: Bad parameters, an unknown model, or ``num_generations``
                below 1 or above 1,000,000.
        """
        check_count(num_generations)
        check_priced_count(num_generations)
        checked = await self._params.check(model, params, validate, partial=True)
        return await self.estimate(model, checked, num_generations)

    async def reserve(self, model: str, params: Mapping[str, Any], count: int) -> Hold:
        """Reserve an enqueue's estimate before it is sent (nothing to do without a budget).

        Raises:
            BudgetExceededError: It would take committed spend past the budget.
            CostUnknownError: No estimate exists, so the budget cannot be kept.
            InvalidParamsError: ``count`` is more than an estimate covers (a million).
        """
        budget = self.budget
        if budget is None:
            return NO_HOLD
        check_priced_count(count)
        unit = await self.estimate(model, params)
        # No await between the check and the reservation: concurrent enqueues cannot both
        # pass a check that only one of them fits.
        return Hold(self, budget.reserve(unit, count=count))

    def summary(self) -> SpendSummary | None:
        return None if self.budget is None else self.budget.summary()

    # -- settling -----------------------------------------------------------------------

    def will_settle(self, generation: Generation) -> bool:
        """Whether `finished` will settle this finished generation at its charge (the
        budget awaits it, and its status is final), reading its row if need be."""
        budget = self.budget
        return (
            budget is not None
            and generation.status in TERMINAL_STATUSES
            and budget.awaits(generation.id)
        )

    def finished(self, generation: Generation) -> None:
        """A confirmed job is done: settle it from its row's cost, reading the row if need be.

        A done callback: quick, and never raises (what would, is logged).
        """
        try:
            self._finished(generation)
        except Exception:  # a done callback: nothing may escape into whoever resolved it
            logger.warning("could not settle the charge of %.100r", generation.id, exc_info=True)
            self._telemetry.charge_unknown(generation.id)

    def _finished(self, generation: Generation) -> None:
        if not self.will_settle(generation):
            return  # timed out or closed: it may still run, and be billed
        record = generation.record
        if record is not None and record.cost is not None:
            self._settle(generation.id, generation.model, record.cost)
            return
        try:
            task_group = self._task_group()
        except ClientClosedError:
            self._telemetry.charge_unknown(generation.id)
            return
        task_group.start_soon(self._read_charge, generation.id)

    async def _read_charge(self, generation_id: str) -> None:
        # A background task of the client's task group: nothing may escape it. It reads under
        # the generation's span, which waits for the charge (it has by now: the done callbacks
        # ran before this task), so that an HTTP instrumentation's span of the read shows
        # whose charge it is.
        token = self._telemetry.attach_charge(generation_id)
        try:
            try:
                record = await self._endpoints.get_generation_details(generation_id)
            except Exception as exc:
                logger.debug("could not read the charge of %s: %s", generation_id, exc)
                return
            try:
                self.observe([record])
            except Exception:
                logger.warning(
                    "could not settle the charge of %.100r", generation_id, exc_info=True
                )
        finally:
            # Settled (and told) by now, or never by this read (failed, or cancelled as the
            # client closes): its span, if it waits, ends either way.
            self._telemetry.charge_unknown(generation_id)
            self._telemetry.detach(token)

    def _settle(self, generation_id: str, model: str | None, cost: Decimal) -> None:
        """Settle one job at its charge; the telemetry counts it if it was settled now."""
        assert self.budget is not None
        if self.budget.settle(generation_id, cost):
            self._telemetry.charged(generation_id, model, cost)
        else:
            self._telemetry.charge_unknown(generation_id)

    def observe(self, records: Iterable[GenerationRecord]) -> None:
        """Settle jobs from rows that show their charge (details, history pages).

        Never raises: a row's ``cost`` is an amount or ``None`` (refused values are read as
        ``None``), and `Budget.settle` leaves a job at its estimate rather than raise.
        """
        budget = self.budget
        if budget is None:
            return
        for record in records:
            if record.cost is not None and record.is_terminal:
                self._settle(record.generation_id, record.model_name, record.cost)
