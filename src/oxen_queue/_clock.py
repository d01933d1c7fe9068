"""The server's clock, as seen from ours, and how far its evidence can be believed.

A lost enqueue is reconciled by looking for rows stamped on the *server's* clock
(``enqueued_at``, whole seconds), which need not agree with ours. Answers teach us the offset
(``server time - our time``): ``Date`` headers (maybe a proxy's, standing in) and the stamps of
rows of jobs *this client created* (the rows' own clock), each written between our send and
the answer, bound it both ways; recent samples of one kind intersect into a narrow interval,
started again from the newest when they disagree (a clock was stepped).

**Accepted as evidence**: a server time no earlier than `EARLIEST` and within `MAX_SKEW` of our
clock when written; a row's stamp must also be an ``int``. Anything else is refused and casts
*doubt* over the next `_DOUBT` samples of its kind (a ``Date`` in year 9999, our own job's row
stamped null); an unparseable ``Date`` is only ignored (a broken header, not a broken clock).

**Windows** (`ServerClock.window`): the *narrow* window is where a request's rows are expected
by the best estimate (our jobs' stamps, else ``Date`` headers, else our clock give or take
`_FALLBACK`): rows there are its candidates. The *reach* is where they could be if it were
wrong: the narrow window and our own clock's, widened by `TOLERANCE` when *verified* (two or
more of our jobs' stamps agree, none doubtful), by `MAX_SKEW` when resting on ``Date``
headers or one stamp, and without end with no evidence or in doubt. A matching row in the
reach forbids concluding that the request made nothing (see `_reconcile`): a ``Date`` off
while the rows are true leaves them ambiguous, never resent, until our jobs' stamps verify.
"""

from __future__ import annotations

import email.utils
import math
from collections import deque
from dataclasses import dataclass
from typing import Final

EARLIEST: Final = 1_577_836_800
"""2020-01-01T00:00:00Z: no server time before it is believed (the API is younger)."""
MAX_SKEW: Final = 86_400.0
"""Seconds: the farthest a server time may be from ours and be evidence (any time-zone mistake)."""
TOLERANCE: Final = 60.0
"""Seconds the reach extends a verified window (a clock's drift or step since)."""

_WINDOW: Final = 64  # samples kept: a minute or so of a busy client's answers
_FALLBACK: Final = 30.0  # seconds either way, before any sample (a server without Date)
_MARGIN: Final = 1.0  # seconds on both sides of a window, for rounding on the server's side
_SENDER_MARGIN: Final = 2.0  # likewise around another process's estimate of the server's time
_DOUBT: Final = 64  # samples of a kind an implausible one casts doubt over


def row_stamp(value: object, *, now: float) -> int | None:
    """A row's ``enqueued_at`` as a server time that can be believed, or ``None``.

    Believed: an ``int`` (the spec's "integer (Unix seconds)"), not before `EARLIEST`
    and not more than `MAX_SKEW` after ``now`` (our clock). A row may be old, so there is
    no bound on how far behind ``now`` it is.
    """
    return value if type(value) is int and EARLIEST <= value <= now + MAX_SKEW else None


def _whole(low: float, high: float) -> tuple[int, int]:
    """The whole server seconds from ``low`` to ``high``, both included."""
    return math.floor(low), math.ceil(high)


@dataclass(frozen=True, slots=True)
class Span:
    """When a request was in flight, on our clock: from ``start`` until its answer was given
    up on (or could no longer arrive) at ``end``; ``server_start``, when it left on the server's
    clock as the process that sent it estimated (a gone client's request; ``None``: our own).
    """

    start: float
    end: float
    server_start: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """Where a request's rows may carry ``enqueued_at``, in server seconds, both ends included:
    the narrow window (``low``, ``high``) and the reach (``reach_low``, ``reach_high``; infinite
    when unbounded); ``basis`` says what the narrow window rests on (for errors and logs).
    """

    low: int
    high: int
    reach_low: float
    reach_high: float
    basis: str

    def holds(self, stamp: int) -> bool:
        """Whether a row stamped ``stamp`` may be the request's, by the best estimate."""
        return self.low <= stamp <= self.high

    def reaches(self, stamp: int) -> bool:
        """Whether a row stamped ``stamp`` could be the request's if the estimate is wrong."""
        return self.reach_low <= stamp <= self.reach_high


