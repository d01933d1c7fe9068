"""The client's side of cost: estimates from the published pricing, and the budget's moments.

A job is confirmed from its enqueue's own ``on_created`` callback, so it counts even when its
answer arrives after its caller was cancelled. A job that ends without a final status may
still be billed, so it stays at its estimate; so does a final row without a usable ``cost``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

logger = logging.getLogger("oxen_queue")


@dataclass(frozen=True, slots=True, eq=False)
class Hold:
    """An enqueue's reserved estimate (a no-op without a budget: `NO_HOLD`)."""

    _control: SpendControl | None
    _reservation: Reservation | None

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
        """An enqueue ended without a job: give back what it reserved, unless a billed job may
        exist (``AmbiguousEnqueueError``, the client closing mid-flight, or a malformed answer
        naming jobs, one of which may not be watchable, so never confirmed) and it was ``sent``."""
        lost = isinstance(error, AmbiguousEnqueueError | ClientClosedError) or (
            isinstance(error, APIResponseValidationError) and bool(error.generation_ids)
        )
        self._end(keep=sent and lost)

    def settle_blocking(self, error: BaseException | None) -> None:
        """A blocking endpoint's call ended: its result has no row to settle by, so its
        estimate stays, unless the server certainly did nothing (a refusal)."""
        self._end(keep=not isinstance(error, OxenError) or is_ambiguous(error))

    def _end(self, *, keep: bool) -> None:
        if self._reservation is None:
            return
        if keep:
            self._reservation.commit()
        else:
            self._reservation.release()


NO_HOLD: Final = Hold(None, None)


@dataclass(eq=False, kw_only=True)
class SpendControl:
    """Estimates and the budget of one client (and its option views)."""

    params: ParamChecker  # whose model cache holds the pricing
    endpoints: QueueEndpoints
    task_group: Callable[[], TaskGroup]  # the client's; raises once the client is closed
    budget: Budget | None  # the max_spend accounts; None for no budget
    telemetry: Telemetry = NO_TELEMETRY  # told of each charge settled, or never to be learned

    async def estimate(self, model: str, params: Mapping[str, Any], count: int = 1) -> Decimal:
        """The cost of ``count`` generations of a request, absent parameters at their default."""
        described = await self.params.describe(model)
        defaults = {**schema_defaults(described.parameter_schema), **typed_defaults(model)}
        return estimate_cost(model, described.pricing, params, defaults=defaults, count=count)

    async def estimate_request(
        self, model: str, params: Mapping[str, Any], *, num_generations: int, validate: bool
    ) -> Decimal:
        """What a request would cost (``AsyncClient.estimate_cost``): what is given is checked
        (``validate``); a price depends on no prompt or input image, so none is required."""
        check_count(num_generations)
        check_priced_count(num_generations)
        checked = await self.params.check(model, params, validate, partial=True)
        return await self.estimate(model, checked, num_generations)

    async def reserve(self, model: str, params: Mapping[str, Any], count: int) -> Hold:
        """Reserve an enqueue's estimate before it is sent (nothing to do without a budget):
        ``BudgetExceededError`` past the budget, ``CostUnknownError`` when no estimate exists."""
        if self.budget is None:
            return NO_HOLD
        check_priced_count(count)
        unit = await self.estimate(model, params)
        # No await between the check and the reservation: concurrent enqueues cannot both
        # pass a check that only one of them fits.
        return Hold(self, self.budget.reserve(unit, count=count))

    def summary(self) -> SpendSummary | None:
        return None if self.budget is None else self.budget.summary()

    def will_settle(self, generation: Generation) -> bool:
        """Whether `finished` will settle this finished generation at its charge (the
        budget awaits it, and its status is final), reading its row if need be."""
        return (
            self.budget is not None
            and generation.status in TERMINAL_STATUSES
            and self.budget.awaits(generation.id)
        )

    def finished(self, generation: Generation) -> None:
        """A confirmed job is done: settle it from its row's cost, reading the row if need be.
        A done callback: never raises (what would, is logged)."""
        try:
            if not self.will_settle(generation):
                return  # timed out or closed: it may still run, and be billed
            record = generation.record
            if record is not None and record.cost is not None:
                self._settle(generation.id, generation.model, record.cost)
            else:
                self.task_group().start_soon(self._read_charge, generation.id)
        except ClientClosedError:
            self.telemetry.charge_unknown(generation.id)
        except Exception:  # nothing may escape into whoever resolved the generation
            logger.warning("could not settle the charge of %.100r", generation.id, exc_info=True)
            self.telemetry.charge_unknown(generation.id)

    async def _read_charge(self, generation_id: str) -> None:
        # A background task: nothing may escape it. It reads under the generation's span, so that
        # an HTTP instrumentation's span of the read shows whose charge it is.
        token = self.telemetry.attach_charge(generation_id)
        try:
            try:
                record = await self.endpoints.get_generation_details(generation_id)
            except Exception as exc:
                logger.debug("could not read the charge of %s: %s", generation_id, exc)
                return
            self.observe([record])
        except Exception:
            logger.warning("could not settle the charge of %.100r", generation_id, exc_info=True)
        finally:
            # Settled (and told) by now, or never by this read: its span ends either way.
            self.telemetry.charge_unknown(generation_id)
            self.telemetry.detach(token)

    def _settle(self, generation_id: str, model: str | None, cost: Decimal) -> None:
        """Settle one job at its charge; the telemetry counts it if it was settled now."""
        assert self.budget is not None
        if self.budget.settle(generation_id, cost):
            self.telemetry.charged(generation_id, model, cost)
        else:
            self.telemetry.charge_unknown(generation_id)

    def observe(self, records: Iterable[GenerationRecord]) -> None:
        """Settle jobs from rows that show their charge (details, history pages). Never raises:
        a row's ``cost`` is an amount or ``None``, and `Budget.settle` never raises."""
        if self.budget is not None:
            for record in records:
                if record.cost is not None and record.is_terminal:
                    self._settle(record.generation_id, record.model_name, record.cost)
