"""The server's clock, as seen from ours, and how far its evidence can be believed.

A lost enqueue answer is reconciled by looking for rows the request may have created, and a
row says when it was made on the *server's* clock (``enqueued_at``, whole seconds). Comparing
that with our own clock would need the two to agree; they need not (a server 45 s behind made
a fixed 30 s window resend billed jobs). So answers teach us the offset
(``server time - our time``), from two kinds of sample:

* an answer's ``Date`` header (whole seconds), written while the request was with the server,
  between the moment we sent it and the moment the answer arrived;
* the ``enqueued_at`` of a row of a job *this client created* (its send and answer times are
  noted), written between our request's start and its answer. This is the rows' own clock,
  the one that matters; the ``Date`` header may come from another machine (a proxy, a web
  tier) and only stands in for it.

Each sample bounds the offset from both sides; the bounds of recent samples of one kind
intersect into a narrow interval. If samples stop agreeing (a clock was stepped), that
estimate starts again from the newest sample.

**What is evidence.** A server time is a *plausible* sample when it is a finite number no
earlier than `EARLIEST` (2020-01-01) and within `MAX_SKEW` (a day) of our clock
when it was written; a row's stamp must also be an ``int`` (not a float, a string, a bool or
null). Anything else is no evidence, and it casts *doubt*: a ``Date`` header decades off (or in
year 9999), or a row of our own job stamped null, negative or in year 9999, says the server's
clock cannot be relied on, for the next `_DOUBT` samples of that kind. (An unparseable
``Date`` header is only ignored: it is a broken header, not a broken clock.)

**Windows** (`ServerClock.window`). A request's rows may show in two ranges of server
seconds:

* the *narrow* window, where its rows are expected by the best estimate (our own jobs' stamps,
  else ``Date`` headers, else our clock give or take `_FALLBACK`). Rows there are its
  candidates (and may be adopted when they can be told apart).
* the *reach*, where its rows could be if the estimate were wrong: the narrow window, and our
  own clock's window, widened by `TOLERANCE` when the estimate is *verified* (two or more
  of our own jobs' stamps agree, none doubtful), by `MAX_SKEW` when it rests on
  ``Date`` headers or a single stamp, and without end when there is no evidence at all or
  there is doubt. A matching row in the reach forbids concluding that the request made
  nothing: it is never sent again on such a look (see `_reconcile`).

A server whose ``Date`` and ``enqueued_at`` agree with each other, even hours off ours, gets an
exact narrow window from either. One whose ``Date`` is off while its rows are true (or the
reverse: a time-zone bug in one of them) gets a narrow window that misses the rows, but they
are in the reach: ambiguous, never resent; once two of our own jobs' rows are seen, their
stamps verify the rows' clock and the window is exact again.
"""

from __future__ import annotations

import email.utils
import math
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["EARLIEST", "MAX_SKEW", "TOLERANCE", "ServerClock", "Span", "Window", "row_stamp"]

EARLIEST: Final = 1_577_836_800
"""2020-01-01T00:00:00Z: no server time before it is believed (the API is younger)."""
MAX_SKEW: Final = 86_400.0
"""Seconds: the farthest a server time may be from ours and still be evidence (a day: any
time-zone mistake on either side, a client's clock set wrong by hours)."""
TOLERANCE: Final = 60.0
"""Seconds the reach extends a window verified by our own jobs' stamps (a clock's drift or
step since they were taken)."""

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
    if type(value) is int and EARLIEST <= value <= now + MAX_SKEW:
        return value
    return None


def _whole(low: float, high: float) -> tuple[int, int]:
    """The whole server seconds from ``low`` to ``high``, both included."""
    return math.floor(low), math.ceil(high)


def _plausible(stamp: float, sent: float, received: float) -> bool:
    """Whether a server time written between ``sent`` and ``received`` is evidence."""
    return stamp >= EARLIEST and sent - MAX_SKEW <= stamp <= received + MAX_SKEW


