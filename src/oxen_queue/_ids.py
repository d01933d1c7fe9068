"""Ids that become URL path segments: the one place that judges them.

A generation id or a model id reaches a path (``/api/ai/queue/{id}``, ``/api/ai/models/{id}``)
from the caller (``client.cancel(id)``, ``client.generation(id)``), from the server (an enqueue
answer, a row, an event), from a file (a batch manifest) or from a web route of the user's app.
Pasted in as it came, ``..`` would climb out of the queue (``DELETE /api/ai``) and ``?``, ``#``,
CR LF or NUL would end or split the path. So every id that may reach a URL is judged here first.

**What is accepted** (a *plausible* id): a string of 1 to :data:`MAX_ID_LENGTH` characters, each
an ASCII letter, a digit, or one of ``-``, ``_``, ``.``, ``~`` (RFC 3986's unreserved
characters, which no URL encoding changes), and not made of dots alone (``.``, ``..``: dot
segments, which URL resolution removes). The API's generation ids are UUIDs and its model ids
names such as ``gpt-image-2`` or ``flux-1.1-pro``; both fit with room to spare.

**What is refused**: anything else, before a request is made: from a caller, with
``InvalidParamsError`` naming the field; from the server or a file, by the reader that met it
(``APIResponseValidationError`` for an answer, a skipped line or event otherwise).

Paths are still built with every segment percent-encoded (:func:`segment`), so the rule and the
encoding each suffice alone.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from ._exceptions import InvalidParamsError

__all__ = ["MAX_ID_LENGTH", "check_id", "plausible_id", "segment"]

MAX_ID_LENGTH: Final = 128
"""The longest id accepted, in characters (a UUID has 36)."""

_CHARACTER: Final = re.compile(r"[A-Za-z0-9._~-]")
_PLAUSIBLE: Final = re.compile(rf"(?!\.+\Z)[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}\Z")


def plausible_id(value: object) -> bool:
    """Whether ``value`` is an id that may become a URL path segment (see the module)."""
    return isinstance(value, str) and _PLAUSIBLE.match(value) is not None


def check_id(value: object, *, field: str = "generation_id") -> str:
    """``value``, if it is a plausible id (see the module); else refuse it, naming ``field``.

    Raises:
        InvalidParamsError: Not a string, empty, too long, a dot segment, or a character
            outside letters, digits and ``-_.~``.
    """
    if plausible_id(value):
        assert isinstance(value, str)
        return value
    if not isinstance(value, str):
        problem = f"must be a string, not {type(value).__name__}"
    elif not value:
        problem = "must not be empty"
    elif len(value) > MAX_ID_LENGTH:
        problem = f"must be at most {MAX_ID_LENGTH} characters, not {len(value)}"
    elif value.strip(".") == "":
        problem = f"cannot be {value!r} (a dot segment of a path)"
    else:
        bad = next(c for c in value if not _CHARACTER.match(c))
        problem = f"cannot contain {bad!r}: only letters, digits and - _ . ~ ({value[:80]!r})"
    raise InvalidParamsError(f"{field} {problem}", field=field)


def segment(value: str) -> str:
    """One path segment, percent-encoded whole (``/``, ``?``, ``#``, ``%`` included)."""
    return quote(value, safe="")
