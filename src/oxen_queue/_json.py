"""Decoding untrusted JSON, bounded and total: the one place a body becomes Python values.

Accepts a UTF-8 JSON document of at most `MAX_BODY_BYTES` (a history page of 1,000 rows is
about 1 MB), nested at most `MAX_DEPTH` levels, with integers of at most `MAX_INT_DIGITS`
digits. Refuses anything else (``NaN`` and ``Infinity``, which Python's ``json`` accepts,
too) with `BodyError` (a ``ValueError``), which fails the one request concerned.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_BODY_BYTES: Final = 8 << 20
"""The largest JSON body accepted from the API, in bytes (8 MiB)."""

MAX_DEPTH: Final = 64
"""The deepest nesting of arrays and objects accepted."""

MAX_INT_DIGITS: Final = 40
"""The longest integer literal accepted, in digits."""


class BodyError(ValueError):
    """A body that is not JSON, or that breaks one of this module's limits."""


def _parse_int(text: str) -> int:
    # Refused before converting: int() of a huge literal is quadratic.
    if len(text) > MAX_INT_DIGITS + 1:  # a sign may precede the digits
        raise BodyError(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON value")


_DECODER: Final = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)


def loads(data: bytes | str) -> Any:
    """Decode one JSON document within the limits above, else raise `BodyError`."""
    if len(data) > MAX_BODY_BYTES:
        raise BodyError(f"a body of {len(data)} bytes (at most {MAX_BODY_BYTES})")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except RecursionError:
        # The C scanner recurses per level and stops cleanly at the interpreter's limit.
        raise BodyError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, our BodyError
        raise BodyError(str(exc)) from None
    # A document can only nest as deep as it has brackets: most bodies need no walk at all.
    if isinstance(value, dict | list) and text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    return value


def _check_depth(value: dict[str, Any] | list[Any]) -> None:
    # Iterative, so a deep document cannot exhaust the stack here either.
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    raise BodyError(f"nested deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))
