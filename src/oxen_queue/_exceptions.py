"""Every error oxen-queue raises, under one base class.

The tree:

```text
OxenError
├── APIError                        the API could not be used as asked
│   ├── APIStatusError              the API answered with an HTTP error status
│   │   ├── BadRequestError         400 (and 422): the request itself was refused
│   │   ├── AuthenticationError     401, 403: missing, wrong or unauthorised key
│   │   ├── NotFoundError           404: no such generation or model
│   │   ├── RateLimitError          429: slow down; ``.retry_after`` seconds, if known
│   │   └── ServerError             5xx: the server (or a proxy in front of it) failed
│   ├── APIConnectionError          no usable answer: connection refused, reset or cut
│   │   └── APITimeoutError         no answer in time (also a ``TimeoutError``)
│   └── APIResponseValidationError  an answer that does not have the documented shape
│                                   (``.generation_ids``: jobs an enqueue answer named)
├── GenerationError                 a generation ended without a result
│   ├── GenerationFailedError       status ``failed``; ``.error_message`` is the server's text
│   └── GenerationCancelledError    status ``cancelled``
├── GenerationTimeoutError          the generation's deadline passed (also a TimeoutError)
├── InvalidParamsError              bad input caught before any request (also a ValueError)
├── CostUnknownError                no price can be worked out for a request (what is missing)
├── BudgetExceededError             an enqueue's estimate would pass the client's max_spend
├── AmbiguousEnqueueError           an enqueue may have created a job that was not found
│                                   (``.candidate_ids``; ``.generation_ids``: jobs it did)
├── LedgerError                     the enqueue ledger could not be read or written
│   └── InFlightError               (internal) a claim met a request still in flight
├── DownloadError                   a result file could not be fetched or was refused
├── ClientClosedError               the client is not open (use ``async with``)
└── ClientDisconnectedError         a web request's caller hung up (``oxen_queue.asgi``)
```

An error after a request the server processed names the jobs it proves exist
(``generation_ids``). Both documented error bodies are parsed into attributes of
[`APIStatusError`][oxen_queue.APIStatusError]. Every error pickles, with its attributes.
``PollTimeoutError`` is the deprecated former name of ``GenerationTimeoutError`` (an alias).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

import httpx


class OxenError(Exception):
    """The base class of every error this library raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default calls ``cls(*args)``, which keyword-only constructors refuse: make it
        # without ``__init__``, then restore its attributes (``__notes__`` included) and
        # ``args`` (which ``OSError.__new__``, a base of the timeout errors, leaves unset).
        return (_new, (type(self),), {**self.__dict__, "args": self.args})


class APIError(OxenError):
    """The API could not be used as asked.

    Attributes:
        request: The request that failed, when there was one.
    """

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIStatusError(APIError):
    """The API answered with an HTTP error status.

    Attributes:
        status_code: The HTTP status.
        response: The response (its request carries no key in ``repr``; httpx redacts it).
        body: The decoded JSON body, or ``None`` when the body was not JSON (a proxy's HTML page).
        error_type: ``error.type`` of the envelope body (``"resource_not_found"``, ...), if any.
        title: ``error.title`` of the envelope body, if any.
        detail: ``error.detail`` of the envelope body, if any.
        status_message: ``status_message`` of the envelope body, if any.
        server_message: ``error.message`` of the simple body, or the best human text found.
    """

    def __init__(self, message: str, *, response: httpx.Response, body: object) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        fields = _error_fields(body)
        self.error_type: str | None = fields.get("type")
        self.title: str | None = fields.get("title")
        self.detail: str | None = fields.get("detail")
        self.status_message: str | None = fields.get("status_message")
        texts = ("message", "detail", "title", "status_message")
        self.server_message = next((fields[key] for key in texts if key in fields), None)


class BadRequestError(APIStatusError):
    """400 or 422: the API refused the request (unknown model, ``num_generations`` range, ...)."""


