"""The adaptive bound on requests in flight (``InflightLimit``): pure bookkeeping, clock passed in.

Each helper round answers a limit's worth of requests sent after the last change, as a client
whose every slot is busy would; no test sleeps or times anything.
"""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest

from oxen_queue._admission import AdmissionControl, InflightLimit


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
        async with admission.slot(enqueue=False):
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
        admission.observe(503, enqueue=False)
    assert admission.limiter.total_tokens == inflight.limit == 5


@pytest.mark.anyio
async def test_failed_and_unsampled_requests_teach_the_limit_nothing() -> None:
    clock = _Clock()
    inflight = InflightLimit(initial=2, min_limit=1)
    admission = AdmissionControl(max_concurrency=264, inflight=inflight, clock=clock)
    with pytest.raises(ConnectionError):
        async with admission.slot(enqueue=False):
            raise ConnectionError
    async with admission.slot(enqueue=True, sample=False):
        clock.now += 30.0  # the blocking /images/generate: as long as the work
    assert math.isinf(inflight.rtt_min)
    assert admission.limiter.borrowed_tokens == 0


@pytest.mark.anyio
async def test_a_fixed_bound_stays_fixed() -> None:
    admission = AdmissionControl(max_concurrency=16)
    async with admission.slot(enqueue=True):
        pass
    admission.observe(429, enqueue=True)
    assert admission.limiter.total_tokens == admission.bound == 16


@pytest.mark.anyio
async def test_an_unlimited_rate_lets_a_burst_of_enqueues_through_in_one_turn() -> None:
    """No pacer while nothing limits the rate: passing it took an event-loop turn each."""
    admission = AdmissionControl(max_concurrency=64)
    holding = 0
    release = anyio.Event()

    async def enqueue() -> None:
        nonlocal holding
        async with admission.slot(enqueue=True):
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
async def test_the_first_wave_of_enqueues_is_heard_out_before_more_are_sent() -> None:
    clock = _Clock()
    admission = AdmissionControl(max_concurrency=4, clock=clock)
    answers = [anyio.Event() for _ in range(6)]
    sent: list[int] = []

    async def enqueue(index: int) -> None:
        async with admission.slot(enqueue=True):
            sent.append(index)
            await answers[index].wait()

    async with anyio.create_task_group() as group:
        for index in range(6):
            group.start_soon(enqueue, index)
        while len(sent) < 4:
            await anyio.lowlevel.checkpoint()
        wave = list(sent)
        clock.now = 1.0  # the first answer took a second: the rest wait up to a second more
        for index in wave[:3]:  # three of the first four answered: their slots stay unused
            answers[index].set()
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            assert sent == wave
        answers[wave[3]].set()  # the wave is heard out: the rest go
        while len(sent) < 6:
            await anyio.lowlevel.checkpoint()
        for answer in answers:
            answer.set()
    assert sorted(sent) == list(range(6))


@pytest.mark.anyio
async def test_a_rate_cut_while_an_enqueue_waits_for_its_slot_sends_it_through_the_pacer() -> None:
    admission = AdmissionControl(max_concurrency=1)
    rate = admission.enqueue_rate
    release = anyio.Event()
    sent = 0
    paced: list[bool] = []  # per slot reserved: was the pacer held?
    reserve = rate.delay

    def delay(now: float) -> float:
        paced.append(admission.pacer.locked())
        return reserve(now)

    rate.delay = delay  # type: ignore[method-assign]

    async def enqueue() -> None:
        nonlocal sent
        async with admission.slot(enqueue=True):
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
    assert paced == [False, True]  # the first went unpaced; the second, after the cut, paced


@pytest.mark.anyio
async def test_a_straggler_in_the_first_wave_holds_the_rest_back_no_longer_than_it_took() -> None:
    clock = _Clock()
    admission = AdmissionControl(max_concurrency=2, clock=clock)
    answered = anyio.Event()
    straggler = anyio.Event()
    sent: list[int] = []

    async def enqueue(index: int) -> None:
        async with admission.slot(enqueue=True):
            sent.append(index)
            await (straggler if len(sent) == 2 and index == sent[1] else answered).wait()

    async with anyio.create_task_group() as group:
        for index in range(4):
            group.start_soon(enqueue, index)
        while len(sent) < 2:
            await anyio.lowlevel.checkpoint()
        clock.now = 0.01  # the first answer, after 10 ms
        answered.set()
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert len(sent) == 2  # held back: the straggler may bring the first refusals
        clock.now = 0.05  # past the 10 ms more it is waited for
        with anyio.fail_after(5):
            while len(sent) < 4:
                await anyio.sleep(0.01)
        straggler.set()


@pytest.mark.anyio
async def test_enqueues_held_back_with_the_first_wave_count_as_use_and_slow_start_grows() -> None:
    """While the first wave is heard out its slots empty, but the bound is not idle: the held
    enqueues are demand. Counted as idle, a wave of 64 grew the limit to about 86, not 128,
    and a distant hub paid an extra round of handshakes."""
    clock = _Clock()
    inflight = InflightLimit(initial=8, max_limit=64)
    admission = AdmissionControl(max_concurrency=None, inflight=inflight, clock=clock)
    answers = [anyio.Event() for _ in range(8)]
    later = anyio.Event()
    sent = 0

    async def enqueue() -> None:
        nonlocal sent
        async with admission.slot(enqueue=True):
            sent += 1
            await (answers[sent - 1] if sent <= 8 else later).wait()

    async with anyio.create_task_group() as group:
        for _ in range(40):
            group.start_soon(enqueue)
        while sent < 8:
            await anyio.lowlevel.checkpoint()
        clock.now = 0.1
        for answer in answers:  # the wave's answers, one at a time: its slots empty
            answer.set()
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
        while sent < 9:
            await anyio.lowlevel.checkpoint()
        # Every prompt answer of the wave grew it by one: doubled in its round trip.
        assert inflight.limit == 16
        later.set()


@pytest.mark.anyio
async def test_a_refused_request_is_no_latency_sample() -> None:
    """A quick 429 counted as an answer too would lower ``rtt_min`` and halve the share."""
    clock = _Clock()
    inflight = InflightLimit(initial=4, min_limit=1)
    admission = AdmissionControl(max_concurrency=None, inflight=inflight, clock=clock)
    async with admission.slot(enqueue=False) as slot:
        clock.now += 0.001
        admission.observe(429, enqueue=False, slot=slot)
    assert math.isinf(inflight.rtt_min)
