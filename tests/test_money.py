"""The one owner of amounts (``_money``): what it accepts and refuses, the context sums are
made in, and what a refused price or charge becomes where it is read."""

from __future__ import annotations

import decimal
import logging
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue import (
    CostUnknownError,
    GenerationPage,
    GenerationRecord,
    InvalidParamsError,
    _money,
)
from oxen_queue._budget import Budget
from oxen_queue._cli._cost import money
from oxen_queue._cost import estimate_cost
from oxen_queue._models import Model, ModelPricing
from oxen_queue._money import (
    MAX_AMOUNT,
    MAX_COUNT,
    MAX_ESTIMATE,
    MAX_PLACES,
    MONEY,
    AmountError,
    amount,
    charge,
    is_amount,
    round_up,
    total,
)

D = Decimal
ROW = {"generation_id": "g-1", "status": "succeeded"}


def within_bounds(value: Decimal) -> bool:
    """What the owner promises of every amount it returns."""
    exponent = value.as_tuple().exponent
    return (
        value.is_finite()
        and not value.is_signed()
        and 0 <= value <= MAX_AMOUNT
        and isinstance(exponent, int)
        and exponent >= -MAX_PLACES
    )


# -- the owner, by example -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.28", D("0.28")),
        (" 0.28\n", D("0.28")),
        ("5", D(5)),
        ("+1", D(1)),
        ("2.8e-1", D("0.28")),
        ("1.50", D("1.50")),  # the server's spelling kept: it prints as 1.50
        (0.07, D("0.07")),  # a JSON number by its shortest spelling, not the binary fraction
        (0.1 + 0.2, D("0.30000000000000004")),
        (7, D(7)),
        (10**12, MAX_AMOUNT),
        ("1000000000000.000000000000000000", MAX_AMOUNT),
        ("0.000000000000000001", D("1e-18")),
        ("0.28000000000000000000000", D("0.28")),  # trailing zeros are not places
        (D("0.35"), D("0.35")),
    ],
)
def test_amounts_are_read_exactly(value: object, expected: Decimal) -> None:
    result = amount(value)
    assert result == expected
    assert within_bounds(result)


@pytest.mark.parametrize("zero", ["0", "-0", "-0.00", "0e1000000", "0e-1000000", -0.0, 0, D("-0")])
def test_every_zero_is_a_plain_zero_never_negative_nor_a_huge_exponent(zero: object) -> None:
    result = amount(zero)
    assert result == 0
    assert not result.is_signed()
    assert len(money(result)) <= 6


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-5.00", "negative"),
        (-1, "negative"),
        (D("-0.01"), "negative"),
        ("1e1000000", "above 10**12"),
        ("1e999999999999999999", "above 10**12"),
        ("1e99999999999999999999999", "not a decimal number"),  # past what decimal holds
        pytest.param(10**5000, "above 10**12", id="10**5000"),  # described, not made text
        (1e308, "above 10**12"),
        ("1000000000000.01", "above 10**12"),
        ("1e-1000000", "more than 18 decimal places"),
        ("0.0000000000000000001", "more than 18 decimal places"),
        ("0.1234567890123456789", "more than 18 decimal places"),
        ("NaN", "not a decimal number"),
        ("sNaN", "not a decimal number"),
        ("Infinity", "not a decimal number"),
        ("-inf", "not a decimal number"),
        (float("nan"), "not a finite amount"),
        (float("inf"), "not a finite amount"),
        (D("NaN"), "not a finite amount"),
        (D("-Infinity"), "not a finite amount"),
        ("", "not a decimal number"),
        ("abc", "not a decimal number"),
        ("1_000", "not a decimal number"),
        ("0x10", "not a decimal number"),
        ("\u0663", "not a decimal number"),  # ARABIC-INDIC DIGIT THREE: Decimal() takes it
        ("1" * 101, "not a decimal number"),
        (True, "not an amount"),
        (None, "not an amount"),
        ([], "not an amount"),
        ({"amount": 1}, "not an amount"),
    ],
)
def test_anything_else_is_refused_saying_why(value: object, why: str) -> None:
    with pytest.raises(AmountError, match=why.replace("*", r"\*")) as refused:
        amount(value)
    assert isinstance(refused.value, ValueError)
    assert len(str(refused.value)) < 120  # a bounded message, whatever the value