class AuthenticationError(APIStatusError):
    """401 or 403: the key is missing, wrong, or not allowed to do this."""


class NotFoundError(APIStatusError):
    """404: no such generation or model."""


class RateLimitError(APIStatusError):
    """429: too many requests.

    Attributes:
        retry_after: Seconds the server asked us to wait, or ``None`` when it did not say.
    """

    def __init__(
        self, message: str, *, response: httpx.Response, body: object, retry_after: float | None
    ) -> None:
        super().__init__(message, response=response, body=body)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the server, or a proxy in front of it, failed."""


class APIConnectionError(APIError):
    """No usable answer: the connection was refused, reset, or cut mid-response.

    Attributes:
        request_sent: ``False`` when the connection was never established, so the server
            cannot have seen the request; ``True`` when it may have been processed.
        status_code: The HTTP status of an answer whose headers arrived before its body was
            lost (the server did process the request); ``None`` when no answer began.
    """

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        request_sent: bool = True,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.request_sent = request_sent
        self.status_code = status_code


class APITimeoutError(APIConnectionError, TimeoutError):
    """No answer in time."""


class APIResponseValidationError(APIError):
    """An answer that does not have the documented shape (truncated JSON, wrong types, a row
    fetched for one id that is about another, ...).

    From an enqueue, an answer the client could not make good (naming an id another enqueue
    holds, more jobs than asked, or an id unfit for a URL): the request is never sent again.

    Attributes:
        response: The offending response, when the problem was found before decoding it.
        generation_ids: Jobs an enqueue's answer proves exist, in the order named (else
            empty). Those with a plausible id are watched by the client (``client.pending``).
    """

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response | None = None,
        generation_ids: Iterable[str] = (),
    ) -> None:
        super().__init__(message, request=None if response is None else response.request)
        self.response = response
        self.generation_ids: tuple[str, ...] = tuple(generation_ids)


class GenerationError(OxenError):
    """A generation ended without a result.

    Attributes:
        generation_id: The generation's id.
        record: The final row as last seen (a ``GenerationRecord``), when known.
    """

    def __init__(self, message: str, *, generation_id: str, record: Any = None) -> None:
        super().__init__(message)
        self.generation_id = generation_id
        self.record = record


class GenerationFailedError(GenerationError):
    """The generation ended with status ``failed``.

    Attributes:
        error_message: The server's explanation (``"Insufficient credits"``, ...), or ``None``.
    """

    def __init__(
        self, *, generation_id: str, error_message: str | None, record: Any = None
    ) -> None:
        text = f"generation {generation_id} failed: {error_message or 'no error message given'}"
        super().__init__(text, generation_id=generation_id, record=record)
        self.error_message = error_message


class GenerationCancelledError(GenerationError):
    """The generation ended with status ``cancelled``."""

    def __init__(self, *, generation_id: str, record: Any = None) -> None:
        super().__init__(
            f"generation {generation_id} was cancelled", generation_id=generation_id, record=record
        )


class GenerationTimeoutError(OxenError, TimeoutError):
    """The generation's own deadline passed before it reached a final status (whatever the
    completion mode). The job may still run: reattach with ``client.generation(generation_id)``
    or cancel it (``generate()`` cancels its own).

    Attributes:
        generation_id: The generation's id.
        deadline: The deadline that passed, in seconds after the generation was created.
    """

    def __init__(self, *, generation_id: str, deadline: float) -> None:
        super().__init__(
            f"generation {generation_id} did not finish within its {deadline:g} s deadline"
        )
        self.generation_id = generation_id
        self.deadline = deadline


PollTimeoutError = GenerationTimeoutError
"""Deprecated: the former name of [`GenerationTimeoutError`][oxen_queue.GenerationTimeoutError]
(the same class)."""


class InvalidParamsError(OxenError, ValueError):
    """Bad input, caught locally before any request was sent (so nothing was billed).

    Attributes:
        field: The offending parameter, or ``None`` when the problem is not one field's.
        allowed: The values the field accepts, when it has a fixed set.
    """

    def __init__(
        self, message: str, *, field: str | None = None, allowed: Iterable[object] | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.allowed: tuple[object, ...] | None = None if allowed is None else tuple(allowed)


class AmbiguousEnqueueError(OxenError):
    """An enqueue's answer was lost, and its jobs could be neither found nor ruled out.

    The request is never sent again blindly: jobs may exist, and be billed, that could not be
    told apart from others with the same model and parameters (made by a client outside the
    ledger). Look at the candidates, or in ``client.list_generations(model=...)``.

    Attributes:
        model: The model the enqueue was for.
        params: The request's parameters.
        candidate_ids: Generations that match the request and that nothing else claims:
            its jobs are among them, if it made any. Empty when none was found.
        generation_ids: Jobs it certainly made (named by its answer, or adopted; watched by
            the client), when an answer named fewer than asked. Usually empty.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        params: Mapping[str, Any],
        candidate_ids: Iterable[str] = (),
        generation_ids: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.model = model
        self.params = dict(params)
        self.candidate_ids: tuple[str, ...] = tuple(candidate_ids)
        self.generation_ids: tuple[str, ...] = tuple(generation_ids)