class _Estimate:
    """Samples of one kind: the intersection (``low``, ``high``) of the recent ones' bounds,
    ``agreeing`` since it started again; ``seen``, all, doubted until ``doubted_until``."""

    def __init__(self) -> None:
        self._bounds: deque[tuple[float, float]] = deque(maxlen=_WINDOW)
        self.low, self.high = -math.inf, math.inf
        self.agreeing = self.seen = self.doubted_until = 0

    @property
    def doubtful(self) -> bool:
        return self.seen < self.doubted_until

    def sample(self, stamp: float, sent: float, received: float) -> None:
        """Take a server time written between ``sent`` and ``received`` (our clock)."""
        self.seen += 1
        if not (stamp >= EARLIEST and sent - MAX_SKEW <= stamp <= received + MAX_SKEW):
            self.doubted_until = self.seen + _DOUBT
            return
        # The server's clock read somewhere in [stamp, stamp + 1) while ours read somewhere
        # in [sent, received]: the offset lies in (stamp - received, stamp + 1 - sent).
        low, high = stamp - received, stamp + 1.0 - sent
        bounds = self._bounds
        dropped = bounds[0] if len(bounds) == bounds.maxlen else None
        bounds.append((low, high))
        if dropped is not None and (dropped[0] >= self.low or dropped[1] <= self.high):
            # The sample that left may have held a bound: take them again (rare).
            self.low, self.high = max(b[0] for b in bounds), min(b[1] for b in bounds)
        else:  # every answer: kept up as they come, not taken again over the window
            self.low, self.high = max(self.low, low), min(self.high, high)
        if self.low > self.high:  # the samples disagree: the clock moved
            self._bounds = deque([(low, high)], maxlen=_WINDOW)
            self.low, self.high, self.agreeing = low, high, 0
        self.agreeing += 1


class ServerClock:
    """An interval estimate of the server clock's offset from ours (``time.time()``), with
    how far it can be believed (see the module docstring)."""

    def __init__(self) -> None:
        self._dates = _Estimate()
        self._rows = _Estimate()
        self._last_header: str | None = None
        self._last_stamp = math.nan

    @property
    def known(self) -> bool:
        """Whether any plausible sample was taken (else windows rest on our clock alone)."""
        return self._best() is not None

    @property
    def doubtful(self) -> bool:
        """Whether a recent ``Date`` header, or a recent stamp of our own job, was absurd."""
        return self._dates.doubtful or self._rows.doubtful

    @property
    def verified(self) -> bool:
        """Whether two or more of our own jobs' stamps agree, and none recent was absurd."""
        return self._rows.agreeing >= 2 and not self._rows.doubtful

    def server_time(self, at: float) -> float | None:
        """The server's clock when ours read ``at``, by the best estimate; ``None`` if none."""
        estimate = self._best()
        return None if estimate is None else at + (estimate.low + estimate.high) / 2

    def observe_date(self, header: str | None, *, sent: float, received: float) -> None:
        """Take a ``Date`` header of an answer to a request sent at ``sent`` (our clock)
        and answered at ``received``."""
        if header != self._last_header:  # the same second's header repeats: parse it once
            try:
                stamp = email.utils.parsedate_to_datetime(header or "").timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                stamp = math.nan
            self._last_header, self._last_stamp = header, stamp
        if math.isfinite(self._last_stamp):  # else a broken header, no evidence on the clock
            self._dates.sample(self._last_stamp, sent, received)

    def observe_row_stamp(self, stamp: object, *, sent: float, received: float) -> None:
        """Take the ``enqueued_at`` of a row of a job this client created, by a request sent
        at ``sent`` and answered at ``received`` (our clock)."""
        self._rows.sample(stamp if type(stamp) is int else math.nan, sent, received)

    def window(self, span: Span) -> Window:
        """Where the rows of a request in flight during ``span`` may show (see the module)."""
        estimate = self._best()
        if estimate is None:
            low, high, basis = -_FALLBACK, _FALLBACK, "our clock alone (no Date header yet)"
        else:
            low, high = estimate.low, estimate.high
            basis = "our own jobs' stamps" if estimate is self._rows else "Date headers"
        ours = _whole(span.start - _MARGIN, span.end + _MARGIN)
        narrow = _whole(span.start + low - _MARGIN, span.end + high + _MARGIN)
        regions = [narrow, ours]
        if span.server_start is not None:
            # Another process's request: its own estimate, unverifiable from here.
            start, length = span.server_start, span.end - span.start
            narrow = _whole(start - _SENDER_MARGIN, start + length + _SENDER_MARGIN)
            regions.append(narrow)
            basis = "its sender's estimate of the server's clock"
        if span.server_start is None and self.verified:
            reach, regions = TOLERANCE, [narrow]
        else:
            reach = math.inf if estimate is None or self.doubtful else MAX_SKEW
            if self.doubtful:
                basis += ", in doubt (an absurd server time was seen)"
        low_reach = min(r[0] for r in regions) - reach
        return Window(*narrow, low_reach, max(r[1] for r in regions) + reach, basis)

    def _best(self) -> _Estimate | None:
        """Our own jobs' stamps (the rows' own clock), else ``Date`` headers, else none."""
        if self._rows.agreeing:
            return self._rows
        return self._dates if self._dates.agreeing else None
