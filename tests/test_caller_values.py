"""What a caller gives the client: its key (`oxen_queue._http.check_api_key`) and every
duration (`oxen_queue._durations`), each refused where it enters, naming its argument.

The invariants, for any value: a documented refusal (``InvalidParamsError``, naming the
field) or a value the client uses as given; nothing sent before a refusal; a key that is
refused is never shown, not in the message, the repr or the traceback.
"""

from __future__ import annotations

import functools
import logging
import math
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from oxen_queue import (
    AsyncClient,
    GenerationTimeoutError,
    InvalidParamsError,
    PollPolicy,
    RetryPolicy,
)
from oxen_queue._durations import seconds, timeout_of
from oxen_queue._http import check_api_key
from oxen_queue.testing import Emulator

from .fakes import FakeAPI
from .helpers import fake_client

# -- the key -------------------------------------------------------------------------------

MARK = "sk-secret-7f3a"
"""Every generated key carries this, so "the key is not shown" is a real check."""

keys = st.builds(
    lambda before, after: f"{before}{MARK}{after}",
    st.text(max_size=6),
    st.text(max_size=6),
)


def visible_ascii(text: str) -> bool:
    """The rule, written out independently of the code under test."""
    return all("!" <= character <= "~" for character in text)


@given(keys)
@example("sk-secret-7f3a\x00")
@example("sk-secret-7f3a\r\nX-Injected: 1")
@example(" sk-secret-7f3a\n")
@example("sk-secret-7f3a é")
def test_a_key_is_visible_ascii_once_stripped_or_refused_unshown(key: str) -> None:
    stripped = key.strip()
    try:
        accepted = check_api_key(key)
    except InvalidParamsError as exc:
        assert exc.field == "api_key"
        assert not visible_ascii(stripped)
        text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))
        assert MARK not in text
    else:
        assert visible_ascii(stripped)
        assert accepted == stripped


@pytest.mark.parametrize("backend", ["httpx", "aiohttp"])
@pytest.mark.parametrize(
    "key", ["sk-secret-7f3a\x00", "sk-secret-7f3a\rX", "sk-secret-7f3a\x01", "sk secret 7f3a"]
)
def test_a_key_no_header_can_carry_is_refused_before_anything_is_sent_and_never_shown(
    oxen_emulator: Emulator,
    key: str,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: h11 refused the header with a message quoting it, key included, and the client
    wrapped that message in ``APIConnectionError``; aiohttp raised a bare ``ValueError``."""
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    before = oxen_emulator.stats()["requests"]
    with pytest.raises(InvalidParamsError) as info:
        AsyncClient(api_key=key, base_url=oxen_emulator.base_url, http_backend=backend)  # type: ignore[arg-type]
    assert info.value.field == "api_key"
    assert "position" in str(info.value)
    assert "7f3a" not in "".join(traceback.format_exception(info.value)) + caplog.text
    assert oxen_emulator.stats()["requests"] == before


def test_a_key_read_from_a_file_with_its_newline_works(oxen_emulator: Emulator) -> None:
    async def main() -> None:
        key = " emulator-key\n"
        async with AsyncClient(api_key=key, base_url=oxen_emulator.base_url) as client:
            assert (await client.get_model("gpt-image-2")).id == "gpt-image-2"

    anyio.run(main)


# -- durations -----------------------------------------------------------------------------

anything = st.one_of(
    st.floats(),  # NaN and the infinities included
    st.integers(min_value=-(10**400), max_value=10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.just(math.inf),
    st.just(-0.0),
)


def expected_seconds(value: object, *, zero: bool = False) -> bool:
    """The rule, written out: an int or float (not a bool) that a float holds finite, above
    zero (or zero)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int) and abs(value) > 10**308:
        return False
    return math.isfinite(value) and (value > 0 or (zero and value == 0))


@given(anything, st.booleans())
def test_a_duration_is_a_finite_number_of_seconds_or_refused_naming_its_field(
    value: Any, zero: bool
) -> None:
    try:
        accepted = seconds(value, field="stall_timeout", zero=zero)
    except InvalidParamsError as exc:
        assert not expected_seconds(value, zero=zero)
        assert exc.field == "stall_timeout"
        assert str(exc).startswith("stall_timeout must be a finite number of seconds")
    else:
        assert expected_seconds(value, zero=zero)
        assert accepted == float(value)
        assert type(accepted) is float


