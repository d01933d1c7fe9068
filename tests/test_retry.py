"""Retries: what is resent, what is not, Retry-After, the overall deadline, debug logs."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from oxen_queue import APITimeoutError, RateLimitError, RetryPolicy, ServerError

from .fakes import FakeAPI, Responder
from .helpers import fake_client

pytestmark = pytest.mark.anyio


def failing(
    times: int, answer: httpx.Response | type[Exception], path: str = "/api/ai/models/flux-test"
) -> Responder:
    """A hook answering the first ``times`` requests to ``path`` with ``answer``."""
    left = {"n": times}

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.path != path or left["n"] == 0:
            return None
        left["n"] -= 1
        if isinstance(answer, httpx.Response):
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
        raise answer("injected", request=request)  # type: ignore[call-arg]  # httpx errors take it

    return hook


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_idempotent_reads_are_retried_on_transient_statuses(status: int) -> None:
    api = FakeAPI()
    api.before.append(failing(2, httpx.Response(status)))
    async with fake_client(api) as client:
        model = await client.get_model("flux-test")
    assert model.id == "flux-test"
    assert api.calls["GET /api/ai/models/flux-test"] == 3


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_idempotent_reads_are_retried_on_connection_failures(exc: type[Exception]) -> None:
    api = FakeAPI()
    api.before.append(failing(2, exc))
    async with fake_client(api) as client:
        await client.get_model("flux-test")
    assert api.calls["GET /api/ai/models/flux-test"] == 3


async def test_client_errors_are_not_retried() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        with pytest.raises(Exception, match="404"):
            await client.get_model("nope")
    assert api.calls["GET /api/ai/models/nope"] == 1


async def test_retries_give_up_after_the_attempts_with_the_last_error() -> None:
    api = FakeAPI()
    api.before.append(failing(100, httpx.Response(500)))
    async with fake_client(api, retry=RetryPolicy.no_wait(attempts=3)) as client:
        with pytest.raises(ServerError):
            await client.get_model("flux-test")
    assert api.calls["GET /api/ai/models/flux-test"] == 3


async def test_retry_after_is_honoured() -> None:
    api = FakeAPI()
    api.before.append(failing(1, httpx.Response(429, headers={"Retry-After": "0.2"})))
    async with fake_client(api, retry=RetryPolicy(initial_delay=0, max_delay=0)) as client:
        started = time.monotonic()
        await client.get_model("flux-test")
        waited = time.monotonic() - started
    # 0.2 s waited (read as milliseconds it would be none, as minutes 12 s).
    assert 0.18 <= waited < 10.0


async def test_retry_after_past_the_cap_raises_rate_limit_at_once() -> None:
    api = FakeAPI()
    api.before.append(failing(1, httpx.Response(429, headers={"Retry-After": "3600"})))
    async with fake_client(api, retry=RetryPolicy(max_retry_after=120)) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            await client.get_model("flux-test")
    assert time.monotonic() - started < 60  # not the 120 s cap, nor the hour announced
    assert info.value.retry_after == 3600.0
    assert api.calls["GET /api/ai/models/flux-test"] == 1


async def test_the_overall_deadline_bounds_slow_retries() -> None:
    api = FakeAPI()

    def hook(request: httpx.Request) -> httpx.Response | None:
        raise httpx.ReadTimeout("slow", request=request)

    api.before.append(hook)
    policy = RetryPolicy(attempts=1000, initial_delay=0.05, max_delay=0.05, deadline=0.3)
    async with fake_client(api, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.get_model("flux-test")
    assert time.monotonic() - started < 10  # the 0.3 s deadline, not 1,000 attempts (50 s+)


async def test_every_retry_decision_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAPI()
    api.before.append(failing(2, httpx.Response(503)))
    caplog.set_level(logging.DEBUG, logger="oxen_queue")
    async with fake_client(api) as client:
        await client.get_model("flux-test")
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all("HTTP 503" in m and "GET /api/ai/models/flux-test" in m for m in retries)


async def test_polling_survives_transient_failures() -> None:
    api = FakeAPI()
    failures = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response | None:
        if (
            request.method == "GET"
            and request.url.path.startswith("/api/ai/queue/")
            and failures["n"] < 12
        ):
            failures["n"] += 1
            return httpx.Response(502, text="<html>bad gateway</html>")
        return None

    api.before.append(flaky)
    async with fake_client(api, retry=RetryPolicy.no_wait(attempts=2)) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
    assert record.status == "succeeded"
    assert failures["n"] == 12  # six polls failed even after their retries; none failed the job
