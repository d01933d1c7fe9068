"""Client-side admission control: how many requests fly at once, and how fast jobs are enqueued.

Two mechanisms, both local to one client, both reacting only to what the server does (Oxen
documents no rate limit, and no header that would announce one):

* A bound on the requests in flight, so a burst of 10,000 ``enqueue()`` calls waits here,
  in order, rather than failing with pool timeouts inside httpx. By default it adapts
  (`InflightLimit`, after TCP Vegas), so a distant hub gets as many requests in
  flight as its round trip needs and no more than the client's CPU or the server can turn
  around; ``max_concurrency=N`` fixes it instead.
* An adaptive enqueue rate, additive increase and multiplicative decrease
  (`EnqueueRate`): unlimited until the server refuses a real share of enqueues with
  429, then cut below what it accepted, raised again while refusals stay low, and lifted
  once far above what the server took. A large batch settles at what the server accepts
  instead of hammering it, and a stray 429 does not slow it.

A burst into a limit the client cannot know overshoots once: whatever is in flight when the
first refusals come back was sent at the old pace (TCP's slow start does the same). What
follows the first cut is paced.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

import anyio

__all__ = ["AdmissionControl", "EnqueueRate", "InflightLimit", "Slot"]

# Clock resolution: a request sent in the same tick as a change of limit counts as sent after it.
_TICK = 1e-6


class EnqueueRate:
    """AIMD pacing of enqueues, after TCP Reno. Pure bookkeeping: the clock is passed in.

    Refusals are judged by their share, counting only answers to enqueues sent since the rate
    last changed (one sent before left at the old pace, and its refusal was acted on then).
    A share up to ``tolerance`` is noise: a server refusing one enqueue in twenty at random
    is not asking for a slower client.

    Decrease, when more than ``tolerance`` are refused:

    * while the rate is unlimited, judged over the answers of the last ``window`` seconds
      (and only once at least ``min_refusals`` are refused, so that a few stray 429s among
      the first answers are not taken for a limit): the rate becomes half of what the
      server accepted per second over that window, or since it was first answered if that
      is more (over a ``window`` at least), as TCP halves its window when slow start ends.
      Half, since that span also holds whatever burst the server allowed at first;
    * otherwise, judged over everything since the last change, once it spans a ``window``
      and holds ``min_answers`` answers: the rate falls to what the server accepted per
      second since the change (at most the rate), times ``1 - share / 2`` (as DCTCP cuts by
      half the share of packets marked): below what the server took, by more the more it
      refused.

    The first judgment a window after a cut also corrects it: refusals answer faster than
    acceptances, so a cut may be made before the acceptances of the enqueues then in flight
    arrive; what the server took since the cut, those included, raises the ceiling and the
    rate (to half of it at least).

    What the server accepted at the last cut is the *ceiling*. Increase, on the same
    judgment with at most ``tolerance`` refused: below the ceiling, by ``growth`` of the
    rate per second (back quickly to what the server took, as slow start climbs back to its
    threshold); at or past it, by ``probe`` of the ceiling per second, a step more each
    judgment (probing for more, slowly at first, as CUBIC does past its last maximum). Past
    twice the ceiling without refusals beyond noise, the limit is gone: unlimited again.

    Attributes:
        rate: Enqueues per second allowed now; ``math.inf`` when unlimited.
    """

    def __init__(
        self,
        *,
        window: float = 1.0,
        tolerance: float = 0.1,
        min_refusals: int = 10,
        min_answers: int = 10,
        growth: float = 0.25,
        probe: float = 0.05,
        min_rate: float = 1.0,
    ) -> None:
        self.rate = math.inf
        self.window = window
        self.tolerance = tolerance
        self.min_refusals = min_refusals
        self.min_answers = min_answers
        self.growth = growth
        self.probe = probe
        self.min_rate = min_rate
        self._next_slot = -math.inf
        self._changed = -math.inf  # when the rate last changed (or was judged)
        self._since = math.inf  # when the current span began: the change, or the first answer
        self._accepted = 0  # answers accepted since then
        self._ceiling = math.inf  # what the server accepted, per second, at the last cut
        self._probes = 0  # judgments past the ceiling since
        self._just_cut = False  # no judgment since the last cut
        # Answers to enqueues sent since the change: how many, how many refused. While
        # unlimited, only those of the last window (_recent, to take them off again).
        self._fresh = 0
        self._fresh_refused = 0
        self._recent: deque[tuple[float, bool]] = deque()

    def delay(self, now: float) -> float:
        """Reserve the next slot: seconds to wait before sending one enqueue."""
        if math.isinf(self.rate):
            return 0.0
        start = max(now, self._next_slot)
        self._next_slot = start + 1.0 / self.rate
        return start - now

    def on_accepted(self, now: float, *, sent: float) -> None:
        """An enqueue sent at ``sent`` went through."""
        self._answer(now, sent=sent, refused=False)

    def on_rate_limited(self, now: float, *, sent: float) -> None:
        """An enqueue sent at ``sent`` was refused with 429."""
        self._answer(now, sent=sent, refused=True)

    def _answer(self, now: float, *, sent: float, refused: bool) -> None:
        self._since = min(self._since, now)
        self._accepted += not refused
        if sent <= self._changed:
            return  # left at the old pace: acted on already
        self._fresh += 1
        self._fresh_refused += refused
        if math.isinf(self.rate):
            recent = self._recent
            recent.append((now, refused))
            horizon = now - self.window
            while recent[0][0] < horizon:
                _, gone = recent.popleft()
                self._fresh -= 1
                self._fresh_refused -= gone
            self._judge_unlimited(now)
        else:
            self._judge_limited(now)

    def _accepted_rate(self, now: float) -> float:
        return self._accepted / max(self.window, now - self._since)

    def _judge_unlimited(self, now: float) -> None:
        refused = self._fresh_refused
        if refused < self.min_refusals or refused <= self.tolerance * self._fresh:
            return
        # Over the last window, or since the first answer when that says more: a client slow
        # to send (a busy machine) may see its first refusals more than a window after most
        # of its acceptances, and one that enqueued little for an hour then bursts averages
        # to nothing over the hour.
        recent = (self._fresh - refused) / self.window
        accepted = max(recent, self._accepted_rate(now))
        self.rate = max(self.min_rate, accepted / 2)
        self._cut(now, accepted)

    def _judge_limited(self, now: float) -> None:
        elapsed = now - self._changed
        if elapsed < self.window or not self._fresh:
            return
        accepted = self._accepted_rate(now)
        if self._just_cut:
            # What the server took since the cut counts the answers to enqueues sent before
            # it: a cut made while acceptances were still on their way (slower to answer
            # than refusals are) is corrected here, to half of what it took at least.
            self._just_cut = False
            self._ceiling = max(self._ceiling, accepted)
            self.rate = max(self.rate, accepted / 2)
        share = self._fresh_refused / self._fresh
        if share > self.tolerance:
            if self._fresh < self.min_answers:
                return  # too few to tell a limit from a stray refusal: wait for more
            base = min(self.rate, accepted) if accepted else self.rate
            self.rate = max(self.min_rate, base * (1 - share / 2))
            self._cut(now, accepted)
            return
        seconds = min(elapsed, 2 * self.window)
        if self.rate < self._ceiling:
            self.rate = min(self._ceiling, self.rate * (1 + self.growth * seconds))
        else:
            self._probes += 1
            self.rate += self.probe * self._probes * self._ceiling * seconds
        if self.rate > 2 * self._ceiling:
            self.rate = math.inf
        self._changed_at(now)

    def _cut(self, now: float, accepted: float) -> None:
        self._ceiling = max(self.min_rate, accepted)
        self._probes = 0
        self._just_cut = True
        self._changed_at(now)

    def _changed_at(self, now: float) -> None:
        self._changed = self._since = now
        self._accepted = self._fresh = self._fresh_refused = 0
        self._recent.clear()


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
    """One request's hold on the bound, from ``async with`` to its end.

    Made by `AdmissionControl.slot`. Entering waits for the request's turn (and, for a
    paced one, the enqueue rate); leaving gives the slot back and, for an answer that was
    neither a failure nor a refusal, feeds its latency to the adaptive bound.
    """

    __slots__ = ("_control", "paced", "refused", "sample", "started")

    def __init__(self, control: AdmissionControl, *, paced: bool, sample: bool) -> None:
        self._control = control
        self.paced = paced
        self.sample = sample
        self.started = 0.0
        """When the slot was taken (the control's clock): the request leaves then."""
        self.refused = False
        """The server refused it as too much (429, 503): no latency sample."""

    async def __aenter__(self) -> Slot:
        control = self._control
        if self.paced:
            await control._admit_paced()
        else:
            await control._acquire()
        self.started = control._clock()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._control._release(self, answered=exc_type is None)

    def observe(self, status_code: int) -> None:
        """The answer's status, while the slot is held: see `AdmissionControl.observe`."""
        self._control.observe(status_code, slot=self)


class AdmissionControl:
    """The concurrency bound and the enqueue pacer of one client.

    Args:
        max_concurrency: Requests in flight allowed, fixed; ``None``: an adaptive bound,
            ``inflight`` or a default `InflightLimit`. Ignored when ``inflight`` is
            given.
        inflight: An adaptive bound to follow. Every slot held and released without an
            exception, and sampled, is a latency sample; every 429 or 503 seen by
            `observe` is a refusal; the limiter's capacity follows
            `InflightLimit.limit` after each.
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
        self._pacer: anyio.Lock | None = None
        self._waiting = 0  # tasks in the limiter's own acquire()

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
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use: anyio primitives need a running event loop to be made.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.bound)
        return self._limiter

    def slot(self, *, paced: bool = False, sample: bool = True) -> Slot:
        """A hold on one of the bounded request slots, for ``async with``.

        A paced request (an enqueue) waits for the enqueue rate first. While the rate is
        limited, paced requests pass the pacer one at a time and keep it until they hold a
        request slot, so none queues between the two: each is sent at the rate current when
        it goes, and a cut slows down every one not yet sent. While it is unlimited they skip
        the pacer (passing it takes a turn of the event loop each, which capped a distant
        hub's throughput), and one that waited for its slot while the rate was cut gives the
        slot back and is paced.

        Args:
            paced: The request creates jobs (``POST /api/ai/queue``): paced, and its answer
                sets the pace.
            sample: Its latency tells how loaded the path is (with an adaptive bound). Not
                for requests whose answer takes as long as the work (the blocking
                ``/images/generate``): they would read as congestion.
        """
        return Slot(self, paced=paced, sample=sample)

    def observe(self, status_code: int, *, slot: Slot) -> None:
        """Feed an answer to the pacer (paced requests) and to the adaptive bound (refusals).

        A 429 or 503 marks ``slot`` refused, so its quick answer is no latency sample.
        """
        now = self._clock()
        if status_code in (429, 503):
            slot.refused = True
            if self.inflight is not None:
                self.inflight.on_refused(now)
                self._follow()
        if not slot.paced:
            return
        if status_code == 429:
            self.enqueue_rate.on_rate_limited(now, sent=slot.started)
        elif status_code < 400:
            self.enqueue_rate.on_accepted(now, sent=slot.started)

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

    async def _admit_paced(self) -> None:
        rate = self.enqueue_rate
        if self._pacer is None:
            self._pacer = anyio.Lock()
        pacer = self._pacer
        while math.isinf(rate.rate) and not pacer.locked():
            await self._acquire()
            if math.isinf(rate.rate):
                return
            # The rate was cut while this one waited for its slot: give it back, be paced.
            self.limiter.release()
        async with pacer:
            wait = rate.delay(self._clock())
            if wait > 0:
                await anyio.sleep(wait)
            await self._acquire()

    def _release(self, slot: Slot, *, answered: bool) -> None:
        self.limiter.release()
        # A failed request says nothing of the path's load, and a refusal was counted as
        # one (observe()).
        if answered and slot.sample and not slot.refused and self.inflight is not None:
            now = self._clock()
            # In use: the requests in flight, this one included, and those waiting for a slot
            # (a bound that holds requests back is used to the full).
            busy = self.limiter.borrowed_tokens + 1 + self._waiting
            self.inflight.on_sample(now - slot.started, now, in_flight=busy)
            self._follow()

    def _follow(self) -> None:
        assert self.inflight is not None
        limit = self.inflight.limit
        # Lowering the capacity takes no slot away: requests in flight finish, and no new
        # one starts until fewer than the new limit are in flight.
        if self._limiter is not None and self._limiter.total_tokens != limit:
            self._limiter.total_tokens = limit