@dataclass(frozen=True, slots=True)
class Span:
    """When a request was in flight, on our clock.

    Attributes:
        start: When it left.
        end: When its answer was given up on (or could no longer arrive).
        server_start: When it left on the server's clock, as the process that sent it
            estimated (a gone client's request, from the ledger); ``None`` for our own.
    """

    start: float
    end: float
    server_start: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """Where a request's rows may carry ``enqueued_at`` (see the module docstring).

    Attributes:
        low: The narrow window's first server second.
        high: Its last.
        reach_low: The reach's first server second (``-inf``: no bound).
        reach_high: Its last (``inf``: no bound).
        basis: What the narrow window rests on, in a few words (for errors and logs).
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
    """The intersection of recent samples' bounds on the offset; it starts again from the
    newest sample when they disagree.

    Attributes:
        low: The interval's lower end (meaningless while ``agreeing`` is 0).
        high: Its upper end.
        agreeing: Samples taken since the estimate last started again.
    """

    __slots__ = ("_bounds", "agreeing", "high", "low")

    def __init__(self) -> None:
        self._bounds: deque[tuple[float, float]] = deque(maxlen=_WINDOW)
        self.low = -math.inf
        self.high = math.inf
        self.agreeing = 0

    def add(self, low: float, high: float) -> None:
        bounds = self._bounds
        dropped = bounds[0] if len(bounds) == bounds.maxlen else None
        had = bool(bounds)
        bounds.append((low, high))
        if not had:
            new_low, new_high = low, high
        elif dropped is not None and (dropped[0] >= self.low or dropped[1] <= self.high):
            # The sample that left may have held a bound: take them again (rare).
            new_low = max(b[0] for b in bounds)
            new_high = min(b[1] for b in bounds)
        else:  # every answer: kept up as they come, not taken again over the window
            new_low, new_high = max(self.low, low), min(self.high, high)
        if new_low > new_high:  # the samples disagree: the clock moved
            bounds.clear()
            bounds.append((low, high))
            new_low, new_high = low, high
            self.agreeing = 0
        self.low, self.high = new_low, new_high
        self.agreeing += 1


class ServerClock:
    """An interval estimate of the server clock's offset from ours (``time.time()``), with
    how far it can be believed (see the module docstring)."""

    def __init__(self) -> None:
        self._dates = _Estimate()
        self._rows = _Estimate()
        self._last_header = ""
        self._last_stamp = math.nan
        self._dates_seen = 0
        self._dates_doubted_until = 0
        self._rows_seen = 0
        self._rows_doubted_until = 0

    @property
    def known(self) -> bool:
        """Whether any plausible sample was taken (else windows rest on our clock alone)."""
        return self._rows.agreeing > 0 or self._dates.agreeing > 0

    @property
    def doubtful(self) -> bool:
        """Whether a recent ``Date`` header, or a recent stamp of our own job, was absurd."""
        return (
            self._dates_seen < self._dates_doubted_until
            or self._rows_seen < self._rows_doubted_until
        )

    @property
    def verified(self) -> bool:
        """Whether our own jobs' stamps establish the rows' clock: two or more agree, and none
        of the recent ones was absurd."""
        return self._rows.agreeing >= 2 and self._rows_seen >= self._rows_doubted_until

    def server_time(self, at: float) -> float | None:
        """The server's clock when ours read ``at``, by the best estimate; ``None`` if none."""
        estimate = self._best()
        if estimate is None:
            return None
        return at + (estimate.low + estimate.high) / 2

    def observe_date(self, header: str | None, *, sent: float, received: float) -> None:
        """Take a ``Date`` header of an answer to a request sent at ``sent`` (our clock)
        and answered at ``received``."""
        if not header:
            return
        if header != self._last_header:  # the same second's header repeats: parse it once
            try:
                stamp = email.utils.parsedate_to_datetime(header).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                stamp = math.nan
            self._last_header, self._last_stamp = header, stamp
        stamp = self._last_stamp
        if not math.isfinite(stamp):
            return  # unparseable: a broken header, not evidence about the clock
        self._dates_seen += 1
        if not _plausible(stamp, sent, received):
            self._dates_doubted_until = self._dates_seen + _DOUBT
            return
        # The server's clock read somewhere in [stamp, stamp + 1) while ours read somewhere
        # in [sent, received]: the offset lies in (stamp - received, stamp + 1 - sent).
        self._dates.add(stamp - received, stamp + 1.0 - sent)

    def observe_row_stamp(self, stamp: object, *, sent: float, received: float) -> None:
        """Take the ``enqueued_at`` of a row of a job this client created, by a request sent
        at ``sent`` and answered at ``received`` (our clock)."""
        self._rows_seen += 1
        if type(stamp) is not int or not _plausible(stamp, sent, received):
            self._rows_doubted_until = self._rows_seen + _DOUBT
            return
        self._rows.add(stamp - received, stamp + 1.0 - sent)

    def window(self, span: Span) -> Window:
        """Where the rows of a request in flight during ``span`` may show (see the module).

        Args:
            span: When the request was in flight.

        Returns:
            The narrow window and the reach, in server seconds.
        """
        estimate = self._best()
        if estimate is None:
            low, high, basis = -_FALLBACK, _FALLBACK, "our clock alone (no Date header yet)"
        else:
            low, high = estimate.low, estimate.high
            basis = "our own jobs' stamps" if estimate is self._rows else "Date headers"
        ours = _whole(span.start - _MARGIN, span.end + _MARGIN)
        estimated = _whole(span.start + low - _MARGIN, span.end + high + _MARGIN)
        verified = self.verified and span.server_start is None
        if span.server_start is not None:
            # Another process's request: its own estimate, unverifiable from here.
            narrow = _whole(
                span.server_start - _SENDER_MARGIN,
                span.server_start + (span.end - span.start) + _SENDER_MARGIN,
            )
            basis = "its sender's estimate of the server's clock"
            regions = [narrow, estimated, ours]
        else:
            narrow = estimated
            regions = [narrow, ours]
        if verified:
            reach = TOLERANCE
            regions = [narrow]
        else:
            reach = math.inf if estimate is None or self.doubtful else MAX_SKEW
            if self.doubtful:
                basis += ", in doubt (an absurd server time was seen)"
        return Window(
            narrow[0],
            narrow[1],
            min(r[0] for r in regions) - reach,
            max(r[1] for r in regions) + reach,
            basis,
        )

    def _best(self) -> _Estimate | None:
        """Our own jobs' stamps (the rows' own clock), else ``Date`` headers, else none."""
        if self._rows.agreeing:
            return self._rows
        if self._dates.agreeing:
            return self._dates
        return None
