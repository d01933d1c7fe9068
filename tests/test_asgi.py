"""oxen_queue.asgi: a web request's hang-up cancels its work (a fake request; the real server is
in test_fastapi_app.py)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import anyio
import anyio.lowlevel
import pytest

from oxen_queue import GenerationFailedError, OxenError
from oxen_queue.asgi import ClientDisconnectedError, cancel_on_disconnect

from .fakes import FakeAPI
from .helpers import fake_client

pytestmark = pytest.mark.anyio

TICK = 0.001  # seconds between checks of the fake connection


class FakeRequest:
    """``is_disconnected()`` is False for ``connected_checks`` calls, then True."""

    def __init__(self, connected_checks: int = 1_000_000) -> None:
        self.connected_checks = connected_checks
        self.checks = 0

    async def is_disconnected(self) -> bool:
        self.checks += 1
        return self.checks > self.connected_checks


class BrokenRequest:
    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.checks = 0

    async def is_disconnected(self) -> bool:
        self.checks += 1
        if self.checks >= self.fail_at:
            raise RuntimeError("no connection state")
        return False


async def test_a_hang_up_cancels_the_work_and_raises_client_disconnected_error() -> None:
    request = FakeRequest(connected_checks=3)
    cancelled = anyio.Event()

    async def work() -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "never"

    with anyio.fail_after(5):
        # pytest.raises matches the type itself: an ExceptionGroup would not pass.
        with pytest.raises(ClientDisconnectedError, match="hung up; the work was cancelled"):
            await cancel_on_disconnect(request, work(), poll_interval=TICK)
    assert cancelled.is_set()
    assert request.checks == 4


async def test_the_result_is_returned_and_the_watching_stops() -> None:
    request = FakeRequest()

    async def work() -> int:
        await anyio.sleep(10 * TICK)  # the behaviour: work that lasts some checks
        return 42

    assert await cancel_on_disconnect(request, work(), poll_interval=TICK) == 42
    checks = request.checks
    # Twenty check intervals: a watcher left behind would check in them (on a slow machine
    # fewer pass, and the check only weakens).
    await anyio.sleep(20 * TICK)
    assert request.checks == checks  # no watcher left behind


async def test_the_works_own_error_reaches_the_caller_as_itself() -> None:
    async def work() -> None:
        await anyio.lowlevel.checkpoint()
        raise GenerationFailedError(generation_id="g1", error_message="Insufficient credits")

    with pytest.raises(GenerationFailedError, match="Insufficient credits"):
        await cancel_on_disconnect(FakeRequest(), work(), poll_interval=TICK)


async def test_an_error_the_cancelled_work_raises_is_what_the_caller_sees() -> None:
    async def work() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise OSError("cleanup failed") from None

    with anyio.fail_after(5), pytest.raises(OSError, match="cleanup failed"):
        await cancel_on_disconnect(FakeRequest(connected_checks=2), work(), poll_interval=TICK)


async def test_an_already_gone_client_never_starts_the_work() -> None:
    started = False

    async def work() -> None:
        nonlocal started
        started = True

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail this
        with pytest.raises(ClientDisconnectedError, match="before the work began"):
            await cancel_on_disconnect(FakeRequest(connected_checks=0), work())
    assert not started


@pytest.mark.parametrize("fail_at", [1, 3])
async def test_a_failing_disconnect_check_is_raised_as_itself(fail_at: int) -> None:
    """Not a Starlette request, say: the bug shows at once, and the work is stopped."""
    finished = False

    async def work() -> None:
        nonlocal finished
        await anyio.sleep_forever()
        finished = True

    with anyio.fail_after(5), pytest.raises(RuntimeError, match="no connection state"):
        await cancel_on_disconnect(BrokenRequest(fail_at), work(), poll_interval=TICK)
    assert not finished


async def test_the_callers_own_cancellation_passes_through() -> None:
    with anyio.move_on_after(20 * TICK) as scope:
        await cancel_on_disconnect(FakeRequest(), anyio.sleep_forever(), poll_interval=TICK)
    assert scope.cancelled_caught


async def test_a_bad_poll_interval_is_refused_and_the_work_not_started() -> None:
    async def work() -> None:
        pytest.fail("started")

    with pytest.raises(ValueError, match="poll_interval"):
        await cancel_on_disconnect(FakeRequest(), work(), poll_interval=0)


async def test_a_hang_up_during_generate_cancels_the_job_upstream() -> None:
    api = FakeAPI(lifecycle=["queued"] * 100_000)
    request = FakeRequest(connected_checks=20)
    async with fake_client(api) as client:
        with anyio.fail_after(5), pytest.raises(ClientDisconnectedError):
            await cancel_on_disconnect(
                request, client.generate("gpt-image-2", prompt="ox"), poll_interval=TICK
            )
        (job,) = api.jobs.values()
        assert job.status == "cancelled"
        assert api.calls[f"DELETE /api/ai/queue/{job.generation_id}"] == 1


def test_client_disconnected_error_is_an_oxen_error_that_pickles() -> None:
    error = ClientDisconnectedError("the HTTP client hung up")
    assert isinstance(error, OxenError)
    assert ClientDisconnectedError.__module__ == "oxen_queue.asgi"
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert type(again) is ClientDisconnectedError
    assert again.args == error.args


@pytest.mark.slow
def test_the_module_needs_no_starlette() -> None:
    """Typed with a Protocol: importing it loads no web framework."""
    code = "import sys, oxen_queue.asgi; print(sorted({'starlette', 'fastapi'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
