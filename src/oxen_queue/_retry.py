"""Which failures are retried, and how: every such decision here, tenacity privately.

* `is_retryable`: an idempotent request (``GET``, ``DELETE``) is sent again after a
  connection error, a timeout, or 408, 429, 500, 502, 503, 504.
* `is_refused`: a create (``POST``) is sent again only when the server certainly did not
  process it (429, 503, a connection never made): the API has no idempotency key.
* `is_ambiguous`: any other failure after a create left (a read timeout, a cut body, a 500,
  502 or 504 from a proxy, a garbled 200) may have made the job, so it is reconciled
  (``_enqueue``), not resent; `certainly_created`: a 2xx answer began, the job exists.
* `is_transient`: a watcher's look that failed so (connection, timeout, malformed answer,
  5xx) may succeed later: the generation does not fail of it.
* `is_unavailable`: the event stream refused for good (401, 403, 404, 405, 501).

Waits are capped exponential backoff with full jitter, or the server's ``Retry-After`` (or
``retry-after-ms``) up to `RetryPolicy.max_retry_after`, past which the ``RateLimitError``
is raised at once. `RetryPolicy.deadline` bounds each call, attempts and waits together, so
retries never silently add up to minutes.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import httpx

from ._durations import optional_seconds, seconds
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
)

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState
    from tenacity.stop import stop_base

logger = logging.getLogger("oxen_queue")

T = TypeVar("T")

RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
REFUSED_STATUSES: Final = frozenset({429, 503})
AMBIGUOUS_STATUSES: Final = frozenset({500, 502, 504})
UNAVAILABLE_STATUSES: Final = frozenset({401, 403, 404, 405, 501})


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How transient HTTP failures are retried.

    Attributes:
        attempts: Tries in all, the first included. ``1`` turns retries off.
        initial_delay: Seconds: the first backoff window (full jitter draws from 0 to it).
        max_delay: Seconds: the cap on one backoff window.
        max_retry_after: Seconds: the longest server-requested wait honoured; a longer
            ``Retry-After`` raises ``RateLimitError`` at once.
        deadline: Seconds: the overall budget of one call, attempts and waits together.
            ``None`` means no limit beyond ``attempts``.
        wait: ``False`` makes every wait zero (tests), ``Retry-After`` included.
    """

    attempts: int = 6
    initial_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 120.0
    deadline: float | None = 120.0
    wait: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        for field in ("initial_delay", "max_delay", "max_retry_after"):
            seconds(getattr(self, field), field=field, zero=True)
        optional_seconds(self.deadline, field="deadline")

    @classmethod
    def no_wait(cls, *, attempts: int = 6) -> RetryPolicy:
        """A policy that retries without ever sleeping: for tests."""
        return cls(attempts=attempts, wait=False, deadline=None)


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date. Unparseable or negative values
    give ``None``, as if the server had not said.
    """
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None and math.isfinite(millis) and millis >= 0:
        return millis / 1000.0
    header = headers.get("retry-after")
    seconds = _number(header)
    if seconds is not None:  # a number, even a negative one or nan, is never a date
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    if header is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year past 9999, too
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def is_retryable(exc: BaseException) -> bool:
    """Whether an idempotent request that failed this way may be sent again."""
    if isinstance(exc, APIStatusError):
        return exc.status_code in RETRYABLE_STATUSES
    return isinstance(exc, APIConnectionError)


def is_refused(exc: BaseException) -> bool:
    """Whether the server certainly did not process the request, so it is safe to resend."""
    if isinstance(exc, APIStatusError):
        return exc.status_code in REFUSED_STATUSES
    return isinstance(exc, APIConnectionError) and not exc.request_sent


def certainly_created(exc: BaseException) -> bool:
    """Whether a failed create nonetheless began a 2xx answer: the job exists."""
    if isinstance(exc, APIResponseValidationError):
        return exc.response is not None and exc.response.is_success
    if isinstance(exc, APIConnectionError):
        return exc.status_code is not None and 200 <= exc.status_code < 300
    return False


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may nonetheless have created its job."""
    if isinstance(exc, APIStatusError):
        return exc.status_code in AMBIGUOUS_STATUSES
    if isinstance(exc, APIConnectionError):
        return exc.request_sent
    return certainly_created(exc)


