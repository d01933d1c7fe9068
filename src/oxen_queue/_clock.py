"""The server's clock, as seen from ours: an interval that holds the offset between them.

A lost enqueue answer is reconciled by looking for rows the request may have created, and a
row says when it was made on the *server's* clock (``enqueued_at``, whole seconds). Comparing
that with our own clock would need the two to agree; they need not (a server 45 s behind made
a fixed 30 s window resend billed jobs). So every answer tells us something about the offset
(``server time - our time``):

* its ``Date`` header (whole seconds) was written while the request was with the server,
  between the moment we sent it and the moment the answer arrived;
* a row of a job we created carries ``enqueued_at``, written between our request's start and
  its answer.

Each such sample bounds the offset from both sides; the bounds of recent samples intersect
into a narrow interval (within a round trip once a few seconds' worth of answers are in, as
the whole-second truncation falls at different fractions). If samples stop agreeing (the
server's clock was stepped), the estimate starts again from the newest one.
"""

from __future__ import annotations

import email.utils
import math
from collections import deque
from typing import Final

__all__ = ["ServerClock"]

_WINDOW: Final = 64  # samples kept: a minute or so of a busy client's answers
_FALLBACK: Final = 30.0  # seconds either way, before any sample (a server without Date)


class ServerClock:
    """An interval estimate of the server clock's offset from ours (``time.time()``).

    Attributes:
        samples: How many samples were taken (an estimate exists once it is above zero).
    """

    def __init__(self) -> None:
        self._bounds: deque[tuple[float, float]] = deque(maxlen=_WINDOW)
        self._low = -_FALLBACK
        self._high = _FALLBACK
        self._last_header = ""
        self._last_stamp = math.nan
        self.samples = 0

    @property
    def known(self) -> bool:
        """Whether any sample was taken (else the interval is a wide guess)."""
        return self.samples > 0

    @property
    def offset(self) -> tuple[float, float]:
        """The interval ``(low, high)`` that holds ``server time - our time``, in seconds."""
        return self._low, self._high

    def observe_date(self, header: str | None, *, sent: float, received: float) -> None:
        """Take a ``Date`` header of an answer to a request sent at ``sent`` (our clock)
        and answered at ``received``."""
        if not header:
            return
        if header != self._last_header:  # the same second's header repeats: parse it once
            try:
                stamp = email.utils.parsedate_to_datetime(header).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return
            self._last_header, self._last_stamp = header, stamp
        if math.isfinite(self._last_stamp):
            self.observe_stamp(self._last_stamp, sent=sent, received=received)

    def observe_stamp(self, stamp: float, *, sent: float, received: float) -> None:
        """Take a whole-second server time written between ``sent`` and ``received``.

        The server's clock read somewhere in ``[stamp, stamp + 1)`` while ours read somewhere
        in ``[sent, received]``: the offset lies in ``(stamp - received, stamp + 1 - sent)``.
        """
        low, high = stamp - received, stamp + 1.0 - sent
        if not (math.isfinite(low) and math.isfinite(high)) or high < low:
            return
        self.samples += 1
        bounds = self._bounds
        dropped = bounds[0] if len(bounds) == bounds.maxlen else None
        had = bool(bounds)
        bounds.append((low, high))
        if not had:
            new_low, new_high = low, high
        elif dropped is not None and (dropped[0] >= self._low or dropped[1] <= self._high):
            # The sample that left may have held a bound: take them again (rare).
            new_low = max(b[0] for b in bounds)
            new_high = min(b[1] for b in bounds)
        else:  # every answer: kept up as they come, not taken again over the window
            new_low, new_high = max(self._low, low), min(self._high, high)
        if new_low > new_high:  # the samples disagree: the server's clock moved
            self._bounds.clear()
            self._bounds.append((low, high))
            new_low, new_high = low, high
        self._low, self._high = new_low, new_high

    def server_window(self, start: float, end: float, *, margin: float = 1.0) -> tuple[int, int]:
        """Whole server seconds a row made between ``start`` and ``end`` (our clock) may show.

        Args:
            start: When the request left (our clock).
            end: When its answer was given up on (our clock).
            margin: Seconds added on both sides, for rounding on the server's side.

        Returns:
            The first and last ``enqueued_at`` values such a row may carry.
        """
        return (
            math.floor(start + self._low - margin),
            math.ceil(end + self._high + margin),
        )
