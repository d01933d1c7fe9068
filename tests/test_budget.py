"""The budget's accounting (``_budget``), alone: no client, no HTTP, no clock."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue import BudgetExceededError
from oxen_queue._budget import Budget, Reservation, SpendSummary
from oxen_queue._money import charge, is_amount

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


def test_bad_inputs_are_refused_before_anything_is_reserved() -> None:
    for limit in (D(-1), D("NaN"), D("Infinity"), D("1e13"), D("1e-19")):
        with pytest.raises(ValueError, match="amount from 0 to 10"):
            Budget(limit)
    budget = Budget(D(1))
    for estimate in (D(-1), D("NaN"), D("-Infinity"), D("1e31")):
        with pytest.raises(ValueError, match="reserve"):
            budget.reserve(estimate)
    with pytest.raises(ValueError, match="reserve"):
        budget.reserve(D(1), count=0)
    with pytest.raises(ValueError, match="reserve"):
        budget.reserve(D(0), count=10**6 + 1)
    assert budget.committed == 0


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


raw_costs = st.one_of(
    st.decimals(min_value=0, max_value=4, places=2),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(["-5.00", "1e1000000", "1e-1000000", "NaN", "-0", "0.10", "abc", None]),
    st.floats(),
)
moves = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), amounts, st.integers(1, 4)),
        st.tuples(st.just("confirm"), st.integers(0, 20), st.none()),
        st.tuples(st.just("release"), st.integers(0, 20), st.none()),
        st.tuples(st.just("commit"), st.integers(0, 20), st.none()),
        st.tuples(st.just("settle"), st.integers(0, 40), raw_costs),  # through the owner
        st.tuples(st.just("settle_raw"), st.integers(0, 40), st.decimals()),  # unchecked
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(limit=amounts, ops=moves)
def test_the_budget_never_moves_backwards_whatever_the_server_charges(
    limit: Decimal, ops: list[tuple[str, object, object]]
) -> None:
    """Committed spend is never negative, charged spend never decreases, reserve() never
    passes the limit, and committed spend falls only by a release of what no job took, or a
    settle at a valid charge below the job's estimate (by exactly the difference). Nothing
    raises but BudgetExceededError from reserve()."""
    budget = Budget(limit)
    reservations: list[Reservation] = []
    estimates: dict[str, Decimal] = {}
    before = budget.summary()
    for op, a, b in ops:
        fell_by_rule = D(0)
        if op == "reserve":
            assert isinstance(a, Decimal) and isinstance(b, int)
            try:
                reservations.append(budget.reserve(a, count=b))
            except BudgetExceededError:
                assert budget.summary() == before
                continue
            assert budget.committed <= limit
        elif op in ("confirm", "release", "commit") and reservations:
            assert isinstance(a, int)
            reservation = reservations[a % len(reservations)]
            if op == "confirm":
                if reservation.unconfirmed:
                    generation_id = f"g{len(estimates)}"
                    reservation.confirm(generation_id)
                    estimates[generation_id] = reservation.estimate
            elif op == "release":
                fell_by_rule = reservation.release()
            else:
                reservation.commit()
        elif op.startswith("settle") and estimates:
            assert isinstance(a, int)
            generation_id = sorted(estimates)[a % len(estimates)]
            cost = charge(b) if op == "settle" else b
            held = budget.awaits(generation_id)
            if cost is not None:
                assert isinstance(cost, Decimal)
                settled = budget.settle(generation_id, cost)
                assert settled == (held and is_amount(cost))
                if settled:
                    fell_by_rule = estimates[generation_id] - cost
        after = budget.summary()
        assert after.committed >= 0 and after.charged >= 0 and after.estimated >= 0
        assert after.charged >= before.charged
        assert after.committed == after.charged + after.estimated
        assert after.committed >= before.committed - max(fell_by_rule, D(0))
        if after.committed < before.committed:
            assert after.committed == before.committed - fell_by_rule
        before = after
