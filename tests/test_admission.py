"""Admission control: the adaptive bound in flight (``InflightLimit``), the enqueue pacer
(``EnqueueRate``), and the slots that follow both (``AdmissionControl``).

The first two are pure bookkeeping with the clock passed in: each helper round answers a
limit's worth of requests sent after the last change, as a client whose every slot is busy
would, and the pacer is driven against a simulated token bucket. No test sleeps or times
anything.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest

from oxen_queue._admission import AdmissionControl, EnqueueRate, InflightLimit


def _round(
    limiter: InflightLimit, now: float, rtt: float, *, in_flight: int | None = None
) -> float:
    """Answer one round of requests sent at ``now`` after ``rtt``; returns the new ``now``."""
    now += rtt
    busy = limiter.limit if in_flight is None else in_flight
    for _ in range(max(1, limiter.limit)):
        limiter.on_sample(rtt, now, in_flight=busy)
    return now


def test_starts_at_the_initial_limit_with_no_floor_yet() -> None:
    assert InflightLimit().limit == 64
    limiter = InflightLimit(initial=16)
    assert limiter.limit == 16
    assert math.isinf(limiter.rtt_min)


def test_doubles_per_round_trip_while_latency_stays_at_its_floor() -> None:
    """Slow start: one more per prompt answer, so a round trip of answers doubles it."""
    limiter = InflightLimit(initial=16, max_limit=1000)
    now = 0.0
    seen = []
    for _ in range(4):
        now = _round(limiter, now, 0.15)
        seen.append(limiter.limit)
    assert seen == [32, 64, 128, 256]


def test_never_grows_past_its_ceiling() -> None:
    limiter = InflightLimit(initial=16, max_limit=100)
    now = 0.0
    for _ in range(10):
        now = _round(limiter, now, 0.08)
    assert limiter.limit == 100


def test_a_bound_that_is_not_used_does_not_grow() -> None:
    """A client with three requests in flight learns nothing about whether 16 would be fine."""
    limiter = InflightLimit(initial=16)
    now = 0.0
    for _ in range(5):
        now = _round(limiter, now, 0.08, in_flight=3)
    assert limiter.limit == 16


def test_rising_latency_drains_the_queue_it_shows() -> None:
    limiter = InflightLimit(initial=16, max_limit=1000, tolerance=0.1, slack=0.005)
    now = _round(limiter, 0.0, 0.1)  # the floor: 100 ms
    now = _round(limiter, now, 0.1)
    assert limiter.limit == 64
    # Latency up 50 %, far above twice the 10 ms tolerated. At this throughput, 10 ms of
    # delay would mean 64 * 0.11 / 0.15 in flight; the first round goes half of the way.
    now = _round(limiter, now, 0.15)
    assert limiter.limit == int(64 - (64 - 64 * 0.11 / 0.15) / 2)
    capacity = 64 / 0.15  # what the bottleneck turns around, per second
    for _ in range(10):  # a standing queue: it keeps draining until the delay is tolerable
        queued = limiter.limit - capacity * 0.1
        now = _round(limiter, now, 0.1 + max(0.0, queued) / capacity)
    assert limiter.limit <= capacity * (0.1 + 2 * 0.01) + 1


def test_one_slow_round_never_cuts_more_than_half() -> None:
    """A pause of the process or a burst of handshakes: one slow round is not a collapse."""
    limiter = InflightLimit(initial=64, max_limit=1000)
    now = _round(limiter, 0.0, 0.02)
    before = limiter.limit
    _round(limiter, now, 1.0)
    assert limiter.limit >= before // 2


def test_holds_while_the_delay_is_between_once_and_twice_the_tolerance() -> None:
    limiter = InflightLimit(initial=100, max_limit=1000, tolerance=0.1, slack=0.005)
    now = _round(limiter, 0.0, 0.1)  # floor 100 ms; slow start doubles to 200
    assert limiter.limit == 200
    for _ in range(3):  # 15 ms added: more than the 10 ms tolerated, less than twice it
        now = _round(limiter, now, 0.115)
        assert limiter.limit == 200


def test_a_short_round_trip_tolerates_the_slack() -> None:
    """At 20 ms, 10 % is 2 ms: less than processing a burst of answers costs. 4 ms is fine."""
    limiter = InflightLimit(initial=16, max_limit=1000, tolerance=0.1, slack=0.005)
    now = _round(limiter, 0.0, 0.02)
    assert limiter.limit == 32
    _round(limiter, now, 0.024)
    assert limiter.limit == 64


def test_after_slow_start_growth_is_a_quarter_per_round() -> None:
    limiter = InflightLimit(initial=100, max_limit=1000, growth=0.25, tolerance=0.1, slack=0.005)
    now = _round(limiter, 0.0, 0.1)
    now = _round(limiter, now, 0.115)  # some queue: slow start is over
    assert limiter.limit == 200
    _round(limiter, now, 0.1)  # the queue is gone: grow, but by a quarter, not twice
    assert limiter.limit == 250


def test_small_limits_grow_by_at_least_their_square_root() -> None:
    limiter = InflightLimit(initial=9, min_limit=1, growth=0.01)
    for _ in range(10):  # a window refused: 8.1, slow start is over
        limiter.on_refused(0.0)
    _round(limiter, 0.0, 0.1)
    assert limiter.limit == int(8.1 + math.sqrt(8.1))


def test_refusals_cut_by_their_share_and_end_slow_start() -> None:
    """More than a tenth refused, over half a limit's worth of outcomes, cuts; fewer is noise."""
    limiter = InflightLimit(initial=100, backoff=0.9, growth=0.25)
    now = 1.0
    for _ in range(45):
        limiter.on_sample(0.1, now, in_flight=100)
    limiter.on_refused(now)
    limiter.on_refused(now)  # 2 of 47: noise, and slow start goes on
    assert limiter.limit > 100
    grown = limiter.limit
    refused = 0
    while limiter.limit == grown:
        limiter.on_refused(now)  # the window fills with refusals: cut
        refused += 1
    assert refused < 30  # as soon as the window is full
    cut = grown * 0.9
    assert abs(limiter.limit - cut) <= 1
    now = _round(limiter, now, 0.1)
    assert abs(limiter.limit - cut * 1.25) <= 1  # a quarter more: slow start is over


