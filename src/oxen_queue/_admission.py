"""Client-side admission control: how many requests fly at once, and how fast jobs are enqueued.

Both react only to what the server does (Oxen documents no rate limit): a bound on requests
in flight, so a burst of ``enqueue()`` calls waits here in order rather than timing out in
httpx's pool (adaptive by default: `InflightLimit`), and an AIMD enqueue rate (`EnqueueRate`),
unlimited until a real share of enqueues is refused with 429 (a burst overshoots once).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import InitVar, dataclass

import anyio

# Clock resolution: a request sent in the same tick as a change of limit counts as sent after it.
_TICK = 1e-6


@dataclass(kw_only=True, eq=False)
class EnqueueRate:
    """AIMD pacing of enqueues, after TCP Reno. Pure bookkeeping: the clock is passed in.

    Only answers to enqueues sent since the rate last changed count, judged by the share
    refused; up to ``tolerance`` is noise. Past it, the rate is cut: while unlimited (over the
    last ``window`` s, once ``min_refusals`` are refused) to half of what the server accepted
    per second then, or since its first answer if more, as TCP ends slow start; else (over all
    since the change, once it spans a ``window`` and ``min_answers``) to what it accepted per
    second, at most the rate, times ``1 - share / 2``, as DCTCP cuts. The first judgment after a
    cut raises it (to half at least) and the *ceiling* (what the server accepted at the cut) by
    the acceptances still on their way then (refusals answer faster). Otherwise the rate grows:
    below the ceiling by ``growth`` of itself per second; past it by ``probe`` of the ceiling
    per second, a step more each judgment (as CUBIC probes); past twice it, unlimited again.

    Attributes:
        rate: Enqueues per second allowed now; ``math.inf`` when unlimited.
    """

    window: float = 1.0
    tolerance: float = 0.1
    min_refusals: int = 10
    min_answers: int = 10
    growth: float = 0.25
    probe: float = 0.05
    min_rate: float = 1.0

    def __post_init__(self) -> None:
        self.rate = math.inf
        self._next_slot = -math.inf
        self._changed = -math.inf  # when the rate last changed (or was judged)
        self._since = math.inf  # the span's start: the change, or the first answer
        self._accepted = 0  # answers accepted since then
        self._ceiling = math.inf
        self._probes = 0  # judgments past the ceiling since
        self._just_cut = False  # no judgment since the last cut
        # Answers to enqueues sent since the change, and refused; while unlimited, the last
        # window's only (_recent, to take them off again).
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
        # Since the first answer when that says more: a busy client may see its first
        # refusals more than a window after most acceptances; an hour's average says nothing.
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
            # Counting the acceptances still on their way at the cut (see the class).
            self._just_cut = False
            self._ceiling = max(self._ceiling, accepted)
            self.rate = max(self.rate, accepted / 2)
        share = self._fresh_refused / self._fresh
        if share > self.tolerance:
            if self._fresh < self.min_answers:
                return  # too few to tell a limit from a stray refusal
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


@dataclass(kw_only=True, eq=False)
class InflightLimit:
    """An adaptive bound on requests in flight, after TCP Vegas and Netflix's concurrency-limits.

    Pure bookkeeping: the caller times each request from holding a slot to its answer, and
    passes the clock in. Requests beyond what the path carries only queue, which shows as
    latency above ``rtt_min`` (the lowest of the last ``window`` s). Once per round (half a
    limit of answers to requests sent since the last change) the round's *lowest* latency
    ``rtt`` (a standing queue delays even the quickest; bursts of answers and handshakes only
    some) gives the queueing delay ``rtt - rtt_min``, against ``tolerated = max(tolerance *
    rtt_min, slack)`` (time, not Vegas's count: bursts of answers add a few ms long before the
    client is saturated):

    * below it, the limit grows: by one per prompt answer (slow start, doubling per round trip;
      an answer slower than twice ``rtt_min + tolerated``, a new connection's, does not count),
      then, once anything was queued or refused, by ``growth`` of itself (at least its square
      root) per round, only while at least half of it is used;
    * above twice it, it moves ``smoothing`` of the way towards ``limit * (rtt_min +
      tolerated) / rtt``: one slow round must not halve it, a standing queue drains in a few;
    * in between, it holds.

    Refusals (429, 503): over half a limit of outcomes (at least ``refusal_window``), more than
    ``refusal_share`` refused cuts the limit by ``backoff`` and ends slow start. ``initial`` is
    high: at 150 ms each doubling opens connections paying handshakes. The HTTP pool must hold
    ``max_limit`` connections.
    """

    initial: InitVar[int] = 64
    min_limit: int = 4
    max_limit: int = 256
    window: float = 30.0
    backoff: float = 0.9
    growth: float = 0.25
    smoothing: float = 0.5
    tolerance: float = 0.25
    slack: float = 0.01
    refusal_share: float = 0.1
    refusal_window: int = 10

    def __post_init__(self, initial: int) -> None:
        if not 1 <= self.min_limit <= initial <= self.max_limit:
            raise ValueError("need 1 <= min_limit <= initial <= max_limit")
        self._limit = float(initial)
        self._slow_start = True
        # The minimum of this window and the last: a faster past is forgotten in two.
        self._min_now = math.inf
        self._min_before = math.inf
        self._bucket_start: float | None = None
        self._round_start = -math.inf
        self._round: list[float] = []
        self._round_peak = 0
        self._round_fastest = math.inf  # the quickest answer since the round began
        # Since refusals were last judged:
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
        """An answer, not refused, ``rtt`` s after its slot; ``in_flight``: flying and waiting."""
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
            # By one per prompt answer, as TCP's per ACK: doubling per round trip, where a
            # round (answers to requests sent after the change) takes two.
            self._limit = min(float(self.max_limit), self._limit + 1)
        if now - rtt < self._round_start - _TICK:
            return  # sent before the last change: it says nothing about the new limit
        self._round.append(rtt)
        self._round_peak = max(self._round_peak, in_flight)
        full = len(self._round) * 2 >= self._limit
        # A client sending little fills no round: judged on time instead (once it has one).
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
    """One request's hold on the bound (`AdmissionControl.slot`): the latency of an answer not
    refused is fed to the bound when it is given back."""

    __slots__ = ("_control", "paced", "refused", "sample", "started")

    def __init__(self, control: AdmissionControl, *, paced: bool, sample: bool) -> None:
        self._control = control
        self.paced = paced
        self.sample = sample
        self.started = 0.0  # when the slot was taken (the control's clock)
        self.refused = False  # 429 or 503: no latency sample

    async def __aenter__(self) -> Slot:
        control = self._control
        if self.paced:
            await control._admit_paced()
        else:
            await control._acquire()
        self.started = control._clock()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._control._release(self, answered=exc_type is None)

    def observe(self, status_code: int) -> None:
        """The answer's status, while the slot is held: see `AdmissionControl.observe`."""
        self._control.observe(status_code, slot=self)


class AdmissionControl:
    """The concurrency bound and the enqueue pacer of one client.

    Args:
        max_concurrency: Requests in flight allowed, fixed; ignored given ``inflight``.
            ``None``: ``inflight``, or a default `InflightLimit`.
        inflight: An adaptive bound whose limit the limiter's capacity follows.
        clock: Seconds on a monotonic clock (tests pass their own); not anyio's, which costs
            more to ask than the clock itself.
    """

    def __init__(
        self,
        *,
        max_concurrency: int | None,
        inflight: InflightLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None: adaptive)")
        self._fixed = max_concurrency or 0  # read only without inflight, where it is set
        self.enqueue_rate = EnqueueRate()
        adaptive = inflight is None and max_concurrency is None
        self.inflight = InflightLimit() if adaptive else inflight
        self._clock = clock
        self._limiter: anyio.CapacityLimiter | None = None
        self._pacer: anyio.Lock | None = None
        self._waiting = 0  # tasks in the limiter's own acquire()

    @property
    def bound(self) -> int:
        """Requests allowed in flight now: the adaptive limit, or ``max_concurrency``."""
        return self._fixed if self.inflight is None else self.inflight.limit

    @property
    def max_bound(self) -> int:
        """The most requests that may ever be in flight (what the connection pool must hold)."""
        return self._fixed if self.inflight is None else self.inflight.max_limit

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use: anyio primitives need a running event loop to be made.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.bound)
        return self._limiter

    def slot(self, *, paced: bool = False, sample: bool = True) -> Slot:
        """A hold on one of the bounded request slots, for ``async with``.

        A ``paced`` one (an enqueue) waits for the enqueue rate, and its answer sets the pace: while
        the rate is limited, paced requests pass the pacer one at a time and keep it until they hold
        a slot; while unlimited they skip it (a turn of the event loop each) unless cut meanwhile.
        ``sample=False``: an answer as slow as the work (the blocking endpoints), not congestion.
        """
        return Slot(self, paced=paced, sample=sample)

    def observe(self, status_code: int, *, slot: Slot) -> None:
        """Feed an answer to the pacer (paced requests) and the adaptive bound (a 429 or 503
        marks ``slot`` refused: its quick answer is no latency sample)."""
        now = self._clock()
        if status_code in (429, 503):
            slot.refused = True
            if self.inflight is not None:
                self.inflight.on_refused(now)
                self._follow()
        if slot.paced and status_code == 429:
            self.enqueue_rate.on_rate_limited(now, sent=slot.started)
        elif slot.paced and status_code < 400:
            self.enqueue_rate.on_accepted(now, sent=slot.started)

    async def _acquire(self) -> None:
        limiter = self.limiter
        if not self._waiting:
            # A free slot is taken without anyio's checkpoint (its I/O follows at once); only
            # while nobody waits: anyio before 4.14 handed out twice a slot just released to
            # a waiter not yet resumed.
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
        pacer = self._pacer = self._pacer or anyio.Lock()  # made in the event loop
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
        # A failure says nothing of the path's load; a refusal was counted (observe()).
        if answered and slot.sample and not slot.refused and self.inflight is not None:
            now = self._clock()
            # In use: those in flight, this one included, and those waiting for a slot.
            busy = self.limiter.borrowed_tokens + 1 + self._waiting
            self.inflight.on_sample(now - slot.started, now, in_flight=busy)
            self._follow()

    def _follow(self) -> None:
        assert self.inflight is not None
        limit = self.inflight.limit
        # Lowering it takes no slot away: no new request starts until fewer are in flight.
        if self._limiter is not None and self._limiter.total_tokens != limit:
            self._limiter.total_tokens = limit
