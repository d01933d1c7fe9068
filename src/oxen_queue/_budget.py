"""A client's spending budget: the accounting alone, with no HTTP, no clock and no awaits.

Committed spend is what this client's work may cost:

- an enqueue in flight, at its estimate (`Budget.reserve`, before it is sent);
- each job it created, at its estimate (`Reservation.confirm`), until
- the job's charged ``cost`` is known (`Budget.settle`): from then on, that.

A reservation whose request was refused is given back (`Reservation.release`); one
whose request may or may not have made a job stays committed at its estimate
(`Reservation.commit`), since it may have been billed. A job cancelled while queued, or
failed for want of credits, is charged ``0`` and so gives back its whole estimate; one that
ran keeps its charge.

`Budget.reserve` checks and reserves in one step, with no await in between: in one
event loop, concurrent enqueues are served one after the other here, so together they never
pass the budget. The client's task is to call these at the right moments.

The budget never moves backwards: committed spend decreases only when a reservation whose
request made no job is released, or when a job is settled at a charge below its estimate.
Amounts are checked on the way in (`_money.is_amount`) and summed in
`_money.MONEY`, exactly, so committed spend is never below zero and never drifts. A
charge that is not an amount (negative, ``NaN``, above 10**12...) settles nothing: the job
stays counted at its estimate, with a logged warning. `Budget.settle` runs in done
callbacks, so it never raises; the methods a caller uses before sending raise ``ValueError``
for amounts no caller in the SDK passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ._exceptions import BudgetExceededError
from ._money import MAX_COUNT, MAX_ESTIMATE, MONEY, brief, is_amount

__all__ = ["Budget", "Reservation", "SpendSummary"]

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
    """The committed spend of one client against its limit.

    Args:
        limit: The most this client may commit: an amount (`_money.amount`).

    Raises:
        ValueError: A limit that is not an amount (negative, above 10**12, ...).
    """

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
    def committed(self) -> Decimal:
        """Everything that counts against the limit."""
        add = MONEY.add
        return add(add(add(self._open, self._held_total), self._kept), self._charged)

    def reserve(self, estimate: Decimal, *, count: int = 1) -> Reservation:
        """Reserve ``count`` generations at ``estimate`` each, or refuse.

        Raises:
            BudgetExceededError: The reservation would take committed spend past the limit.
            ValueError: An estimate that is not an amount up to `_money.MAX_ESTIMATE`
                (negative, ...), or a count outside 1 to `_money.MAX_COUNT`.
        """
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
        """Count a job at its charged ``cost`` instead of its estimate. Never raises.

        Returns:
            Whether the job was settled. A job settled already, or not this budget's, is left
            alone; so is one whose ``cost`` is not an amount (negative, above 10**12, not a
            finite Decimal), with a logged warning: it stays counted at its estimate.
        """
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
        add = MONEY.add
        return SpendSummary(
            budget=self.limit,
            committed=self.committed,
            charged=self._charged,
            estimated=add(add(self._open, self._held_total), self._kept),
            unsettled=len(self._held),
        )


class Reservation:
    """The estimate of one enqueue, reserved before it was sent.

    Each job the enqueue creates takes one generation's estimate from it (`confirm`);
    what is left is given back (`release`) or kept (`commit`).
    """

    __slots__ = ("_budget", "_left", "_open", "estimate")

    def __init__(self, budget: Budget, estimate: Decimal, count: int) -> None:
        self._budget = budget
        self.estimate = estimate
        self._left = count
        self._open = True

    @property
    def unconfirmed(self) -> int:
        """Generations reserved and not yet confirmed (0 once released or committed)."""
        return self._left if self._open else 0

    def confirm(self, generation_id: str) -> None:
        """A job was created: count it at one generation's estimate until it is settled.

        Also after `release`: a job whose answer arrived after its caller gave up
        exists, and counts, even if that takes committed spend past the limit.
        """
        budget = self._budget
        if generation_id in budget._held:
            return
        if self._open and self._left:
            self._left -= 1
            budget._open = MONEY.subtract(budget._open, self.estimate)
        budget._held[generation_id] = self.estimate
        budget._held_total = MONEY.add(budget._held_total, self.estimate)

    def release(self) -> Decimal:
        """Give back what no job was created for (the request was refused, or withdrawn).

        Returns:
            The amount given back.
        """
        amount = self._close()
        self._budget._open = MONEY.subtract(self._budget._open, amount)
        return amount

    def commit(self) -> Decimal:
        """Keep what is left at its estimate for good: work that may have been billed but
        has no row to settle it by (a lost answer, a blocking endpoint's result).

        Returns:
            The amount kept.
        """
        amount = self._close()
        self._budget._open = MONEY.subtract(self._budget._open, amount)
        self._budget._kept = MONEY.add(self._budget._kept, amount)
        return amount

    def _close(self) -> Decimal:
        if not self._open:
            return _ZERO
        self._open = False
        amount = MONEY.multiply(self.estimate, self._left)
        self._left = 0
        return amount