def test_a_stray_refusal_among_many_answers_never_cuts() -> None:
    """A hub refusing a few percent at random (the chaos suite's) once cut per round trip."""
    limiter = InflightLimit(initial=64, max_limit=64)
    now = 0.0
    for i in range(2000):
        now += 0.001
        if i % 20 == 0:
            limiter.on_refused(now)  # 5 %
        else:
            limiter.on_sample(0.01, now, in_flight=64)
    assert limiter.limit == 64


def test_refusals_never_push_it_below_the_floor() -> None:
    limiter = InflightLimit(initial=8, min_limit=4, refusal_window=1)
    now = 0.0
    for _ in range(20):
        limiter.on_refused(now)
        now = _round(limiter, now, 0.1, in_flight=0)  # closes the round, grows nothing
    assert limiter.limit == 4


def test_answers_to_requests_sent_before_a_change_are_not_judged_again() -> None:
    limiter = InflightLimit(initial=16, max_limit=1000)
    now = _round(limiter, 0.0, 0.1)
    assert limiter.limit == 32
    # Stragglers sent before the change, arriving late: they must not start a new round.
    for _ in range(100):
        limiter.on_sample(0.3, now + 0.01, in_flight=32)
    assert limiter.limit == 32


def test_the_floor_forgets_a_faster_past_after_two_windows() -> None:
    limiter = InflightLimit(window=10.0)
    limiter.on_sample(0.05, 0.0, in_flight=1)
    assert limiter.rtt_min == 0.05
    limiter.on_sample(0.2, 11.0, in_flight=1)  # a new window: the old one still counts
    assert limiter.rtt_min == 0.05
    limiter.on_sample(0.2, 22.0, in_flight=1)  # two windows on: forgotten
    assert limiter.rtt_min == 0.2


def test_a_quiet_client_is_still_judged_on_time() -> None:
    """Too few answers to fill a round: judged after four floors anyway, so it backs off."""
    limiter = InflightLimit(initial=64, max_limit=1000)
    now = _round(limiter, 0.0, 0.1)  # 128 now, floor 100 ms
    limit = limiter.limit
    limiter.on_sample(0.5, now + 0.6, in_flight=2)  # sent after the change, very slow
    assert limiter.limit < limit