@pytest.mark.parametrize("value", [10**5000, -(10**5000)], ids=["huge", "huge negative"])
def test_a_huge_int_is_refused_before_it_is_converted(
    value: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decimal() of a million-digit int takes seconds: either sign is refused as an int.
    def no_conversion(value: object) -> Decimal:
        raise AssertionError("converted")

    monkeypatch.setattr(_money, "Decimal", no_conversion)
    with pytest.raises(AmountError):
        amount(value)


# -- the owner, by property ------------------------------------------------------------------

json_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**50), max_value=10**50),
    st.floats(),  # NaN and the infinities included
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=0, max_value=10**12, places=18),
    st.builds(
        lambda mantissa, exponent: f"{mantissa}e{exponent}",
        st.integers(min_value=-(10**6), max_value=10**6),
        st.integers(min_value=-(10**7), max_value=10**7),
    ),
)
hostile_values = st.one_of(
    json_numbers,
    json_numbers.map(str),
    st.text(max_size=30),
    st.text(alphabet="0123456789+-.eE_ \t\n", max_size=30),
    st.sampled_from(["-0", "1e1000000", "1e-1000000", "NaN", "-sNaN", "Infinity", "0e99999"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=500)
@given(hostile_values)
def test_any_value_is_an_amount_within_bounds_or_refused_as_such(value: object) -> None:
    try:
        result = amount(value)
    except AmountError:
        return
    assert isinstance(result, Decimal)
    assert within_bounds(result)
    assert is_amount(result)
    assert money(result) == format(result, "f")  # plain, and no longer than the bounds allow
    assert len(money(result)) <= 13 + 1 + MAX_PLACES + 13


@settings(max_examples=300)
@given(st.decimals(min_value=0, max_value=10**12, places=MAX_PLACES))
def test_every_amount_in_bounds_is_accepted_exactly_in_every_spelling(value: Decimal) -> None:
    for spelling in (value, str(value), format(value, "f"), format(value, "e")):
        assert amount(spelling) == value


@settings(max_examples=200)
@given(st.floats(min_value=0, max_value=1e12))
def test_a_json_number_reads_as_the_digits_the_server_wrote(value: float) -> None:
    try:
        result = amount(value)
    except AmountError as exc:  # a float finer than 18 places (5e-324, ...)
        assert "decimal places" in str(exc)
        return
    assert result == Decimal(repr(value))


@settings(max_examples=200)
@given(hostile_values)
def test_a_charge_is_an_amount_or_none_with_a_warning(value: object) -> None:
    try:
        expected: Decimal | None = None if value is None else amount(value)
    except AmountError:
        expected = None
    assert charge(value) == expected
    record = GenerationRecord.model_validate({**ROW, "cost": value})
    assert record.cost == expected


def test_a_refused_charge_is_logged_naming_the_row(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="oxen_queue"):
        record = GenerationRecord.model_validate({**ROW, "cost": "-5.00"})
        page = GenerationPage.model_validate(
            {
                "count": 0,
                "generations": [],
                "page_number": 1,
                "page_size": 50,
                "total_pages": 1,
                "total_entries": 0,
                "total_cost": "NaN",
            }
        )
    assert record.cost is None and page.total_cost is None
    assert "cost of 'g-1'" in caplog.text and "'-5.00' is negative" in caplog.text
    assert "total_cost" in caplog.text and "'NaN'" in caplog.text


# -- the context of money --------------------------------------------------------------------

bounded = st.decimals(min_value=0, max_value=10**12, places=MAX_PLACES)


@settings(max_examples=200)
@given(st.lists(bounded, min_size=1, max_size=30), st.integers(1, MAX_COUNT))
def test_sums_and_products_of_amounts_are_exact_and_never_overflow(
    values: list[Decimal], count: int
) -> None:
    whole = total(values)
    assert Fraction(whole) == sum(Fraction(v) for v in values)  # exact: no drift
    assert MONEY.subtract(whole, values[0]) == total(values[1:])
    exact_unit = Fraction(values[0]) * Fraction(values[-1])
    unit = round_up(MONEY.multiply(values[0], values[-1]))  # a price times seconds
    assert 0 <= Fraction(unit) - exact_unit < Fraction(1, 10**MAX_PLACES)  # rounded up
    estimate = MONEY.multiply(unit, count)
    assert Fraction(estimate) == Fraction(unit) * count
    assert estimate <= MAX_ESTIMATE


def test_the_largest_estimate_is_exact_in_the_context_of_money() -> None:
    largest = MONEY.multiply(round_up(MONEY.multiply(MAX_AMOUNT, MAX_AMOUNT)), MAX_COUNT)
    assert largest == MAX_ESTIMATE
    finest = MONEY.add(largest, D("1e-18"))  # 49 digits: within the context's 60
    assert MONEY.subtract(finest, largest) == D("1e-18")
    assert len(money(finest)) <= 50


def test_a_price_times_seconds_is_rounded_up_never_down() -> None:
    assert round_up(D("1e-18") * D("0.5")) == D("1e-18")
    assert round_up(D("0.28")) == D("0.28")


def test_the_budget_ignores_the_callers_decimal_context() -> None:
    """A program that sets a coarse precision, or traps Inexact, changes nothing here."""
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.traps[decimal.Inexact] = True
        budget = Budget(D("1000000000000"))
        reservation = budget.reserve(D("0.123456789012345678"), count=3)
        reservation.confirm("a")
        assert budget.committed == D("0.370370367037037034")
        assert budget.settle("a", D("0.000000000000000001"))
        reservation.release()
        assert budget.committed == D("0.000000000000000001")


# -- prices: a refused one is unknown, the others still work ---------------------------------


def hostile_grid(cell: Any) -> dict[str, Any]:
    return {
        "method": "per_image",
        "cost_per_image": "0.5",
        "cost_per_image_grid": {
            "high": {"1920x1080": cell, "1024x1024": "0.25"},
            "low": "cheap",
            "medium": {"1024x1024": None},
        },
    }


@pytest.mark.parametrize("cell", ["-1", "1e1000000", "NaN", True, "1e-1000000", [1]])
def test_a_refused_grid_cell_is_unknown_and_named_and_the_others_still_price(
    cell: object,
) -> None:
    pricing = ModelPricing.model_validate(hostile_grid(cell))
    assert pricing.cost_per_image_grid == {"high": {"1024x1024": D("0.25")}, "medium": {}}
    assert set(pricing.refused) == {
        "cost_per_image_grid['high']['1920x1080']",
        "cost_per_image_grid['low']",
    }
    with pytest.raises(CostUnknownError) as unknown:
        estimate_cost("m", pricing, {"quality": "high", "resolution": "1920x1080"})
    assert unknown.value.missing == "cost_per_image_grid['high']['1920x1080']"
    assert "cannot use" in str(unknown.value)
    with pytest.raises(CostUnknownError) as row:
        estimate_cost("m", pricing, {"quality": "low", "resolution": "1024x1024"})
    assert row.value.missing == "cost_per_image_grid['low']"
    assert estimate_cost("m", pricing, {"quality": "high", "resolution": "1024x1024"}) == D("0.25")
    # A grid with a refused cell still prices by the grid, never by cost_per_image instead.
    with pytest.raises(CostUnknownError, match="no resolution"):
        estimate_cost("m", pricing, {"quality": "medium", "resolution": "1024x1024"})


def test_a_refused_grid_or_table_is_unknown_not_replaced_by_the_flat_price() -> None:
    grid = ModelPricing.model_validate(
        {"method": "per_image", "cost_per_image": "0.5", "cost_per_image_grid": "lots"}
    )
    with pytest.raises(CostUnknownError) as unknown:
        estimate_cost("m", grid, {"quality": "high", "resolution": "1024x1024"})
    assert unknown.value.missing == "cost_per_image_grid"
    video = ModelPricing.model_validate(
        {
            "method": "per_video_output_second",
            "cost_per_second": "0.1",
            "cost_per_second_with_audio": "-0.2",
            "cost_per_second_by_resolution": {"1080p": "1e1000000", "720p": "0.05"},
        }
    )
    assert estimate_cost("v", video, {"duration": 10, "resolution": "720p"}) == D("0.50")
    assert estimate_cost("v", video, {"duration": 10}) == D("1.0")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"duration": 10, "resolution": "1080p"}, "cost_per_second_by_resolution['1080p']"),
        ({"duration": 10, "generate_audio": True}, "cost_per_second_with_audio"),
    ]
    for params, missing in cases:
        with pytest.raises(CostUnknownError) as refused:
            estimate_cost("v", video, params)
        assert refused.value.missing == missing


