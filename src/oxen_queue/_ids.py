"""Ids that become URL path segments: the one place that judges them.

A generation id or a model id reaches a path (``/api/ai/queue/{id}``, ``/api/ai/models/{id}``)
from the caller (``client.cancel(id)``, ``client.generation(id)``), from the server (an enqueue
answer, a row, an event), from a file (a batch manifest) or from a web route of the user's app.
Pasted in as it came, ``..`` would climb out of the queue (``DELETE /api/ai``) and ``?``, ``#``,
CR LF or NUL would end or split the path. So every id that may reach a URL is judged here first.

**What is accepted** (a *plausible* id): a string of 1 to `MAX_ID_LENGTH` characters, each
an ASCII letter, a digit, or one of ``-``, ``_``, ``.``, ``~`` (RFC 3986's unreserved
characters, which no URL encoding changes), and not made of dots alone (``.``, ``..``: dot
segments, which URL resolution removes). The API's generation ids are UUIDs and its model ids
names such as ``gpt-image-2`` or ``flux-1.1-pro``; both fit with room to spare.

**What is refused**: anything else, before a request is made: from a caller, with
``InvalidParamsError`` naming the field; from the server or a file, by the reader that met it
(``APIResponseValidationError`` for an answer, a skipped line or event otherwise).

**Where it is applied.** Every API path that carries an id is built by ``_api.id_path``, which
checks the id here and encodes it with `segment`: no other code puts an id into a URL.
Before that, each way in judges its ids where they come in, so the refusal says what happened:

* A caller's id fails at once with ``InvalidParamsError`` naming its field: ``generation_id``
  for ``cancel``, ``get_generation``, ``get_generation_details``, ``generation(id)`` (and so
  ``download``/``read`` given an id, a batch item's ``generation_id``),
  ``Generation.cancel``/``refresh``, the blocking ``Client`` and the CLI's arguments (all of
  them checked before the first is used); ``model`` for ``get_model`` and the model fetch behind
  ``validate``, ``estimate_cost`` and ``max_spend``.
* The poller's list rows and the event stream's events skip an implausible id (logged at
  debug): no generation of the client's can have it.
* ``ClientCore.track``, the one door to watching, gives an implausible id (an enqueue answer's,
  a reconciled row's, the ledger's in ``recover()``) a handle that has already failed with
  ``APIResponseValidationError``, logged as a warning, and never watches it; ``generate()``'s
  abandoned jobs are cancelled under plausible ids only.
* Reconciliation's rows keep an implausible id: the row is still evidence that a request made
  a job, and hiding it could make the client send that request again.
* Listings returned to the caller (``list_queue``, ``list_generations``) are data and keep such
  rows; passing one of their ids back to an entry point is refused as above.

**Model ids** follow the rule only where they reach a path (``GET /api/ai/models/{id}``). In the
enqueue's JSON body or a ``?model=`` query (encoded by httpx) any string is safe, and the API
judges it; so an enqueue with ``validate=False`` and no ``max_spend`` (nothing fetched) sends
its model as given, while one that needs the model's schema or price refuses an implausible
model before the fetch.

Paths are still built with every segment percent-encoded (`segment`), so the rule and the
encoding each suffice alone.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard
from urllib.parse import quote

from ._exceptions import InvalidParamsError

__all__ = ["MAX_ID_LENGTH", "check_id", "plausible_id", "segment", "shown"]

MAX_ID_LENGTH: Final = 128
"""The longest id accepted, in characters (a UUID has 36)."""

_CHARACTER: Final = re.compile(r"[A-Za-z0-9._~-]")
_PLAUSIBLE: Final = re.compile(rf"(?!\.+\Z)[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}\Z")


def plausible_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an id that may become a URL path segment (see the module).

    Cheap enough for every row of a poll: one type check and one precompiled match.
    """
    return isinstance(value, str) and _PLAUSIBLE.match(value) is not None


def check_id(value: object, *, field: str = "generation_id") -> str:
    """``value``, if it is a plausible id (see the module); else refuse it, naming ``field``.

    Raises:
        InvalidParamsError: Not a string, empty, too long, a dot segment, or a character
            outside letters, digits and ``-_.~``.
    """
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
    """A caller's value as an error message quotes it: its ``repr()`` (line breaks and control
    characters escaped, so the message stays one line), cut after 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}..."


def segment(value: str) -> str:
    """One path segment, percent-encoded whole (``/``, ``?``, ``#``, ``%`` included)."""
    return quote(value, safe="")
