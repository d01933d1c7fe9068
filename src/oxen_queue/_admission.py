"""Client-side admission control: how many requests fly at once, and how fast jobs are enqueued.

Three mechanisms, all local to one client:

* A bound on the requests in flight, so a burst of 10,000 ``enqueue()`` calls waits here,
  in order, rather than failing with pool timeouts inside httpx.
* An adaptive enqueue rate, additive increase and multiplicative decrease (AIMD): unlimited
  until the server refuses a real share of enqueues with 429, then cut in proportion to that
  share, raised again while it stays low, and unlimited once far above what the server took.
  A large batch settles at what the server accepts instead of hammering it, and a stray 429
  does not collapse it (see :class:`EnqueueRate`).
* That bound adapts by default (:class:`InflightLimit`, TCP Vegas-style), so a distant hub
  gets as many requests in flight as its round trip needs and no more than the client's CPU
  or the server can turn around; ``max_concurrency=N`` fixes it instead.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

__all__ = ["AdmissionControl", "EnqueueRate", "InflightLimit", "Slot"]

# Clock resolution: a request sent in the same tick as a change of limit counts as sent after it.
_TICK = 1e-6


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
        # Answers of the window given since the last judgment, and how many were refused:
        # kept as counts, so judging costs the same however many answers the window holds.
        self._fresh = 0
        self._fresh_refused = 0

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
        self._answer(now, refused=True)

    def on_accepted(self, now: float) -> None:
        """An enqueue went through."""
        self._answer(now, refused=False)

    def _answer(self, now: float, *, refused: bool) -> None:
        self._answers.append((now, refused))
        # Only answers since the last judgment count: refusals already acted on count once.
        if now > self._judged:
            self._fresh += 1
            self._fresh_refused += refused
        self._judge(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._sent and self._sent[0] < horizon:
            self._sent.popleft()
        while self._answers and self._answers[0][0] < horizon:
            when, refused = self._answers.popleft()
            if when > self._judged:
                self._fresh -= 1
                self._fresh_refused -= refused

    def _judged_at(self, now: float) -> None:
        self._judged = now
        self._fresh = self._fresh_refused = 0

    def _judge(self, now: float) -> None:
        self._trim(now)
        refused = self._fresh_refused
        share = refused / self._fresh if self._fresh else 0.0
        limited = share > self.tolerance
        if math.isinf(self.rate):
            if limited and refused >= self.min_refusals:
                achieved = self.achieved(now)
                self._peak = max(self._peak, achieved)
                self.rate = max(self.min_rate, achieved / 2)
                self._judged_at(now)
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
        self._judged_at(now)


class InflightLimit:
    """An adaptive bound on requests in flight, after TCP Vegas and Netflix's concurrency-limits.

    Pure bookkeeping: the caller times each request (from the moment it holds a slot to its
    answer, so time spent waiting for the client's own busy event loop counts) and passes the
    clock in. A distant hub needs ``throughput * round trip`` requests in flight; more than
    the client's CPU or the server can turn around only queue, and queueing shows up as
    latency above ``rtt_min``, the lowest latency of the last ``window`` seconds. So, once
    per round (half a limit's worth of answers to requests sent since the last change), the
    round's lowest latency ``rtt`` gives the delay added by queueing, ``rtt - rtt_min``,
    which is compared with the delay tolerated, ``max(tolerance * rtt_min, slack)``. The
    lowest, as Linux's TCP Vegas takes the lowest round trip of the last round: a standing
    queue delays every request, the quickest too, while answers that arrive in a burst
    wait for the client to process the ones before them, and a limit that grows opens
    connections whose handshakes add two or three round trips to their first answers. At
    80 ms those two made the round's median read as congestion, and the limit stopped
    growing at a third of what the path could carry.

    * below it, the limit grows: at first by one per answer while the round's quickest so
      far shows no queue (an answer delayed by a burst of others counts; one slower than
      twice ``rtt_min`` plus the tolerance, a new connection that paid its handshakes,
      does not), so doubling per round trip (slow start: a batch at 150 ms cannot wait for
      additive steps), then by ``growth`` of itself per round (at least ``sqrt(limit)``)
      once anything has been queued or refused;
    * above twice it, the limit moves ``smoothing`` of the way towards
      ``limit * (rtt_min + tolerated) / rtt``, the limit at which the current throughput
      would see the tolerated delay. Only part of the way: one slow round (a pause of the
      process, a burst of new connections paying their handshakes) must not halve it, while
      a standing queue still drains in a few;
    * in between, it holds.

    Why a tolerance in time rather than Vegas's few requests queued: a client's answers
    arrive in bursts, and each waits for the ones before it to be processed, so latency rises
    a few milliseconds with the limit long before the client is saturated (at 150 ms and 128
    in flight, about 12 % with a CPU a third busy; at 20 ms, more than that). Counting that
    as congestion would stop the limit far below what the client can do; a saturated client
    or server, whose queue grows without bound, still stops it.

    It grows only while the bound is actually used (at least half of it in flight during the
    round), so a quiet client keeps a small limit. Refusals (429, 503: the server saying
    "too much") are judged by their share, as the enqueue pacer judges 429s: once half a
    limit's worth of answers and refusals is in (at least ``refusal_window``), more than
    ``refusal_share`` of them refused cuts the limit by ``backoff`` and ends slow start. A
    stray refusal is noise: a hub that refuses a few percent of requests at random (the
    chaos suite's) once cut the limit per round trip, from 64 to 8 within two seconds.

    Args:
        initial: The limit to start from. Four times the old fixed default: at 150 ms every
            doubling opens connections that each pay their handshakes (three round trips to
            a first answer), so a cold batch of 2,000 loses a third of its speed starting
            at 16 and a fifth starting at 64; the limit falls within a round or two where
            64 is too many.
        min_limit: The floor: never fewer requests in flight allowed.
        max_limit: The ceiling; the HTTP pool must hold this many connections (HTTP/1.1).
        window: Seconds over which ``rtt_min`` is remembered (one to two windows), so a path
            that became slower for good is learned within a minute.
        backoff: Factor applied to the limit when too many are refused.
        refusal_share: Share of refused requests, over a window, that cuts the limit.
        refusal_window: The fewest answers and refusals a share is judged over.
        growth: Share of the limit added per uncongested round after slow start.
        smoothing: Share of the way towards the draining limit taken per congested round.
        tolerance: Queueing delay tolerated, as a share of ``rtt_min``.
        slack: Queueing delay always tolerated, seconds (what a burst of answers costs a
            client to process, which matters most when the round trip is short).
    """

    def __init__(
        self,
        *,
        initial: int = 64,
        min_limit: int = 4,
        max_limit: int = 256,
        window: float = 30.0,
        backoff: float = 0.9,
        growth: float = 0.25,
        smoothing: float = 0.5,
        tolerance: float = 0.25,
        slack: float = 0.01,
        refusal_share: float = 0.1,
        refusal_window: int = 10,
    ) -> None:
        if not 1 <= min_limit <= initial <= max_limit:
            raise ValueError("need 1 <= min_limit <= initial <= max_limit")
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.window = window
        self.backoff = backoff
        self.growth = growth
        self.smoothing = smoothing
        self.tolerance = tolerance
        self.slack = slack
        self.refusal_share = refusal_share
        self.refusal_window = refusal_window
        self._limit = float(initial)
        self._slow_start = True
        # Two buckets of the minimum: the current window's and the previous one's, so the
        # floor forgets a faster past within two windows without keeping every sample.
        self._min_now = math.inf
        self._min_before = math.inf
        self._bucket_start: float | None = None
        self._round_start = -math.inf
        self._round: list[float] = []
        self._round_peak = 0
        self._round_fastest = math.inf  # the quickest answer since the round began
        # Outcomes since refusals were last judged: answers and refusals.
        self._answered = 0
        self._refused = 0

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return int(self._limit)

    @property
    def rtt_min(self) -> float:
        """The lowest latency seen over the last one or two windows, seconds."""
        return min(self._min_now, self._min_before)

    def on_sample(self, rtt: float, now: float, *, in_flight: int) -> None:
        """A request was answered (not refused) ``rtt`` seconds after it got its slot.

        Args:
            rtt: Seconds from holding a slot to the answer.
            now: The clock when it was answered (any monotonic clock, seconds).
            in_flight: Requests in flight when it was answered, itself included, and those
                waiting for a slot: how much of the bound is in use.
        """
        self._track_min(rtt, now)
        self._answered += 1
        if self._judge_refusals(now):
            return
        self._round_fastest = min(self._round_fastest, rtt)
        tolerated = self._tolerated()
        if (
            self._slow_start
            and in_flight * 2 >= self._limit
            and self._round_fastest - self.rtt_min < tolerated
            and rtt < 2 * (self.rtt_min + tolerated)
        ):
            # Slow start grows by one per prompt answer, as TCP's does per ACK: doubling
            # every round trip, not every round (which waits for answers to requests sent
            # after the change, and so takes two).
            self._limit = min(float(self.max_limit), self._limit + 1)
        if now - rtt < self._round_start - _TICK:
            return  # sent before the last change: it says nothing about the new limit
        self._round.append(rtt)
        self._round_peak = max(self._round_peak, in_flight)
        full = len(self._round) * 2 >= self._limit
        # A client sending little fills no round: judge it on time instead, so it still
        # backs off when latency rises (before the first change there is no round to time).
        late = math.isfinite(self._round_start) and now - self._round_start >= 4 * self.rtt_min
        if full or late:
            self._judge(now)

    def on_refused(self, now: float) -> None:
        """The server refused a request as too much (429, 503): counted towards a cut."""
        self._refused += 1
        self._judge_refusals(now)

    def _judge_refusals(self, now: float) -> bool:
        """Cut the limit if too many of the latest outcomes were refusals; whether it was."""
        outcomes = self._answered + self._refused
        if outcomes < max(self._limit / 2, self.refusal_window):
            return False
        refused, self._answered, self._refused = self._refused, 0, 0
        if refused <= outcomes * self.refusal_share:
            return False
        self._slow_start = False
        self._limit = max(float(self.min_limit), self._limit * self.backoff)
        self._new_round(now)
        return True

    def _track_min(self, rtt: float, now: float) -> None:
        if self._bucket_start is None:
            self._bucket_start = now
        elif now - self._bucket_start >= self.window:
            self._min_before, self._min_now = self._min_now, math.inf
            self._bucket_start = now
        self._min_now = min(self._min_now, rtt)

    def _judge(self, now: float) -> None:
        limit = self._limit
        rtt = min(self._round)
        floor = self.rtt_min
        tolerated = self._tolerated()
        delay = rtt - floor
        if delay > 2 * tolerated:
            self._slow_start = False
            target = limit * (floor + tolerated) / rtt
            limit -= (limit - target) * self.smoothing
        elif delay >= tolerated:
            self._slow_start = False
        elif not self._slow_start and self._round_peak * 2 >= limit:
            limit += max(math.sqrt(limit), limit * self.growth)
        self._limit = min(float(self.max_limit), max(float(self.min_limit), limit))
        self._new_round(now)

    def _tolerated(self) -> float:
        return max(self.tolerance * self.rtt_min, self.slack)

    def _new_round(self, now: float) -> None:
        self._round_start = now
        self._round = []
        self._round_peak = 0
        self._round_fastest = math.inf


class Slot:
    """One request's hold on the bound, while it lasts."""

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused = False
        """The server refused it as too much (429, 503): no latency sample."""


class AdmissionControl:
    """The concurrency bound and the enqueue pacer of one client.

    Args:
        max_concurrency: Requests in flight allowed, fixed; ``None``: an adaptive bound,
            ``inflight`` or a default :class:`InflightLimit`. Ignored when ``inflight`` is
            given.
        inflight: An adaptive bound to follow. Every slot held and released without an
            exception, and sampled, is a latency sample; every 429 or 503 seen by
            :meth:`observe` is a refusal; the limiter's capacity follows
            :attr:`InflightLimit.limit` after each.
        clock: Seconds on a monotonic clock (tests pass their own). ``time.monotonic``, not
            anyio's: asking anyio which event loop runs costs more than the clock itself,
            and this is read a few times per request.
    """

    def __init__(
        self,
        *,
        max_concurrency: int | None,
        inflight: InflightLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency is None and inflight is None:
            inflight = InflightLimit()
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None: adaptive)")
        self.max_concurrency = max_concurrency
        self.enqueue_rate = EnqueueRate()
        self.inflight = inflight
        self._clock = clock
        self._limiter: anyio.CapacityLimiter | None = None
        self._waiting = 0  # tasks in the limiter's own acquire()
        self._held = 0  # enqueues held back while the first wave is heard out
        self._pacer: anyio.Lock | None = None
        # The first wave of enqueues (those sent before any was answered): how many, how many
        # answered so far, and what later ones wait for meanwhile (see slot()).
        self._wave_sent = 0
        self._wave_answered = 0
        self._wave_over: anyio.Event | None = None
        self._wave_started = 0.0  # the first one sent
        self._wave_first_answer = 0.0
        self._wave_done = False

    @property
    def bound(self) -> int:
        """Requests allowed in flight now: the adaptive limit, or ``max_concurrency``."""
        if self.inflight is not None:
            return self.inflight.limit
        assert self.max_concurrency is not None
        return self.max_concurrency

    @property
    def max_bound(self) -> int:
        """The most requests that may ever be in flight (what the connection pool must hold)."""
        if self.inflight is not None:
            return self.inflight.max_limit
        assert self.max_concurrency is not None
        return self.max_concurrency

    @property
    def pacer(self) -> anyio.Lock:
        if self._pacer is None:
            self._pacer = anyio.Lock()
        return self._pacer

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use: anyio primitives need a running event loop to be made.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.bound)
        return self._limiter

    @asynccontextmanager
    async def slot(self, *, enqueue: bool, sample: bool = True) -> AsyncIterator[Slot]:
        """Hold one of the bounded request slots; enqueues are paced first.

        While the enqueue rate is limited, enqueues pass the pacer one at a time and keep it
        until they hold a request slot, so none queues between the two: each is sent at the
        rate current when it goes, and a 429 slows down every enqueue not yet sent. While it
        is unlimited they skip the pacer (passing it takes a turn of the event loop each,
        which capped a distant hub's throughput), and one that waited for its slot while the
        rate was cut gives the slot back and is paced: so a cut still reaches every enqueue
        not yet sent.

        The first wave of enqueues (those sent before the first answer) is heard out before
        any more is sent. A server limiting enqueues with a token bucket takes the first ones
        up to its burst and refuses the rest, and answers in order: the takes arrive first.
        Sending on with each answer (as later ones do) would put a whole second wave into an
        empty bucket before the first refusal came back; heard out, the first wave's
        refusals set the pace of everything after it. It costs the spread of the first
        wave's answers, once per client, and never more than the first answer took: a
        straggler does not hold the rest back longer than that.

        Args:
            enqueue: The request creates jobs (``POST /api/ai/queue``): paced.
            sample: Its latency tells how loaded the path is (with an adaptive bound). Not
                for requests whose answer takes as long as the work (the blocking
                ``/images/generate``) or a download: they would read as congestion.
        """
        first_wave = False
        if enqueue:
            first_wave = await self._admit_enqueue()
        else:
            await self._acquire()
        started = self._clock()
        held = Slot()
        answered = False
        try:
            yield held
            answered = True
        finally:
            self.limiter.release()
            if first_wave:
                self._wave_answered += 1
                if self._wave_answered == 1:
                    self._wave_first_answer = self._clock()
                if self._wave_answered >= self._wave_sent:
                    self._end_wave()
            # A refusal was counted as one (observe()): its quick answer is no latency sample.
            if answered and sample and not held.refused and self.inflight is not None:
                now = self._clock()
                # In use: the requests in flight, and those waiting for a slot or held back
                # with the first wave (a bound that holds requests back is used to the full).
                busy = self.limiter.borrowed_tokens + 1 + self._waiting + self._held
                self.inflight.on_sample(now - started, now, in_flight=busy)
                self._follow()

    async def _acquire(self) -> None:
        limiter = self.limiter
        if not self._waiting:
            # A free slot is taken without a checkpoint (anyio's acquire() yields once even
            # then): the request's own I/O follows at once. Only while nobody waits: a slot
            # just released to a waiter that has not resumed yet looks free to a non-blocking
            # acquire, and anyio before 4.14 handed it out twice.
            try:
                limiter.acquire_nowait()
            except Exception as exc:
                # anyio's WouldBlock; anyio before 4.17 lets trio's own through on trio.
                if not isinstance(exc, anyio.WouldBlock) and type(exc).__name__ != "WouldBlock":
                    raise
            else:
                return
        self._waiting += 1
        try:
            await limiter.acquire()
        finally:
            self._waiting -= 1

    def _held_back(self) -> bool:
        """Whether the first wave of enqueues is being answered (none may be sent)."""
        return not self._wave_done and 0 < self._wave_answered < self._wave_sent

    def _end_wave(self) -> None:
        self._wave_done = True
        if self._wave_over is not None:
            self._wave_over.set()

    async def _hear_out_first_wave(self) -> None:
        if not self._held_back():
            return
        self._held += 1
        try:
            await self._hear_out()
        finally:
            self._held -= 1

    async def _hear_out(self) -> None:
        while self._held_back():
            if self._wave_over is None:
                self._wave_over = anyio.Event()
            # At most as long again as the first answer took: then the wave is over.
            patience = self._wave_first_answer - self._wave_started
            remaining = self._wave_first_answer + patience - self._clock()
            with anyio.move_on_after(remaining):
                await self._wave_over.wait()
            if self._held_back() and self._clock() >= self._wave_first_answer + patience:
                self._end_wave()

    async def _admit_enqueue(self) -> bool:
        """Wait for an enqueue's turn and slot; returns whether it belongs to the first wave."""
        rate = self.enqueue_rate
        while True:
            await self._hear_out_first_wave()
            if math.isinf(rate.rate) and not self.pacer.locked():
                await self._acquire()
                if math.isinf(rate.rate) and not self._held_back():
                    rate.delay(self._clock())  # counted as sent, for the rate achieved
                    return self._sent_enqueue()
                # The rate was cut, or the first wave began to be answered, while this one
                # waited for its slot: give it back, and wait or be paced.
                self.limiter.release()
                continue
            async with self.pacer:
                wait = rate.delay(self._clock())
                if wait > 0:
                    await anyio.sleep(wait)
                await self._acquire()
                if not self._held_back():
                    return self._sent_enqueue()
                self.limiter.release()

    def _sent_enqueue(self) -> bool:
        if self._wave_answered or self._wave_done:
            return False
        if not self._wave_sent:
            self._wave_started = self._clock()
        self._wave_sent += 1
        return True

    def observe(self, status_code: int, *, enqueue: bool, slot: Slot | None = None) -> None:
        """Feed an answer to the pacer (enqueues) and to the adaptive bound (refusals).

        Args:
            slot: The slot the request held, if it is still held: a refusal marks it so.
        """
        now = self._clock()
        if self.inflight is not None and status_code in (429, 503):
            self.inflight.on_refused(now)
            self._follow()
            if slot is not None:
                slot.refused = True
        if not enqueue:
            return
        if status_code == 429:
            self.enqueue_rate.on_rate_limited(now)
        elif status_code < 400:
            self.enqueue_rate.on_accepted(now)

    def _follow(self) -> None:
        assert self.inflight is not None
        limit = self.inflight.limit
        # Lowering the capacity takes no slot away: requests in flight finish, and no new
        # one starts until fewer than the new limit are in flight.
        if self._limiter is not None and self._limiter.total_tokens != limit:
            self._limiter.total_tokens = limit