@pytest.mark.parametrize(
    "duration",
    [10**13, "1e1000000", "NaN", -5, 0, True, pytest.param(10**5000, id="10**5000")],
)
def test_a_duration_that_is_not_a_number_of_seconds_has_no_estimate(duration: object) -> None:
    pricing = ModelPricing.model_validate(
        {"method": "per_video_output_second", "cost_per_second": "0.1"}
    )
    with pytest.raises(CostUnknownError) as unknown:
        estimate_cost("v", pricing, {"duration": duration})
    assert unknown.value.missing == "a number of seconds in duration"
    assert len(str(unknown.value)) < 200


def test_the_largest_estimate_has_no_overflow_and_more_generations_are_refused() -> None:
    pricing = ModelPricing.model_validate(
        {"method": "per_video_output_second", "cost_per_second": 10**12}
    )
    params = {"duration": 10**12}
    assert estimate_cost("v", pricing, params, count=MAX_COUNT) == MAX_ESTIMATE
    for count in (MAX_COUNT + 1, 10**5000):
        with pytest.raises(InvalidParamsError) as refused:
            estimate_cost("v", pricing, params, count=count)
        assert refused.value.field == "num_generations"
        assert "at most 1,000,000" in str(refused.value)


def test_the_servers_own_refused_key_is_not_believed() -> None:
    pricing = ModelPricing.model_validate(
        {"method": "per_image", "cost_per_image": "0.5", "refused": {"cost_per_image": "no"}}
    )
    assert pricing.refused == {}
    assert estimate_cost("m", pricing, {}) == D("0.5")


def test_refused_prices_are_logged_once_per_model_read(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="oxen_queue"):
        model = Model.model_validate({"id": "m", "pricing": hostile_grid("-1")})
    assert model.pricing is not None
    assert len(caplog.records) == 1
    assert "model 'm'" in caplog.text and "'-1' is negative" in caplog.text
