"""The app of docs/guides/fastapi.md, as the page shows it, on a real uvicorn server against the
emulator: what it answers, that it logs nothing at error level, and that it is clean under
``mypy --strict`` (issue 16: the README's snippet, copied as it was, answered an empty prompt
with 500 and a traceback, and logged every hang-up as "Exception in ASGI application").

A real server (not ``httpx.ASGITransport``): the lifespan must run, and a caller must be able to
hang up mid-request. The app runs behind :class:`_Watched`, which tells when each request is
over and whether an exception escaped the app (which uvicorn would log as "Exception in ASGI
application"), so the verdict does not depend on when the log line would have come.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from oxen_queue.testing import Emulator, EmulatorConfig

from .servers import ServerThread
from .test_docs_code import ROOT, Block, page_blocks

PAGE: Final = ROOT / "docs" / "guides" / "fastapi.md"
CANCEL: Final = "DELETE /api/ai/queue/{generation_id}"


def page_block() -> Block:
    """The page's python block: the app."""
    (block,) = page_blocks(PAGE.read_text(encoding="utf-8"), "docs/guides/fastapi.md")
    return block


def page_namespace() -> dict[str, Any]:
    """A fresh module namespace the page's block ran in."""
    block = page_block()
    namespace: dict[str, Any] = {"__name__": "fastapi_guide"}
    exec(compile(block.source, block.where, "exec"), namespace)  # noqa: S102 - the page's code
    return namespace


class _Watched:
    """The page's app, with a record of each HTTP request's end: its path and whether an
    exception escaped the app (uvicorn logs that one at error level)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ended: list[tuple[str, BaseException | None]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        escaped: BaseException | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            escaped = exc
            raise
        finally:
            if scope["type"] == "http":
                with self._lock:
                    self.ended.append((scope["path"], escaped))

    async def wait_for(self, count: int) -> list[tuple[str, BaseException | None]]:
        """The first ``count`` requests' ends, once there are as many."""
        with anyio.fail_after(30):
            while len(self.ended) < count:
                await anyio.sleep(0.02)
        return self.ended[:count]


@contextlib.contextmanager
def serve_page_app(emulator: Emulator) -> Iterator[tuple[str, _Watched]]:
    """A fresh copy of the page's app, served with the environment pointing at ``emulator``."""
    watched = _Watched(page_namespace()["app"])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OXEN_BASE_URL", emulator.base_url)  # read by the lifespan, at startup
        env.setenv("OXEN_API_KEY", "guide-key")
        with ServerThread(watched) as server:
            yield server.base_url, watched


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.01, unrelated_event_rate=0.0)) as emu:
        yield emu


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """What was logged at error level or above (any logger, any thread) during the test."""
    caplog.set_level(logging.INFO)
    return lambda: [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR
    ]


@pytest.mark.anyio
async def test_bad_parameters_answer_422_naming_the_field_and_log_nothing(
    emulator: Emulator, errors_logged: Callable[[], list[str]]
) -> None:
    before = emulator.stats()["jobs_created"]
    with serve_page_app(emulator) as (url, watched):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            empty = await http.post("/images", json={"prompt": ""})
            bad = await http.post("/images", json={"prompt": "ox", "resolution": "999x999"})
            unknown = await http.post("/images", json={"prompt": "ox", "quality": "ultra"})
        ended = await watched.wait_for(3)
    assert empty.status_code == 422
    assert empty.json()["detail"]["field"] == "prompt"
    assert "empty" in empty.json()["detail"]["message"]
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "resolution"
    assert "1024x1024" in bad.json()["detail"]["allowed"]
    assert unknown.json()["detail"]["field"] == "quality"
    assert [escaped for _, escaped in ended] == [None, None, None]
    assert errors_logged() == []
    assert emulator.stats()["jobs_created"] == before  # refused before anything was sent


@pytest.mark.anyio
async def test_an_image_answers_200_with_its_result_url(
    emulator: Emulator, errors_logged: Callable[[], list[str]]
) -> None:
    with serve_page_app(emulator) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answer = await http.post("/images", json={"prompt": "An ox", "quality": "low"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["result_url"].startswith(emulator.files_url)
    assert emulator.state.jobs[body["generation_id"]].status == "succeeded"
    assert errors_logged() == []


@pytest.mark.anyio
async def test_a_failed_generation_answers_502_with_the_servers_message(
    errors_logged: Callable[[], list[str]],
) -> None:
    config = EmulatorConfig(time_scale=0.01, failure_rate=1.0, unrelated_event_rate=0.0)
    with Emulator(config=config) as failing, serve_page_app(failing) as (url, watched):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answer = await http.post("/images", json={"prompt": "an ox with no credits"})
        ((_, escaped),) = await watched.wait_for(1)
    assert answer.status_code == 502
    assert "Insufficient credits" in answer.json()["detail"]
    assert escaped is None
    assert errors_logged() == []


@pytest.mark.anyio
async def test_a_caller_hanging_up_cancels_the_job_and_logs_nothing_at_error_level(
    emulator: Emulator, errors_logged: Callable[[], list[str]]
) -> None:
    prompt = f"an ox nobody waits for ({time.monotonic_ns()})"
    cancels = emulator.stats()["requests"].get(CANCEL, 0)

    def jobs() -> list[str]:
        with emulator.state.lock:
            return [j.generation_id for j in emulator.state.jobs.values() if j.prompt == prompt]

    saved, emulator.state.time_scale = emulator.state.time_scale, 2.0  # a 5-14 s job
    try:
        with serve_page_app(emulator) as (url, watched):
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:

                async def wait_for_image() -> None:
                    await http.post("/images", json={"prompt": prompt})
                    pytest.fail("the app answered a request for a 5-14 s job")

                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(wait_for_image)
                    with anyio.fail_after(10):
                        while not jobs():
                            await anyio.sleep(0.01)
                    task_group.cancel_scope.cancel()  # hang up: httpx closes the connection
            # The app's handling of the hung-up request is over (it notices within 0.2 s).
            ((path, escaped),) = await watched.wait_for(1)
    finally:
        emulator.state.time_scale = saved
    (job_id,) = jobs()
    assert emulator.state.jobs[job_id].status == "cancelled"  # cancelled before the answer
    assert emulator.stats()["requests"].get(CANCEL, 0) == cancels + 1
    assert (path, escaped) == ("/images", None)  # the 499 handler took it: nothing escaped
    assert errors_logged() == []


@pytest.mark.slow
def test_the_pages_code_is_clean_under_mypy_strict(tmp_path: Path) -> None:
    """The block, saved as a user would save it, passes ``mypy --strict`` (with the project's
    mypy configuration and cache: a few seconds when the cache is warm, as CI has it)."""
    path = tmp_path / "app.py"
    path.write_text(page_block().source, encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
