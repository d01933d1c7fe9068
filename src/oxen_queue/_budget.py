"""A client's spending budget: the accounting alone, with no HTTP, no clock and no awaits
(so concurrent enqueues in one event loop are reserved one after the other, and never pass
the budget together)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ._exceptions import BudgetExceededError
from ._money import MAX_COUNT, MAX_ESTIMATE, MONEY, brief, is_amount

logger = logging.getLogger("oxen_queue")

_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class SpendSummary:
    """What a client with a ``max_spend`` has committed (``client.spend``).

    Attributes:
        budget: The ``max_spend``.
        committed: ``charged`` plus ``estimated``: what counts against the budget.
        charged: The charged cost of the jobs whose charge is known.
        estimated: The estimates of enqueues in flight and of jobs whose charge is not known
            yet (or never will be: a lost answer, a job still running when it timed out).
        unsettled: Jobs counted at their estimate, awaiting their charge.
    """

    budget: Decimal
    committed: Decimal
    charged: Decimal
    estimated: Decimal
    unsettled: int

    @property
    def remaining(self) -> Decimal:
        """What can still be committed (never below zero)."""
        return max(MONEY.subtract(self.budget, self.committed), _ZERO)


class Budget:
    """The committed spend of one client against its ``limit``; it decreases only when a
    reservation that made no job is released, or a job is settled below its estimate. Takes
    only amounts (`_money.is_amount`), summed exactly in `_money.MONEY`: anything else is a
    ``ValueError`` (no caller passes one), but `settle` runs in done callbacks: never raises."""

    def __init__(self, limit: Decimal) -> None:
        if not is_amount(limit):
            raise ValueError(f"a budget must be an amount from 0 to 10**12, not {brief(limit)}")
        self.limit = limit
        self._open = _ZERO  # reservations of enqueues in flight
        self._held: dict[str, Decimal] = {}  # job id -> its estimate, until charged
        self._held_total = _ZERO
        self._kept = _ZERO  # estimates that stay: an outcome nobody can settle
        self._charged = _ZERO

    @property
    def _estimated(self) -> Decimal:
        return MONEY.add(MONEY.add(self._open, self._held_total), self._kept)

    @property
    def committed(self) -> Decimal:
        """Everything that counts against the limit."""
        return MONEY.add(self._estimated, self._charged)

    def reserve(self, estimate: Decimal, *, count: int = 1) -> Reservation:
        """Reserve ``count`` generations at ``estimate`` each (at most `_money.MAX_COUNT`
        and `_money.MAX_ESTIMATE`), or raise ``BudgetExceededError`` if that would take
        committed spend past the limit."""
        if not is_amount(estimate, maximum=MAX_ESTIMATE) or not 1 <= count <= MAX_COUNT:
            raise ValueError(f"cannot reserve {count} x {brief(estimate)}")
        amount = MONEY.multiply(estimate, count)
        committed = self.committed
        if MONEY.add(committed, amount) > self.limit:
            raise BudgetExceededError(
                f"this request's estimated cost, {amount}, would take the committed spend "
                f"from {committed} past the budget of {self.limit} (max_spend); nothing was "
                "sent",
                estimate=amount,
                committed=committed,
                budget=self.limit,
            )
        self._open = MONEY.add(self._open, amount)
        return Reservation(self, estimate, count)

    def settle(self, generation_id: str, cost: Decimal) -> bool:
        """Count a job at its charged ``cost`` instead of its estimate; whether it was. A job
        settled already, not this budget's, or whose ``cost`` is not an amount (with a logged
        warning) stays as it was."""
        estimate = self._held.get(generation_id)
        if estimate is None:
            return False
        if not is_amount(cost):
            logger.warning(
                "generation %.100r: ignored a charge that is not an amount (%s); it stays counted "
                "at its estimate, %s",
                generation_id,
                brief(cost),
                estimate,
            )
            return False
        del self._held[generation_id]
        self._held_total = MONEY.subtract(self._held_total, estimate)
        self._charged = MONEY.add(self._charged, cost)
        return True

    def awaits(self, generation_id: str) -> bool:
        """Whether a job is counted at its estimate, awaiting its charge."""
        return generation_id in self._held

    def summary(self) -> SpendSummary:
        """A snapshot of the accounts."""
        return SpendSummary(
            budget=self.limit,
            committed=self.committed,
            charged=self._charged,
            estimated=self._estimated,
            unsettled=len(self._held),
        )


@dataclass(slots=True, eq=False)
class Reservation:
    """The estimate of one enqueue, reserved before it was sent: each job the enqueue creates
    takes one generation's estimate from it (`confirm`); what is left is given back
    (`release`) or kept (`commit`)."""

    _budget: Budget
    estimate: Decimal
    unconfirmed: int
    """Generations reserved and not yet confirmed (0 once released or committed)."""

    def confirm(self, generation_id: str) -> None:
        """A job was created: count it at one generation's estimate until it is settled; also
        after `release` (an answer that arrived after its caller gave up), even past the limit."""
        budget = self._budget
        if generation_id in budget._held:
            return
        if self.unconfirmed:
            self.unconfirmed -= 1
            budget._open = MONEY.subtract(budget._open, self.estimate)
        budget._held[generation_id] = self.estimate
        budget._held_total = MONEY.add(budget._held_total, self.estimate)

    def release(self) -> Decimal:
        """Give back (and return) what no job was created for: the request was refused, or
        withdrawn."""
        if not self.unconfirmed:
            return _ZERO
        amount = MONEY.multiply(self.estimate, self.unconfirmed)
        self.unconfirmed = 0
        self._budget._open = MONEY.subtract(self._budget._open, amount)
        return amount

    def commit(self) -> Decimal:
        """Keep (and return) what is left at its estimate for good: work that may have been
        billed but has no row to settle it by (a lost answer, a blocking endpoint's result)."""
        amount = self.release()
        self._budget._kept = MONEY.add(self._budget._kept, amount)
        return amount