def is_transient(exc: BaseException) -> bool:
    """Whether a watcher's look that failed this way may succeed if asked again later."""
    # Besides a retryable status: a connection failure, a timeout, a malformed answer.
    return is_retryable(exc) if isinstance(exc, APIStatusError) else isinstance(exc, APIError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether the event stream was refused for good (asking again will not help)."""
    return isinstance(exc, APIStatusError) and exc.status_code in UNAVAILABLE_STATUSES


def _server_wait(exc: BaseException | None) -> float | None:
    return parse_retry_after(exc.response.headers) if isinstance(exc, APIStatusError) else None


async def retrying_call(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retryable: Callable[[BaseException], bool],
    what: str,
    on_retry: Callable[[BaseException | None, float], None] | None = None,
) -> T:
    """Run ``call`` until it succeeds, a failure is not ``retryable``, or ``policy`` gives up;
    ``on_retry`` hears of each failure tried again and the seconds until the next.

    Raises:
        The last attempt's error; ``RateLimitError`` at once when ``Retry-After`` exceeds the
        cap; ``APITimeoutError`` when the overall deadline passes.
    """

    def should_retry(exc: BaseException) -> bool:
        if not retryable(exc):
            return False
        server_wait = _server_wait(exc)
        if server_wait is not None and server_wait > policy.max_retry_after:
            if isinstance(exc, RateLimitError):
                exc.retry_after = server_wait
            logger.debug("%s: asked to wait %.1f s, over the cap; giving up", what, server_wait)
            return False
        return True

    deadline = math.inf if policy.deadline is None else policy.deadline
    with anyio.move_on_after(deadline):
        # The first attempt goes without tenacity, whose import and set-up most calls (which
        # succeed at once) need not pay; a failure is handed to it as the first outcome.
        try:
            return await call()
        except Exception as exc:
            failed = [exc]
        async for attempt in _retrying(policy, should_retry, on_retry, what):
            with attempt:
                if failed:
                    raise failed.pop()
                return await call()
    # Only the deadline leaves the loop without a return: tenacity reraises the last error.
    logger.debug("%s: gave up after its %.1f s deadline", what, deadline)
    raise APITimeoutError(f"{what}: no answer within the {deadline:g} s retry deadline")


def _retrying(
    policy: RetryPolicy,
    should_retry: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException | None, float], None] | None,
    what: str,
) -> AsyncRetrying:
    """tenacity's iteration over the attempts after a first one failed."""
    # Imported here: only a call that failed needs it, and a cold start should not pay.
    from tenacity import (
        AsyncRetrying,
        retry_if_exception,
        stop_after_attempt,
        stop_before_delay,
        wait_random_exponential,
    )

    backoff = wait_random_exponential(multiplier=policy.initial_delay, max=policy.max_delay)

    def wait(state: RetryCallState) -> float:
        if not policy.wait:
            return 0.0
        server_wait = _server_wait(_error(state))
        return server_wait if server_wait is not None else backoff(state)

    def log_retry(state: RetryCallState) -> None:
        exc = _error(state)
        sleep = state.next_action.sleep if state.next_action else 0.0
        if on_retry is not None:
            on_retry(exc, sleep)
        kind = f"HTTP {exc.status_code}" if isinstance(exc, APIStatusError) else type(exc).__name__
        n = state.attempt_number
        logger.debug("%s: attempt %d failed (%s); retrying in %.2f s", what, n, kind, sleep)

    stop: stop_base = stop_after_attempt(policy.attempts)
    if policy.deadline is not None:
        stop = stop | stop_before_delay(policy.deadline)
    return AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception(should_retry),
        sleep=anyio.sleep,
        before_sleep=log_retry,
        reraise=True,
    )


def _error(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None
