"""Decoding untrusted JSON: bounded and total.

Every byte from the network is untrusted. Python's ``json`` module raises ``RecursionError``
on a body nested a few thousand levels deep and ``ValueError`` on an integer of more than 4,300
digits, and it accepts ``NaN`` and ``Infinity``, which are not JSON. This module is the one
place where a body becomes Python values, within limits no documented body comes near:

* a body is at most `MAX_BODY_BYTES` (the largest, a history page of 1,000 rows, is
  about 1 MB);
* containers nest at most `MAX_DEPTH` levels (documented bodies nest three or four);
* an integer has at most `MAX_INT_DIGITS` digits (timestamps have ten);
* ``NaN``, ``Infinity`` and ``-Infinity`` are refused.

Any breach, and any malformed body, raises `BodyError` (a ``ValueError``), which the
HTTP layer turns into ``APIResponseValidationError`` for the one request concerned.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["MAX_BODY_BYTES", "MAX_DEPTH", "MAX_INT_DIGITS", "BodyError", "loads"]

MAX_BODY_BYTES: Final = 8 << 20
"""The largest JSON body accepted from the API, in bytes (8 MiB)."""

MAX_DEPTH: Final = 64
"""The deepest nesting of arrays and objects accepted."""

MAX_INT_DIGITS: Final = 40
"""The longest integer literal accepted, in digits."""


class BodyError(ValueError):
    """A body that is not JSON, or that breaks one of this module's limits."""


def _parse_int(text: str) -> int:
    # Called by the C scanner for each integer literal: refuse before converting, since
    # int() of a huge literal is quadratic (and Python refuses past 4,300 digits anyway).
    if len(text) > MAX_INT_DIGITS + 1:  # a sign may precede the digits
        raise BodyError(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON value")


_DECODER: Final = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)


def loads(data: bytes | str) -> Any:
    """Decode one JSON document within the limits above.

    Raises:
        BodyError: The body is too large, not UTF-8, not JSON, or breaks a limit.
    """
    if len(data) > MAX_BODY_BYTES:
        raise BodyError(f"a body of {len(data)} bytes (at most {MAX_BODY_BYTES})")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except BodyError:
        raise
    except RecursionError:
        # The C scanner recurses per level and stops cleanly at the interpreter's limit.
        raise BodyError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BodyError(str(exc)) from None
    # A document can only nest as deep as it has brackets: most bodies need no walk at all.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    return value


def _check_depth(value: object) -> None:
    # Iterative, so a deep document cannot exhaust the stack here either.
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    raise BodyError(f"nested deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))