@pytest.mark.parametrize(
    ("rtt", "capacity"),
    [(0.02, 600.0), (0.08, 600.0), (0.15, 600.0), (0.15, 2000.0), (0.08, 150.0)],
)
def test_settles_near_what_the_round_trip_and_the_bottleneck_allow(
    rtt: float, capacity: float
) -> None:
    """A bottleneck serving ``capacity`` requests/s behind ``rtt``: the limit settles just
    above the bandwidth-delay product instead of running to its ceiling or starving it (a
    fluid model: latency grows by the queue over the capacity)."""
    # Starting below what is needed, so the floor is seen once, as a client's first
    # requests see it.
    limiter = InflightLimit(initial=4, max_limit=1024)
    needed = capacity * rtt
    now = 0.0
    for _ in range(60):
        queued = max(0.0, limiter.limit - needed)
        now = _round(limiter, now, rtt + queued / capacity)
    # It stops growing once the delay added is tolerated (a quarter of the round trip, at
    # least 10 ms), and drains whatever is past twice that.
    tolerated = max(0.25 * rtt, 0.01)
    assert needed <= limiter.limit + 1
    assert limiter.limit <= capacity * (rtt + 2 * tolerated) + 1


def test_rejects_inconsistent_bounds() -> None:
    with pytest.raises(ValueError, match="min_limit"):
        InflightLimit(initial=2, min_limit=4)
    with pytest.raises(ValueError, match="min_limit"):
        InflightLimit(initial=300, max_limit=256)


def test_slow_answers_do_not_feed_slow_start() -> None:
    """Answers on new connections pay their handshakes: they are no sign of spare room."""
    limiter = InflightLimit(initial=16, max_limit=1000)
    limiter.on_sample(0.1, 0.1, in_flight=16)  # the floor, and one more
    assert limiter.limit == 17
    for _ in range(7):
        limiter.on_sample(0.3, 0.3, in_flight=16)
    assert limiter.limit == 17


# -- EnqueueRate: the enqueue pacer ------------------------------------------------------------


def _answers(
    rate: EnqueueRate, now: float, *, sent: float, accepted: int = 0, refused: int = 0
) -> None:
    """Answer ``accepted`` then ``refused`` enqueues sent at ``sent``, all at ``now``."""
    for _ in range(accepted):
        rate.on_accepted(now, sent=sent)
    for _ in range(refused):
        rate.on_rate_limited(now, sent=sent)


def test_enqueue_rate_is_unlimited_until_the_server_refuses_a_real_share() -> None:
    rate = EnqueueRate()
    assert [rate.delay(0.0) for _ in range(100)] == [0.0] * 100
    _answers(rate, 0.5, sent=0.4, accepted=80, refused=8)  # a tenth or less: noise
    assert math.isinf(rate.rate)
    _answers(rate, 0.6, sent=0.5, accepted=0, refused=5)  # over a tenth, but 13 refusals
    assert math.isfinite(rate.rate)


def test_a_few_stray_refusals_among_the_first_answers_are_no_limit() -> None:
    """Three of the first twenty refused is 15 %, but too few refusals to tell from noise."""
    rate = EnqueueRate()
    _answers(rate, 0.1, sent=0.0, accepted=17, refused=3)
    assert math.isinf(rate.rate)


def test_leaving_unlimited_halves_what_the_server_accepted_then_paces() -> None:
    rate = EnqueueRate(window=1.0)
    # 40 accepted (a burst the server allowed), then refusals: the tenth over a tenth cuts.
    _answers(rate, 0.5, sent=0.4, accepted=40, refused=20)
    assert rate.rate == 20.0  # 40 accepted over (at least) a one-second window, halved
    assert [rate.delay(0.6) for _ in range(4)] == pytest.approx([0.0, 0.05, 0.10, 0.15])


def test_a_first_cut_counts_the_last_window_or_all_since_the_first_answer_if_more() -> None:
    # A busy client: its acceptances came more than a window before its refusals.
    slow = EnqueueRate(window=1.0)
    _answers(slow, 0.1, sent=0.0, accepted=50)
    _answers(slow, 1.5, sent=1.4, refused=10)
    assert slow.rate == pytest.approx(50 / 1.4 / 2)  # 50 in the 1.4 s since the first answer
    # An hour of an enqueue a minute, then a burst: the hour averages to nothing.
    quiet = EnqueueRate(window=1.0)
    for minute in range(60):
        _answers(quiet, minute * 60.0, sent=minute * 60.0 - 0.01, accepted=1)
    _answers(quiet, 3600.5, sent=3600.4, accepted=50, refused=10)
    assert quiet.rate == 25.0