class CostUnknownError(OxenError):
    """No price can be worked out for a request from the model's published ``pricing`` (never
    a guess of zero): billed by token or by time, a grid without the requested cell, a
    per-second price without a ``duration``, or no pricing at all.

    Attributes:
        model: The model id.
        missing: What is missing, in a few words (``"duration"``,
            ``"cost_per_image_grid['high']['999x999']"``, ``"pricing"``...).
    """

    def __init__(self, message: str, *, model: str, missing: str) -> None:
        super().__init__(message)
        self.model = model
        self.missing = missing


class BudgetExceededError(OxenError):
    """An enqueue's estimated cost would take the client's committed spend past its
    ``max_spend`` (raised before anything is sent).

    Attributes:
        estimate: The refused request's estimated cost.
        committed: What the client had committed when it refused: its jobs at their charged
            cost once known, at their estimate until then, and enqueues in flight.
        budget: The client's ``max_spend``.
    """

    def __init__(
        self, message: str, *, estimate: Decimal, committed: Decimal, budget: Decimal
    ) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.committed = committed
        self.budget = budget


class DownloadError(OxenError):
    """A result file could not be fetched, or was refused (too large, no URL, empty, not the
    media the generation asked for, ...)."""


class ClientClosedError(OxenError, RuntimeError):
    """The client is not open: use it inside ``async with AsyncClient() as client:``.

    Attributes:
        generation_ids: Jobs an enqueue interrupted by the close had created (reattach with
            ``client.generation(id)`` from another client); usually empty.
    """

    def __init__(self, message: str, *, generation_ids: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.generation_ids: tuple[str, ...] = tuple(generation_ids)


def _new(cls: type[OxenError]) -> OxenError:
    """An uninitialised error of ``cls``, which unpickling then fills in."""
    return cls.__new__(cls)


_FIELDS: Final = frozenset({"type", "title", "detail", "message", "status_message"})


def _error_fields(body: object) -> dict[str, str]:
    """The text fields of either documented error body: the envelope ``{"error": {"type",
    "title", "detail"}, "status": "error", "status_message"}`` or ``{"error": {"message"}}``
    (or ``{"error": "..."}``); any other body, or a field that is not a string, gives nothing."""
    if not isinstance(body, Mapping):
        return {}
    error = body.get("error")
    if isinstance(error, str):
        error = {"message": error}
    found = {
        **(error if isinstance(error, Mapping) else {}),
        "status_message": body.get("status_message"),
    }
    return {key: value for key, value in found.items() if key in _FIELDS and isinstance(value, str)}
