"""Durations from the caller: every timeout, deadline and interval, in seconds.

Accepted: a finite int or float (above zero, or zero where allowed). A NaN, an infinity, a
bool or a string is refused where it enters, naming the argument, not later and elsewhere
(anyio's ``deadline must not be NaN``, aiohttp's ``OverflowError``, a timeout already passed).
"""

from __future__ import annotations

import math

import httpx

from ._exceptions import InvalidParamsError


def seconds(value: object, *, field: str, zero: bool = False) -> float:
    """``value`` as a float, if it is a finite number of seconds above zero (or zero too, when
    ``zero``); else `InvalidParamsError`, naming ``field``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past 1e308
            number = math.nan
        if math.isfinite(number) and (number > 0 or (zero and number == 0)):
            return number
    bound = "zero or more" if zero else "above zero"
    raise InvalidParamsError(
        f"{field} must be a finite number of seconds, {bound}, not {value!r:.40}", field=field
    )


def optional_seconds(value: object, *, field: str, zero: bool = False) -> float | None:
    """`seconds`, or ``None`` (no limit) as it is."""
    return None if value is None else seconds(value, field=field, zero=zero)


def timeout_of(value: object, *, field: str = "timeout") -> httpx.Timeout:
    """An ``httpx.Timeout`` from seconds, from ``None`` (no limit, as httpx has it), or from an
    ``httpx.Timeout`` whose every phase is seconds or ``None``; else `InvalidParamsError`."""
    if isinstance(value, httpx.Timeout):
        for phase in ("connect", "read", "write", "pool"):
            optional_seconds(getattr(value, phase), field=f"{field}.{phase}")
        return value
    return httpx.Timeout(optional_seconds(value, field=field))