def test_refusals_of_enqueues_sent_before_a_cut_are_not_judged_again() -> None:
    rate = EnqueueRate(window=1.0)
    _answers(rate, 0.5, sent=0.4, accepted=40, refused=10)
    assert rate.rate == 20.0
    _answers(rate, 1.6, sent=0.45, refused=30)  # the rest of the overshoot, answered late
    assert rate.rate == 20.0
    _answers(rate, 1.7, sent=1.6, accepted=20)  # the first answers at the new pace
    assert rate.rate == pytest.approx(20.0 * (1 + 0.25 * 1.2))  # grown: a quarter a second


def test_a_later_cut_lands_below_what_the_server_accepted_by_half_the_refused_share() -> None:
    rate = EnqueueRate(window=1.0)
    _answers(rate, 0.0, sent=-0.1, accepted=60, refused=10)
    assert rate.rate == 30.0
    _answers(rate, 0.5, sent=0.2, accepted=10, refused=10)  # within the window: not judged
    assert rate.rate == 30.0
    # A window and more since the cut, judged on the next answer: 11 accepted over 1.1 s,
    # 10 of 21 answers refused.
    _answers(rate, 1.1, sent=0.6, accepted=1)
    accepted, share = 11 / 1.1, 10 / 21
    assert rate.rate == pytest.approx(accepted * (1 - share / 2))


def test_too_few_answers_are_not_judged_a_limit_until_there_are_enough() -> None:
    rate = EnqueueRate(window=1.0, min_answers=10)
    _answers(rate, 0.0, sent=-0.1, accepted=60, refused=10)
    assert rate.rate == 30.0
    _answers(rate, 2.0, sent=1.0, refused=2)  # all refused, but two: wait for more
    assert rate.rate == 30.0
    _answers(rate, 2.1, sent=1.0, accepted=7, refused=1)  # 3 of 10: a limit
    assert rate.rate < 30.0


def test_the_rate_climbs_back_to_the_ceiling_quickly_probes_past_it_slowly_then_lifts() -> None:
    rate = EnqueueRate(window=1.0, growth=0.25, probe=0.05)
    _answers(rate, 0.0, sent=-0.1, accepted=100, refused=20)
    assert rate.rate == 50.0  # the ceiling: 100 accepted per second
    seen = []
    for t in range(1, 30):
        sent = math.floor(rate.rate) if math.isfinite(rate.rate) else 200
        _answers(rate, float(t), sent=t - 0.5, accepted=sent)  # all accepted
        seen.append(rate.rate)
    climb = seen[: seen.index(100.0) + 1]
    assert climb == pytest.approx([62.5, 78.125, 97.65625, 100.0])  # a quarter a second
    probes = seen[len(climb) : len(climb) + 4]
    assert probes == pytest.approx([105.0, 115.0, 130.0, 150.0])  # 5, 10, 15, 20 % of it
    assert math.isinf(seen[-1])  # past twice the ceiling, without refusals: unlimited


def test_a_ceiling_set_while_acceptances_were_on_their_way_is_corrected() -> None:
    """Refusals answer faster than acceptances: a first cut may see few of those."""
    rate = EnqueueRate(window=1.0)
    _answers(rate, 0.5, sent=0.4, accepted=2, refused=10)
    assert rate.rate == 1.0  # 2 accepted seen per second, halved
    _answers(rate, 0.6, sent=0.4, accepted=60)  # the burst's acceptances, late
    _answers(rate, 1.6, sent=1.0, accepted=1)
    # Half of what it took meanwhile (61 in 1.1 s), then grown a quarter per second.
    assert rate.rate == pytest.approx(61 / 1.1 / 2 * (1 + 0.25 * 1.1))


def test_enqueue_rate_never_drops_below_its_floor() -> None:
    rate = EnqueueRate(min_rate=2.0, window=1.0)
    for t in range(20):
        _answers(rate, float(t), sent=t - 0.5, refused=12)
    assert rate.rate == 2.0


@dataclass
class _Run:
    """What a simulated batch did: each attempt's (sent, refused), the first cut, the end."""

    attempts: list[tuple[float, bool]] = field(default_factory=list)
    cut: float = math.inf
    end: float = 0.0

    def refused_share_after_cut(self) -> float:
        after = [refused for sent, refused in self.attempts if sent > self.cut]
        return sum(after) / len(after)


