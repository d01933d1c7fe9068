"""The budget's accounting (``_budget``), alone: no client, no HTTP, no clock."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oxen_queue import BudgetExceededError
from oxen_queue._budget import Budget, SpendSummary

D = Decimal


def test_a_reservation_that_fits_is_made_and_one_that_does_not_is_refused() -> None:
    budget = Budget(D("1.00"))
    budget.reserve(D("0.28"), count=3)
    assert budget.committed == D("0.84")
    with pytest.raises(BudgetExceededError) as refused:
        budget.reserve(D("0.28"))
    error = refused.value
    assert (error.estimate, error.committed, error.budget) == (D("0.28"), D("0.84"), D("1.00"))
    assert "0.28" in str(error) and "0.84" in str(error) and "nothing was sent" in str(error)
    assert budget.committed == D("0.84")  # the refusal reserved nothing


def test_exactly_the_budget_fits() -> None:
    budget = Budget(D("0.56"))
    budget.reserve(D("0.28"), count=2)
    assert budget.summary().remaining == 0
    budget.reserve(D(0))  # a free request still fits


def test_confirmed_jobs_count_at_their_estimate_until_settled_at_their_charge() -> None:
    budget = Budget(D(10))
    reservation = budget.reserve(D("0.35"), count=2)
    reservation.confirm("a")
    reservation.confirm("b")
    assert reservation.unconfirmed == 0
    assert budget.summary() == SpendSummary(
        budget=D(10), committed=D("0.70"), charged=D(0), estimated=D("0.70"), unsettled=2
    )
    assert budget.settle("a", D("0.35"))
    assert budget.settle("b", D(0))  # cancelled while queued: charged nothing
    assert budget.summary() == SpendSummary(
        budget=D(10), committed=D("0.35"), charged=D("0.35"), estimated=D(0), unsettled=0
    )
    assert not budget.settle("a", D(5))  # settled once only
    assert not budget.settle("unknown", D(5))  # not this budget's
    assert budget.committed == D("0.35")


def test_release_gives_back_only_what_was_not_confirmed() -> None:
    budget = Budget(D(1))
    reservation = budget.reserve(D("0.25"), count=4)
    reservation.confirm("a")
    assert reservation.release() == D("0.75")
    assert budget.committed == D("0.25")
    assert reservation.release() == 0  # once
    assert budget.awaits("a")


def test_a_job_confirmed_after_its_release_still_counts_even_past_the_budget() -> None:
    """The answer of an enqueue whose caller gave up lands late: its job exists and counts."""
    budget = Budget(D("0.5"))
    late = budget.reserve(D("0.28"))
    late.release()
    budget.reserve(D("0.28"))  # the space given back was taken meanwhile
    late.confirm("late")
    assert budget.committed == D("0.56")
    with pytest.raises(BudgetExceededError):
        budget.reserve(D(0) + D("0.01"))


def test_commit_keeps_an_estimate_for_good() -> None:
    """A lost answer, a blocking endpoint's result: no row will settle it."""
    budget = Budget(D(1))
    reservation = budget.reserve(D("0.3"), count=2)
    reservation.confirm("a")
    assert reservation.commit() == D("0.3")
    budget.settle("a", D("0.3"))
    assert budget.summary().estimated == D("0.3")
    assert budget.committed == D("0.6")
    assert reservation.release() == 0  # committed already: nothing to give back


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="negative"):
        Budget(D(-1))
    with pytest.raises(ValueError, match="reserve"):
        Budget(D(1)).reserve(D(-1))
    with pytest.raises(ValueError, match="reserve"):
        Budget(D(1)).reserve(D(1), count=0)


def test_confirming_the_same_job_twice_counts_it_once() -> None:
    budget = Budget(D(1))
    reservation = budget.reserve(D("0.2"), count=2)
    reservation.confirm("a")
    reservation.confirm("a")
    assert budget.committed == D("0.4")  # one confirmed, one still reserved
    assert reservation.unconfirmed == 1


amounts = st.decimals(min_value=0, max_value=3, places=2)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), amounts, st.integers(1, 4)),
        st.tuples(st.just("confirm"), st.integers(0, 20), st.integers(0, 3)),
        st.tuples(st.just("release"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("settle"), st.integers(0, 40), st.just(0)),
    ),
    max_size=60,
)


@given(limit=amounts, ops=operations)
def test_reservations_alone_never_pass_the_limit(
    limit: Decimal, ops: list[tuple[str, object, int]]
) -> None:
    """Whatever the order of reserve, confirm, release and settle (at charges no higher than
    the estimates, all before any late confirm), committed spend stays within the limit and
    is always the sum of its parts."""
    budget = Budget(limit)
    reservations = []
    estimates: dict[str, Decimal] = {}
    for op, a, b in ops:
        if op == "reserve":
            assert isinstance(a, Decimal)
            try:
                reservations.append(budget.reserve(a, count=b))
            except BudgetExceededError as exc:
                assert exc.committed + exc.estimate > limit
        elif op == "confirm" and reservations:
            reservation = reservations[int(str(a)) % len(reservations)]
            if reservation.unconfirmed:
                generation_id = f"g{len(estimates)}"
                reservation.confirm(generation_id)
                estimates[generation_id] = reservation.estimate
        elif op == "release" and reservations:
            reservations[int(str(a)) % len(reservations)].release()
        elif op == "settle" and estimates:
            generation_id = sorted(estimates)[int(str(a)) % len(estimates)]
            budget.settle(generation_id, estimates[generation_id] / 2)
        summary = budget.summary()
        assert summary.committed <= limit
        assert summary.committed == summary.charged + summary.estimated
        assert summary.unsettled == sum(1 for g in estimates if budget.awaits(g))
