"""Money: the one place an amount becomes a ``Decimal`` (`amount`), and its context (`MONEY`).

The bounds of `amount` keep arithmetic exact: an estimate is a price times seconds, rounded up
to 18 places (`round_up`), times at most `MAX_COUNT` generations: at most 10**30, 49 digits.
`MONEY` has 60 digits of precision, so every sum below 10**42 of such amounts is exact, and an
exponent limit (99) no sum reaches: no ``decimal.Overflow`` or ``InvalidOperation`` from a
value the server sends. Money is computed in `MONEY` explicitly (``MONEY.add``), never in the
thread's context, so a program that sets ``getcontext().prec = 3`` changes nothing here.
"""

from __future__ import annotations

import decimal
import functools
import logging
import math
import re
from collections.abc import Iterable
from decimal import ROUND_CEILING, Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Final

logger = logging.getLogger("oxen_queue")

MAX_AMOUNT: Final = Decimal(10**12)  # the largest amount, inclusive
MAX_PLACES: Final = 18  # the most decimal places, trailing zeros not counted
MAX_TEXT: Final = 100  # the longest decimal string, in characters once stripped
MAX_COUNT: Final = 10**6  # the most generations one estimate (or reservation) covers
MAX_ESTIMATE: Final = Decimal(10**30)  # a price of 10**12 for 10**12 seconds, 10**6 times
MONEY: Final = Context(
    prec=60, Emax=99, Emin=-99, traps=[InvalidOperation, decimal.DivisionByZero, Overflow]
)

_QUANTUM: Final = Decimal(1).scaleb(-MAX_PLACES)  # 1E-18
_ZERO: Final = Decimal(0)
# Exact: a rounding while checking the places of an accepted-size amount is a refusal.
_EXACT: Final = Context(prec=MAX_PLACES + 14, traps=[Inexact, InvalidOperation, Overflow])
_LITERAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class AmountError(ValueError):
    """An amount `amount` refuses; the message says why. Never leaves the SDK: each caller
    turns it into what its place calls for."""


def amount(value: object) -> Decimal:
    """The amount ``value`` spells, exactly: every price, charge, total, budget and number of
    seconds the SDK reads passes here.

    Accepted: an ``int`` (not a ``bool``), a ``Decimal``, a finite ``float`` (read by its
    shortest spelling, ``repr``: the server's digits, ``0.07`` is ``Decimal("0.07")``), or a
    plain ASCII decimal literal of at most `MAX_TEXT` characters, surrounding whitespace
    ignored (``"0.28"``, ``"+1"``, ``"2.8e-1"``); from 0 to `MAX_AMOUNT` (10**12) inclusive,
    with at most `MAX_PLACES` (18) decimal places, trailing zeros not counted. Returns that
    value exactly (``-0`` as ``0``).

    Raises:
        AmountError: Anything else, saying why: ``NaN`` and infinities in any spelling,
            ``None``, booleans, other types, other strings (``""``, ``"1_000"``, ``"0x10"``,
            non-ASCII digits), negatives, values above 10**12 (``1e1000000``) or finer than
            18 places (``1e-1000000``).
    """
    if isinstance(value, bool) or value is None:
        raise AmountError(f"{value!r} is not an amount")
    if isinstance(value, int):
        # Refused before a huge int (either sign) is converted: that takes seconds.
        if value < 0:
            raise AmountError(f"{brief(value)} is negative")
        if value > 10**12:
            raise AmountError(f"{brief(value)} is above 10**12")
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raise AmountError(f"{value!r} is not a finite amount")
        text = repr(value) if isinstance(value, float) else value.strip()
        if len(text) > MAX_TEXT or not _LITERAL.fullmatch(text):
            raise AmountError(f"{brief(value)} is not a decimal number")
        try:
            number = Decimal(text)
        except ArithmeticError:  # an exponent past what decimal can hold at all
            raise AmountError(f"{brief(value)} is not a decimal number in range") from None
    else:
        raise AmountError(f"a {type(value).__name__} is not an amount")
    if not number.is_finite():
        raise AmountError(f"{brief(value)} is not a finite amount")
    if number.is_zero():
        # No -0 (it prints as "-0"), and no zero with an exponent of a million (0E+1000000).
        return number.copy_abs() if -MAX_PLACES <= _exponent(number) <= 0 else _ZERO
    if number.is_signed():
        raise AmountError(f"{brief(value)} is negative")
    # adjusted() is the exponent of the leading digit: no arithmetic, whatever the size.
    if number.adjusted() > 12 or number > MAX_AMOUNT:
        raise AmountError(f"{brief(value)} is above 10**12")
    if number.adjusted() >= -MAX_PLACES and _exponent(number) >= -MAX_PLACES:
        return number
    try:  # 0.280000000000000000000 is 0.28; 0.1234567890123456789 is too fine
        return number.quantize(_QUANTUM, context=_EXACT)
    except Inexact:
        raise AmountError(f"{brief(value)} has more than {MAX_PLACES} decimal places") from None


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
    """A charged amount (a row's ``cost``, a page's ``total_cost``), leniently: ``None`` when
    absent, and when `amount` refuses it (with a logged warning naming ``what``), so a garbled
    charge never makes its row unreadable and its job keeps counting at its estimate."""
    if value is None:
        return None
    try:
        return amount(value)
    except AmountError as exc:
        logger.warning("ignored the %s the server sent: %s", what, exc)
        return None


def is_amount(value: object, *, maximum: Decimal = MAX_AMOUNT) -> bool:
    """Whether ``value`` is a ``Decimal`` `amount` could return, up to ``maximum``."""
    if not isinstance(value, Decimal) or not value.is_finite():
        return False
    return 0 <= value <= maximum and _exponent(value) >= -MAX_PLACES


def round_up(value: Decimal) -> Decimal:
    """``value`` rounded up to `MAX_PLACES` places: an estimate is never below what it
    estimates, and sums of estimates stay exact."""
    if _exponent(value) < -MAX_PLACES:
        return value.quantize(_QUANTUM, rounding=ROUND_CEILING, context=MONEY)
    return value


def total(values: Iterable[Decimal]) -> Decimal:
    """The sum of amounts, in `MONEY`."""
    return functools.reduce(MONEY.add, values, _ZERO)