def _simulate(
    *, limit: float, count: int, in_flight: int, rtt: float, noise: float = 0.0
) -> tuple[_Run, EnqueueRate]:
    """``count`` enqueues, ``in_flight`` at most at once, paced by an :class:`EnqueueRate`,
    against a token bucket of ``limit`` per second holding a second's worth (the emulator's),
    which also refuses ``noise`` of them at random. The server sees each ``rtt / 2`` after
    it is sent, the client its answer ``rtt`` after; a refused one is sent again when the
    bucket will have a token. As the client's pacer, one enqueue at a time waits its turn."""
    rate, run, rng = EnqueueRate(), _Run(), random.Random(7)
    tokens, refilled = limit, 0.0
    events: list[tuple[float, int, str, tuple[float, bool, float]]] = []
    nothing = (0.0, False, 0.0)
    order = itertools.count()
    waiting, free, pacing = count, in_flight, False

    def send(now: float) -> None:
        nonlocal tokens, refilled
        seen = now + rtt / 2
        tokens, refilled = min(limit, tokens + (seen - refilled) * limit), seen
        refused = rng.random() < noise or tokens < 1
        tokens -= not refused
        run.attempts.append((now, refused))
        retry = max((1 - tokens) / limit, 0.01)
        heapq.heappush(events, (now + rtt, next(order), "answer", (now, refused, retry)))

    def pump(now: float) -> None:
        nonlocal waiting, free, pacing
        while free and waiting and not pacing:
            free, waiting = free - 1, waiting - 1
            if math.isinf(rate.rate):
                send(now)
            else:
                pacing = True
                heapq.heappush(events, (now + rate.delay(now), next(order), "send", nothing))

    pump(0.0)
    while events:
        now, _, kind, (sent, refused, retry) = heapq.heappop(events)
        if kind == "send":
            pacing = False
            send(now)
        elif kind == "again":
            waiting += 1
        else:
            free += 1
            if refused:
                rate.on_rate_limited(now, sent=sent)
                heapq.heappush(events, (now + retry, next(order), "again", nothing))
            else:
                rate.on_accepted(now, sent=sent)
                run.end = now
            if math.isfinite(rate.rate) and math.isinf(run.cut):
                run.cut = now
        pump(now)
    return run, rate


@pytest.mark.parametrize(
    ("limit", "count", "in_flight", "rtt"),
    [
        (50.0, 600, 64, 0.005),  # the loopback test's limit, four times as long
        (300.0, 2000, 256, 0.08),  # benchmarks/wan.py's limited scenario
        (1000.0, 20000, 256, 0.02),
        (10.0, 300, 64, 0.15),
    ],
)
def test_a_batch_against_a_token_bucket_settles_at_its_rate(
    limit: float, count: int, in_flight: int, rtt: float
) -> None:
    """After the first cut, at most a tenth of the attempts are refused (the pacer's own
    tolerance) and the batch takes at most a tenth longer than the limit allows."""
    run, rate = _simulate(limit=limit, count=count, in_flight=in_flight, rtt=rtt)
    assert math.isfinite(run.cut)
    assert run.refused_share_after_cut() <= 0.1
    assert run.end <= 1.1 * (count - limit) / limit + 1
    assert 0.5 * limit <= rate.rate <= 1.5 * limit


def test_random_refusals_without_a_limit_never_hold_a_batch_back_for_long() -> None:
    """One enqueue in twenty refused at random: if its noise ever reads as a limit, the
    rate is unlimited again within seconds, as the server keeps taking more."""
    run, rate = _simulate(limit=1e9, count=20000, in_flight=64, rtt=0.02, noise=0.05)
    assert math.isinf(rate.rate)
    assert run.end <= 4 * 20000 / (64 / 0.02)  # within 4x of the round trips' pace


# -- AdmissionControl: the bound in flight (adaptive by default), the enqueue pacer ------------


class _Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _hold(admission: AdmissionControl, count: int, clock: _Clock, rtt: float) -> None:
    """``count`` requests hold slots at once; all are answered ``rtt`` later."""
    answered = anyio.Event()
    holding = 0

    async def request() -> None:
        nonlocal holding
        async with admission.slot():
            holding += 1
            await answered.wait()

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(request)
        while holding < count:
            await anyio.lowlevel.checkpoint()
        clock.now += rtt
        answered.set()


@pytest.mark.anyio
async def test_the_slots_follow_an_adaptive_limit_as_answers_come_back() -> None:
    clock = _Clock()
    inflight = InflightLimit(initial=4, min_limit=1)
    admission = AdmissionControl(max_concurrency=264, inflight=inflight, clock=clock)
    assert admission.limiter.total_tokens == admission.bound == 4
    await _hold(admission, 4, clock, 0.1)
    # Prompt answers with the bound in use: slow start grows it, and the slots follow.
    assert inflight.limit > 4
    assert admission.limiter.total_tokens == admission.bound == inflight.limit


