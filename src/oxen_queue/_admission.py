"""Client-side admission control: how many requests fly at once, and how fast jobs are enqueued.

Two mechanisms, both local to one client:

* A concurrency bound on every request, so a burst of 10,000 ``enqueue()`` calls waits here,
  in order, rather than failing with pool timeouts inside httpx.
* An adaptive enqueue rate, additive increase and multiplicative decrease (AIMD): unlimited
  until the server refuses a real share of enqueues with 429, then cut in proportion to that
  share, raised again while it stays low, and unlimited once far above what the server took.
  A large batch settles at what the server accepts instead of hammering it, and a stray 429
  does not collapse it (see :class:`EnqueueRate`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["AdmissionControl", "EnqueueRate"]


class EnqueueRate:
    """AIMD pacing of enqueues. Pure bookkeeping: the clock is passed in.

    The answers of the last ``window`` seconds are judged together. A share of 429s up to
    ``tolerance`` is noise (a server refusing one enqueue in twenty is not asking for a
    slower client). Above it:

    * while the rate is unlimited, it becomes half of what was achieved (at least
      ``min_refusals`` refusals are needed to conclude there is a limit at all);
    * otherwise, once per window, it falls to what was achieved times
      ``1 - refused_share / 2``, so a server refusing half the enqueues halves it.

    A window at or below the tolerance raises the rate by ``increase`` per second, or by
    ``growth`` of itself per second when that is more, and it is lifted altogether once far
    above anything the server pushed back on.

    Attributes:
        rate: Enqueues per second allowed now; ``math.inf`` when unlimited.
    """

    def __init__(
        self,
        *,
        window: float = 1.0,
        tolerance: float = 0.1,
        min_refusals: int = 3,
        increase: float = 5.0,
        growth: float = 0.25,
        min_rate: float = 1.0,
    ) -> None:
        self.rate = math.inf
        self.window = window
        self.tolerance = tolerance
        self.min_refusals = min_refusals
        self.increase = increase
        self.growth = growth
        self.min_rate = min_rate
        self._next_slot = -math.inf
        self._judged = -math.inf
        self._peak = 0.0
        self._sent: deque[float] = deque()
        self._answers: deque[tuple[float, bool]] = deque()  # (when, refused)

    def delay(self, now: float) -> float:
        """Reserve the next slot: seconds to wait before sending one enqueue."""
        self._sent.append(now)
        if math.isinf(self.rate):
            return 0.0
        start = max(now, self._next_slot)
        self._next_slot = start + 1.0 / self.rate
        return start - now

    def achieved(self, now: float) -> float:
        """Enqueues sent over the last ``window``, per second of the window."""
        self._trim(now)
        return len(self._sent) / self.window

    def on_rate_limited(self, now: float) -> None:
        """An enqueue was refused with 429."""
        self._answers.append((now, True))
        self._judge(now)

    def on_accepted(self, now: float) -> None:
        """An enqueue went through."""
        self._answers.append((now, False))
        self._judge(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._sent and self._sent[0] < horizon:
            self._sent.popleft()
        while self._answers and self._answers[0][0] < horizon:
            self._answers.popleft()

    def _judge(self, now: float) -> None:
        self._trim(now)
        # Only answers since the last judgment: refusals already acted on count once.
        answers = [refused for when, refused in self._answers if when > self._judged]
        refused = sum(answers)
        share = refused / len(answers) if answers else 0.0
        limited = share > self.tolerance
        if math.isinf(self.rate):
            if limited and refused >= self.min_refusals:
                achieved = self.achieved(now)
                self._peak = max(self._peak, achieved)
                self.rate = max(self.min_rate, achieved / 2)
                self._judged = now
            return
        elapsed = now - self._judged
        if elapsed < self.window:
            return
        if limited:
            achieved = self.achieved(now)
            self._peak = max(self._peak, achieved)
            base = min(self.rate, achieved) if achieved else self.rate
            self.rate = max(self.min_rate, base * (1 - share / 2))
        else:
            self.rate += max(self.increase, self.growth * self.rate) * min(elapsed, 2 * self.window)
            if self.rate > max(4 * self._peak, 100.0):
                self.rate = math.inf
        self._judged = now


class AdmissionControl:
    """The concurrency bound and the enqueue pacer of one client."""

    def __init__(self, *, max_concurrency: int) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.enqueue_rate = EnqueueRate()
        self._limiter: anyio.CapacityLimiter | None = None
        self._pacer: anyio.Lock | None = None

    @property
    def pacer(self) -> anyio.Lock:
        if self._pacer is None:
            self._pacer = anyio.Lock()
        return self._pacer

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use: anyio primitives need a running event loop to be made.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        return self._limiter

    @asynccontextmanager
    async def slot(self, *, enqueue: bool) -> AsyncIterator[None]:
        """Hold one of the bounded request slots; enqueues are paced first.

        Enqueues pass the pacer one at a time and keep it until they hold a request slot, so
        none queues between the two: each is sent at the rate current when it goes, and a
        429 slows down every enqueue not yet sent, not only those that had not yet arrived.
        """
        if not enqueue:
            async with self.limiter:
                yield
            return
        async with self.pacer:
            wait = self.enqueue_rate.delay(anyio.current_time())
            if wait > 0:
                await anyio.sleep(wait)
            await self.limiter.acquire()
        try:
            yield
        finally:
            self.limiter.release()

    def observe(self, status_code: int, *, enqueue: bool) -> None:
        """Feed an enqueue's answer to the pacer."""
        if not enqueue:
            return
        now = anyio.current_time()
        if status_code == 429:
            self.enqueue_rate.on_rate_limited(now)
        elif status_code < 400:
            self.enqueue_rate.on_accepted(now)
