"""Money: the one place an amount becomes a ``Decimal``, and the context sums are made in.

Every amount the SDK reads goes through `amount`: a model's published prices
(``pricing``), a row's charged ``cost``, a history page's ``total_cost``, the seconds a video
is priced by, a user's ``max_spend`` and the console script's ``--max-spend``. It accepts:

- an ``int`` (not a ``bool``), a ``Decimal``, a finite ``float`` (read by its shortest
  spelling, ``repr``: the digits the server wrote, ``0.07`` is ``Decimal("0.07")``), or a
  ``str`` that is a plain ASCII decimal literal of at most `MAX_TEXT` characters,
  surrounding whitespace ignored (``"0.28"``, ``"5"``, ``"+1"``, ``"2.8e-1"``);
- whose value is from 0 to `MAX_AMOUNT` (10**12), inclusive;
- with at most `MAX_PLACES` (18) decimal places, trailing zeros not counted.

It returns that value exactly (``-0`` as ``0``), and refuses everything else with
`AmountError` (a ``ValueError``) saying why: ``NaN`` and infinities in any spelling,
``None``, booleans, containers, strings that are not such a literal (``""``, ``"1_000"``,
``"0x10"``, non-ASCII digits), negative values, values above 10**12 (``1e1000000``) and
values finer than 18 places (``1e-1000000``). No amount the API documents comes near these
bounds (prices have a few places, token prices about eight).

The bounds are what make arithmetic on money safe. An estimate is a price times seconds
(both accepted here), rounded up to 18 places (`round_up`), times at most
`MAX_COUNT` generations: at most 10**30, 49 digits. `MONEY` has 60 digits of
precision, so every sum below 10**42 of such amounts is exact (a billion of the largest
estimates; the budget holds amounts of at most 10**12 each): committed spend never drifts,
never below zero. Its exponent limit, 99, is one no sum a program can hold reaches: no
``decimal.Overflow`` and no ``InvalidOperation`` can arise from a value the server sends.
The SDK computes money in `MONEY` explicitly (``MONEY.add``, ``MONEY.multiply``),
never in the thread's current context, so a program that sets ``getcontext().prec = 3`` or
traps ``Inexact`` does not change its accounting either.

What a refused amount becomes depends on where it came from (each owner says so):

- a price in ``Model.pricing``: that price is unknown (``None``, listed in
  ``ModelPricing.refused``, with a logged warning); an estimate that needs it raises
  ``CostUnknownError`` naming it, the model's other prices still work;
- a row's ``cost``, a page's ``total_cost``: ``None``, with a logged warning
  (`charge`); a job keeps counting at its estimate;
- ``max_spend``: ``InvalidParamsError`` naming it; ``--max-spend``: a usage error;
- a duration: ``CostUnknownError``, the request has no number of seconds to price.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from decimal import (
    ROUND_CEILING,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Final

__all__ = [
    "MAX_AMOUNT",
    "MAX_COUNT",
    "MAX_ESTIMATE",
    "MAX_PLACES",
    "MAX_TEXT",
    "MONEY",
    "AmountError",
    "amount",
    "brief",
    "charge",
    "is_amount",
    "round_up",
    "total",
]

logger = logging.getLogger("oxen_queue")

MAX_AMOUNT: Final = Decimal(10**12)
"""The largest amount accepted (inclusive): a price, a charge, a budget, a number of seconds."""

MAX_PLACES: Final = 18
"""The most decimal places an amount may have (trailing zeros not counted)."""

MAX_TEXT: Final = 100
"""The longest decimal string accepted, in characters (surrounding whitespace not counted)."""

MAX_COUNT: Final = 10**6
"""The most generations one estimate (or one reservation of the budget) covers."""

MAX_ESTIMATE: Final = Decimal(10**30)
"""The largest estimate there can be: a price of 10**12 for 10**12 seconds, 10**6 times."""

MONEY: Final = Context(
    prec=60,
    Emax=99,
    Emin=-99,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
"""The context every sum and product of money is computed in (see the module docstring)."""

_QUANTUM: Final = Decimal(1).scaleb(-MAX_PLACES)  # 1E-18
_ZERO: Final = Decimal(0)
# Exact: a rounding while checking the places of an accepted-size amount is a refusal.
_EXACT: Final = Context(prec=MAX_PLACES + 14, traps=[Inexact, InvalidOperation, Overflow])
_LITERAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class AmountError(ValueError):
    """An amount `amount` refuses; the message says why. Never leaves the SDK: each
    caller turns it into what its place calls for (see the module docstring)."""


def amount(value: object) -> Decimal:
    """The amount ``value`` spells, exactly, within the bounds of the module docstring.

    Args:
        value: An ``int``, ``float``, ``Decimal`` or decimal string, from the server or the
            user.

    Returns:
        A finite ``Decimal`` from 0 to 10**12 with at most 18 decimal places (never ``-0``).

    Raises:
        AmountError: Anything else, with why.
    """
    if isinstance(value, bool) or value is None:
        raise AmountError(f"{value!r} is not an amount")
    if isinstance(value, int):
        # Compared as an int first: a huge one is refused before any conversion.
        if value < 0:
            raise AmountError(f"{value} is negative")
        if value > 10**12:
            raise AmountError(f"{brief(value)} is above 10**12")
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AmountError(f"{value!r} is not a finite amount")
        # repr() is the shortest spelling that reads back as this float: the server's digits.
        value = repr(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_TEXT or not _LITERAL.fullmatch(text):
            raise AmountError(f"{brief(value)} is not a decimal number")
        try:
            number = Decimal(text)
        except ArithmeticError:  # an exponent past what decimal can hold at all
            raise AmountError(f"{brief(value)} is not a decimal number in range") from None
    elif isinstance(value, Decimal):
        number = value
    else:
        raise AmountError(f"a {type(value).__name__} is not an amount")
    return _bounded(number, value)


def _bounded(number: Decimal, spelled: object) -> Decimal:
    if not number.is_finite():
        raise AmountError(f"{brief(spelled)} is not a finite amount")
    if number.is_zero():
        # No -0 (it prints as "-0"), and no zero with an exponent of a million (0E+1000000).
        return number.copy_abs() if -MAX_PLACES <= _exponent(number) <= 0 else _ZERO
    if number.is_signed():
        raise AmountError(f"{brief(spelled)} is negative")
    # adjusted() is the exponent of the leading digit: no arithmetic, whatever the size.
    if number.adjusted() > 12 or number > MAX_AMOUNT:
        raise AmountError(f"{brief(spelled)} is above 10**12")
    if number.adjusted() < -MAX_PLACES:
        raise AmountError(f"{brief(spelled)} has more than {MAX_PLACES} decimal places")
    if _exponent(number) < -MAX_PLACES:
        try:  # 0.280000000000000000000 is 0.28; 0.1234567890123456789 is too fine
            return number.quantize(_QUANTUM, context=_EXACT)
        except Inexact:
            raise AmountError(
                f"{brief(spelled)} has more than {MAX_PLACES} decimal places"
            ) from None
    return number


def _exponent(value: Decimal) -> int:
    # The exponent of a finite Decimal (as_tuple() gives a letter for NaN and infinities).
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def brief(value: object) -> str:
    """``repr(value)`` for a message or a log line: at most 40 characters of it, and a huge
    int described, not converted (``repr`` refuses past 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def charge(value: object, *, what: str = "charged amount") -> Decimal | None:
    """A charged amount (a row's ``cost``, a page's ``total_cost``), leniently.

    Args:
        value: The server's value.
        what: What it is, for the warning (``"cost of <id>"``, ``"total_cost"``).

    Returns:
        The amount; ``None`` when absent or null, and when `amount` refuses it (with
        a logged warning): a charge is information, not structure, so a garbled one never
        makes its row unreadable, and a job whose charge is unknown keeps counting at its
        estimate.
    """
    if value is None:
        return None
    try:
        return amount(value)
    except AmountError as exc:
        logger.warning("ignored the %s the server sent: %s", what, exc)
        return None


def is_amount(value: object, *, maximum: Decimal = MAX_AMOUNT) -> bool:
    """Whether ``value`` is a ``Decimal`` `amount` could return, with ``maximum`` for
    its upper bound: the budget's defensive check of what it is handed."""
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        return False
    return value <= maximum and _exponent(value) >= -MAX_PLACES


def round_up(value: Decimal) -> Decimal:
    """``value`` rounded up to `MAX_PLACES` places (unchanged when it has no more):
    an estimate is never below what it estimates, and sums of estimates stay exact."""
    if value.is_finite() and _exponent(value) < -MAX_PLACES:
        return value.quantize(_QUANTUM, rounding=ROUND_CEILING, context=MONEY)
    return value


def total(values: Iterable[Decimal]) -> Decimal:
    """The sum of amounts, in `MONEY`."""
    result = _ZERO
    for value in values:
        result = MONEY.add(result, value)
    return result
