"""Ids that become URL path segments: the one place that judges them.

Pasted into a path as it came, an id from a caller, the server or a file could climb out of
the queue (``..``) or end or split the path (``?``, ``#``, CR LF, NUL).

**Accepted** (a *plausible* id): 1 to `MAX_ID_LENGTH` ASCII letters, digits and ``-_.~``
(RFC 3986's unreserved characters), not dots alone (dot segments). UUIDs and model names
such as ``flux-1.1-pro`` fit. **Refused**: anything else, before a request is made: a
caller's id with ``InvalidParamsError`` naming its field; the server's or a file's by its
reader (``APIResponseValidationError``, or a skipped row or event), though reconciliation
keeps such a row as evidence of a job, never watched. Model ids are judged only where they
reach a path. ``_api.id_path`` also percent-encodes each id (`segment`): either suffices.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard
from urllib.parse import quote

from ._exceptions import InvalidParamsError

MAX_ID_LENGTH: Final = 128
"""The longest id accepted, in characters (a UUID has 36)."""

_CHARACTER: Final = re.compile(r"[A-Za-z0-9._~-]")
_PLAUSIBLE: Final = re.compile(rf"(?!\.+\Z)[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}\Z")


def plausible_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an id that may become a URL path segment (see the module)."""
    return isinstance(value, str) and _PLAUSIBLE.match(value) is not None


def check_id(value: object, *, field: str = "generation_id") -> str:
    """``value``, if it is a plausible id; else ``InvalidParamsError`` naming ``field`` and why."""
    if plausible_id(value):
        return value
    if not isinstance(value, str):
        problem = f"must be a string, not {type(value).__name__}"
    elif not value:
        problem = "must not be empty"
    elif len(value) > MAX_ID_LENGTH:
        problem = f"must be at most {MAX_ID_LENGTH} characters, not {len(value)} ({shown(value)})"
    elif value.strip(".") == "":
        problem = f"cannot be {value!r} (a dot segment of a path)"
    else:
        bad = next(c for c in value if not _CHARACTER.match(c))
        problem = f"cannot contain {bad!r}: only letters, digits and - _ . ~ ({shown(value)})"
    raise InvalidParamsError(f"{field} {problem}", field=field)


def shown(value: object) -> str:
    """A caller's value as an error message quotes it: its one-line ``repr()``, cut at 80."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}..."


def segment(value: str) -> str:
    """One path segment, percent-encoded whole (``/``, ``?``, ``#``, ``%`` included)."""
    return quote(value, safe="")