@pytest.mark.anyio
async def test_refusals_cut_the_slots_at_once() -> None:
    clock = _Clock()
    inflight = InflightLimit(initial=10, min_limit=1, backoff=0.5, refusal_window=4)
    admission = AdmissionControl(max_concurrency=264, inflight=inflight, clock=clock)
    assert admission.limiter.total_tokens == 10
    for _ in range(5):
        async with admission.slot() as slot:
            slot.observe(503)
    assert admission.limiter.total_tokens == inflight.limit == 5


@pytest.mark.anyio
async def test_failed_and_unsampled_requests_teach_the_limit_nothing() -> None:
    clock = _Clock()
    inflight = InflightLimit(initial=2, min_limit=1)
    admission = AdmissionControl(max_concurrency=264, inflight=inflight, clock=clock)
    with pytest.raises(ConnectionError):
        async with admission.slot():
            raise ConnectionError
    async with admission.slot(paced=True, sample=False):
        clock.now += 30.0  # the blocking /images/generate: as long as the work
    assert math.isinf(inflight.rtt_min)
    assert admission.limiter.borrowed_tokens == 0


@pytest.mark.anyio
async def test_a_fixed_bound_stays_fixed() -> None:
    admission = AdmissionControl(max_concurrency=16)
    async with admission.slot(paced=True) as slot:
        slot.observe(429)
    assert admission.limiter.total_tokens == admission.bound == 16


@pytest.mark.anyio
async def test_an_unlimited_rate_lets_a_burst_of_enqueues_through_in_one_turn() -> None:
    """No pacer while nothing limits the rate: passing it took an event-loop turn each."""
    admission = AdmissionControl(max_concurrency=64)
    holding = 0
    release = anyio.Event()

    async def enqueue() -> None:
        nonlocal holding
        async with admission.slot(paced=True):
            holding += 1
            await release.wait()

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(enqueue)
        await anyio.lowlevel.checkpoint()  # one turn: every task has started and taken a slot
        await anyio.lowlevel.checkpoint()
        assert holding == 50
        release.set()


@pytest.mark.anyio
async def test_a_rate_cut_while_an_enqueue_waits_for_its_slot_sends_it_through_the_pacer() -> None:
    admission = AdmissionControl(max_concurrency=1)
    rate = admission.enqueue_rate
    release = anyio.Event()
    sent = 0
    reserved: list[float] = []  # the pacer's reservations
    reserve = rate.delay

    def delay(now: float) -> float:
        reserved.append(now)
        return reserve(now)

    rate.delay = delay  # type: ignore[method-assign]

    async def enqueue() -> None:
        nonlocal sent
        async with admission.slot(paced=True):
            sent += 1
            await release.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(enqueue)
        while not sent:
            await anyio.lowlevel.checkpoint()
        group.start_soon(enqueue)  # waits for the one slot, the rate still unlimited
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        rate.rate = 1000.0  # cut meanwhile
        release.set()
    assert sent == 2
    assert len(reserved) == 1  # the first went unpaced; the second, after the cut, paced


@pytest.mark.anyio
async def test_only_paced_requests_set_the_pace() -> None:
    """A 429 to a read is no enqueue refused: the pacer hears only of enqueues."""
    admission = AdmissionControl(max_concurrency=4)
    for _ in range(20):
        async with admission.slot() as slot:
            slot.observe(429)
    assert math.isinf(admission.enqueue_rate.rate)
    for _ in range(20):  # until the pacer cuts (then the next would wait for its turn)
        async with admission.slot(paced=True) as slot:
            slot.observe(429)
        if math.isfinite(admission.enqueue_rate.rate):
            break
    assert math.isfinite(admission.enqueue_rate.rate)


@pytest.mark.anyio
async def test_a_refused_request_is_no_latency_sample() -> None:
    """A quick 429 counted as an answer too would lower ``rtt_min`` and halve the share."""
    clock = _Clock()
    inflight = InflightLimit(initial=4, min_limit=1)
    admission = AdmissionControl(max_concurrency=None, inflight=inflight, clock=clock)
    async with admission.slot() as slot:
        clock.now += 0.001
        slot.observe(429)
    assert math.isinf(inflight.rtt_min)