@given(anything)
def test_a_timeout_is_seconds_none_or_an_httpx_timeout_of_them(value: Any) -> None:
    for given_value in (value, httpx.Timeout(5.0, read=value)):
        try:
            timeout = timeout_of(given_value)
        except InvalidParamsError as exc:
            assert value is not None and not expected_seconds(value)
            assert exc.field in ("timeout", "timeout.read")
        else:
            assert value is None or expected_seconds(value)
            assert timeout.read == (None if value is None else float(value))


BAD: list[Any] = [math.nan, math.inf, -math.inf, 0, -1, True, "30"]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_policy_refuses_a_duration_that_is_not_one(value: object) -> None:
    with pytest.raises(InvalidParamsError, match="deadline"):
        RetryPolicy(deadline=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidParamsError, match="deadline"):
        PollPolicy(deadline=value)  # type: ignore[arg-type]
    if value != 0:  # a delay may be zero
        with pytest.raises(InvalidParamsError, match="initial_delay"):
            RetryPolicy(initial_delay=value)  # type: ignore[arg-type]
        with pytest.raises(InvalidParamsError, match="max_interval"):
            PollPolicy(max_interval=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", BAD, ids=repr)
@pytest.mark.parametrize(
    "argument", ["timeout", "stall_timeout", "shared_poll_interval", "backstop_interval"]
)
def test_a_client_refuses_a_duration_that_is_not_one_naming_it(value: Any, argument: str) -> None:
    """Before: ``timeout=inf`` raised aiohttp's ``OverflowError`` at the first request, NaN
    anyio's ``ValueError``, and a negative one tried to send."""
    with pytest.raises(InvalidParamsError) as info:
        AsyncClient(api_key="k", base_url="http://127.0.0.1:9", **{argument: value})
    assert info.value.field == argument


@pytest.mark.anyio
@settings(max_examples=30)
@given(value=st.one_of(st.sampled_from(BAD), anything))
async def test_every_call_refuses_a_bad_timeout_or_deadline_before_sending(value: Any) -> None:
    api = FakeAPI()
    async with fake_client(api) as client:

        async def view(**options: Any) -> None:
            client.with_options(**options)

        async def enqueue() -> None:
            await (await client.enqueue("gpt-image-2", prompt="an ox", deadline=value)).cancel()

        async def generate() -> None:
            await client.generate("gpt-image-2", prompt="an ox", deadline=value)

        calls: list[Callable[[], Awaitable[None]]] = [
            functools.partial(view, timeout=value),
            functools.partial(view, deadline=value),
            enqueue,
            generate,
        ]
        for call in calls:
            try:
                await call()
            except InvalidParamsError as exc:
                assert exc.field in ("timeout", "deadline")
                assert value is not None and not expected_seconds(value)
            except GenerationTimeoutError:
                assert expected_seconds(value)  # a deadline of milliseconds, kept
            else:
                assert value is None or expected_seconds(value)
        if value is not None and not expected_seconds(value):
            assert [r for r in api.requests if r.method == "POST"] == []
            generation = await client.enqueue("gpt-image-2", prompt="an ox")
            with pytest.raises(InvalidParamsError, match="timeout"):
                await generation.wait(timeout=value)


@pytest.mark.anyio
@settings(max_examples=30)
@given(value=st.one_of(st.sampled_from([*BAD, 0, 0.0, -0.0, None]), anything))
async def test_recover_waits_zero_or_more_seconds_or_refuses_the_wait_naming_it(
    value: Any,
) -> None:
    """Before: ``recover(wait=nan)`` or ``inf`` waited as ``None`` does (for ever), a negative
    wait as zero, and ``"30"`` raised a bare ``TypeError``."""
    api = FakeAPI()
    async with fake_client(api) as client:
        try:
            recovered = await client.recover(wait=value)
        except InvalidParamsError as exc:
            assert exc.field == "wait"
            assert value is not None and not expected_seconds(value, zero=True)
        else:
            assert value is None or expected_seconds(value, zero=True)
            assert recovered == []
