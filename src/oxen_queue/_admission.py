"""Client-side admission control: how many requests fly at once, and how fast jobs are enqueued.

Two mechanisms, both local to one client:

* A concurrency bound on every request, so a burst of 10,000 ``enqueue()`` calls waits here,
  in order, rather than failing with pool timeouts inside httpx.
* An adaptive enqueue rate, additive increase and multiplicative decrease (AIMD): unlimited
  until the server answers 429, then halved from the rate actually achieved, then raised by a
  few requests per second for every second without a 429, and unlimited again once it is
  well above what the server took. A large batch settles at what the server accepts instead of
  hammering it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio

__all__ = ["AdmissionControl", "EnqueueRate"]

_WINDOW: Final = 1.0  # seconds over which the achieved enqueue rate is measured


class EnqueueRate:
    """AIMD pacing of enqueues. Pure bookkeeping: the clock is passed in.

    Attributes:
        rate: Enqueues per second allowed now; ``math.inf`` when unlimited.
    """

    def __init__(
        self,
        *,
        decrease: float = 0.5,
        increase: float = 5.0,
        min_rate: float = 1.0,
        cooldown: float = 1.0,
    ) -> None:
        self.rate = math.inf
        self.decrease = decrease
        self.increase = increase
        self.min_rate = min_rate
        self.cooldown = cooldown
        self._next_slot = -math.inf
        self._last_cut = -math.inf
        self._last_update = -math.inf
        self._peak = 0.0
        self._sent: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Reserve the next slot: seconds to wait before sending one enqueue."""
        self._sent.append(now)
        if math.isinf(self.rate):
            return 0.0
        start = max(now, self._next_slot)
        self._next_slot = start + 1.0 / self.rate
        return start - now

    def on_rate_limited(self, now: float) -> None:
        """A 429 on an enqueue: cut the rate, once per cooldown (a burst is one signal)."""
        if now - self._last_cut < self.cooldown:
            return
        while self._sent and self._sent[0] < now - _WINDOW:
            self._sent.popleft()
        achieved = len(self._sent) / _WINDOW
        base = min(self.rate, achieved) if achieved else self.rate
        self._peak = max(self._peak, achieved)
        self.rate = max(self.min_rate, (base if math.isfinite(base) else 1.0) * self.decrease)
        self._last_cut = self._last_update = now

    def on_accepted(self, now: float) -> None:
        """An enqueue went through: raise the rate by ``increase`` per second since the last."""
        if math.isinf(self.rate):
            return
        elapsed = max(0.0, now - max(self._last_update, self._last_cut))
        self._last_update = now
        self.rate += self.increase * min(elapsed, 1.0)
        if self.rate > max(4 * self._peak, 100.0):
            self.rate = math.inf


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
