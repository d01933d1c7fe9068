"""Pure policies: poll backoff, Retry-After parsing, the AIMD enqueue pacer."""

from __future__ import annotations

import email.utils
import math
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from oxen_queue import PollPolicy, RetryPolicy
from oxen_queue._retry import parse_retry_after


def test_poll_delays_grow_to_the_cap_then_widen_for_slow_jobs() -> None:
    policy = PollPolicy(
        initial=1.0,
        multiplier=2.0,
        max_interval=5.0,
        slow_after=60,
        slow_max_interval=15,
        jitter=0.0,
    )
    assert [policy.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(10, elapsed=61) == 15.0
    assert policy.delay(10_000, elapsed=3600) == 15.0  # no overflow on very long jobs


def test_poll_jitter_spreads_within_bounds() -> None:
    policy = PollPolicy(initial=4.0, max_interval=4.0, jitter=0.25)
    assert policy.delay(0, rand=0.0) == 3.0
    assert policy.delay(0, rand=0.5) == 4.0
    assert policy.delay(0, rand=0.999999) == pytest.approx(5.0, abs=1e-5)


def test_default_poll_policy_follows_the_docs_advice() -> None:
    policy = PollPolicy()
    image_intervals = {round(policy.delay(n), 2) for n in range(4, 10)}
    assert image_intervals == {5.0}  # "poll every 2-5 s" for images
    assert 10 <= policy.delay(30, elapsed=120) <= 30  # "every 10-30 s" for videos
    assert policy.deadline is not None  # never an endless loop by default


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"multiplier": 0.5}, {"jitter": 1.0}, {"deadline": 0}],
)
def test_bad_poll_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        PollPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"initial_delay": -1}, {"deadline": 0}])
def test_bad_retry_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)


def test_retry_after_in_seconds_milliseconds_and_http_dates() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    date = email.utils.formatdate(1_000_010.0, usegmt=True)
    assert parse_retry_after(
        httpx.Headers({"Retry-After": date}), now=1_000_000.0
    ) == pytest.approx(10.0)
    past = email.utils.formatdate(999_000.0, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": past}), now=1_000_000.0) == 0.0


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", ""])
def test_unusable_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": value})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": value})) is None


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
dates = st.builds(
    lambda day, year, clock: f"Mon, {day:02d} Jan {year} {clock} GMT",
    st.integers(0, 99),
    st.integers(-(10**25), 10**25),
    st.sampled_from(["00:00:00", "25:61:61", "1:2:3"]),
)


@given(st.one_of(header_text, dates), st.one_of(st.none(), header_text))
@example("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None)  # OverflowError before
@example("Fri, 31 Dec 9999 23:59:59 GMT", "1e400")
def test_any_retry_after_is_a_finite_wait_or_none(header: str, millis: str | None) -> None:
    """Whatever the server writes, the wait is seconds the client can sleep, or absent."""
    headers = {"Retry-After": header}
    if millis is not None:
        headers["retry-after-ms"] = millis
    wait = parse_retry_after(httpx.Headers(headers), now=1_000_000.0)
    assert wait is None or (math.isfinite(wait) and wait >= 0)
