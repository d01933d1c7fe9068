"""examples/fastapi_app.py on a real uvicorn server, against the emulator.

A real server (not ``httpx.ASGITransport``) because the app's lifespan must run, its event
stream must arrive live, and a client must be able to hang up mid-request.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, get_args

import anyio
import httpx
import pytest

from oxen_queue import Resolution
from oxen_queue.testing import Emulator, EmulatorConfig
from oxen_queue.testing._jobs import Job

from .helpers import TLS, WITHIN, eventually
from .servers import ServerThread

ENQUEUE = "POST /api/ai/queue"
CANCEL = "DELETE /api/ai/queue/{generation_id}"
STATUS_ORDER = ("queued", "processing", "succeeded")
APP = "examples.fastapi_app:app"  # as the example's docstring runs it, from the repo root


@contextlib.contextmanager
def app_against(emulator: Emulator) -> Iterator[str]:
    """Serve the example app with its environment pointing at ``emulator``; yield its URL."""
    with pytest.MonkeyPatch.context() as env:
        # Read by AsyncClient() in the app's lifespan, which runs as the server starts.
        env.setenv("OXEN_BASE_URL", emulator.base_url)
        env.setenv("OXEN_API_KEY", "fastapi-example-key")
        with ServerThread(APP) as server:
            yield server.base_url


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        yield emu


@pytest.fixture(scope="module")
def app_url(emulator: Emulator) -> Iterator[str]:
    with app_against(emulator) as url:
        yield url


@pytest.fixture(scope="module")
def failing_emulator() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.01, failure_rate=1.0)) as emu:
        yield emu


@pytest.fixture(scope="module")
def failing_app_url(failing_emulator: Emulator) -> Iterator[str]:
    with app_against(failing_emulator) as url:
        yield url


@contextlib.contextmanager
def time_scale(emulator: Emulator, scale: float) -> Iterator[None]:
    """Jobs enqueued in the block run at ``scale`` (each job's timings are drawn at enqueue)."""
    saved = emulator.state.time_scale
    emulator.state.time_scale = scale
    try:
        yield
    finally:
        emulator.state.time_scale = saved


def counters(emulator: Emulator) -> tuple[int, int, int]:
    """Enqueue requests, jobs created and cancel requests seen by the emulator so far."""
    stats = emulator.stats()
    requests = stats["requests"]
    return requests.get(ENQUEUE, 0), stats["jobs_created"], requests.get(CANCEL, 0)


def jobs_with_prompt(emulator: Emulator, prompt: str) -> list[Job]:
    with emulator.state.lock:  # the emulator's thread changes its jobs meanwhile
        return [job for job in emulator.state.jobs.values() if job.prompt == prompt]


@pytest.mark.anyio
async def test_200_concurrent_images_succeed_through_one_client_with_one_enqueue_each(
    emulator: Emulator, app_url: str
) -> None:
    enqueues, created, _ = counters(emulator)
    answers: list[httpx.Response] = []

    async def post(index: int) -> None:
        # A client per caller, as 200 browsers would be. (One httpx client with 200
        # connections is slower: its pool scans every connection for every request.)
        # verify=False: plain HTTP on loopback, so no CA bundle to load (25 ms a client).
        http = httpx.AsyncClient(base_url=app_url, timeout=60, verify=False)  # noqa: S501
        async with http:
            answers.append(await http.post("/images", json={"prompt": f"ox number {index}"}))

    async with anyio.create_task_group() as task_group:
        for index in range(200):
            task_group.start_soon(post, index)

    assert [answer.status_code for answer in answers] == [200] * 200
    bodies = [answer.json() for answer in answers]
    assert len({body["generation_id"] for body in bodies}) == 200
    assert all(body["status"] == "succeeded" for body in bodies)
    assert all(body["result_url"].startswith(emulator.files_url) for body in bodies)
    after_enqueues, after_created, _ = counters(emulator)
    assert (after_enqueues - enqueues, after_created - created) == (200, 200)
    # One client: one event stream told the app about all 200.
    assert emulator.stats()["sse_open"] == 1


@pytest.mark.anyio
async def test_invalid_params_answer_422_naming_the_field_and_enqueue_nothing(
    emulator: Emulator, app_url: str
) -> None:
    before = counters(emulator)
    async with httpx.AsyncClient(base_url=app_url, verify=TLS) as http:
        bad_resolution = await http.post("/images", json={"prompt": "ox", "resolution": "999x999"})
        empty_prompt = await http.post("/images", json={"prompt": ""})
        bad_job = await http.post("/jobs", json={"prompt": "ox", "quality": "ultra"})

    assert bad_resolution.status_code == 422
    detail = bad_resolution.json()["detail"]
    assert detail["field"] == "resolution"
    assert "999x999" in detail["message"]
    assert detail["allowed"] == list(get_args(Resolution))  # the SDK's list, not the app's
    assert empty_prompt.status_code == 422
    assert empty_prompt.json()["detail"]["field"] == "prompt"
    assert bad_job.status_code == 422
    assert bad_job.json()["detail"]["field"] == "quality"
    assert counters(emulator) == before


@pytest.mark.anyio
async def test_failed_generation_answers_502_with_the_servers_error_message(
    failing_emulator: Emulator, failing_app_url: str
) -> None:
    async with httpx.AsyncClient(base_url=failing_app_url, timeout=30, verify=TLS) as http:
        answer = await http.post("/images", json={"prompt": "an ox with no credits"})

    assert answer.status_code == 502
    detail = answer.json()["detail"]
    assert detail["error_message"] == "Insufficient credits"
    assert failing_emulator.state.jobs[detail["generation_id"]].status == "failed"


@pytest.mark.anyio
async def test_caller_hanging_up_cancels_the_job_upstream(emulator: Emulator, app_url: str) -> None:
    prompt = f"an ox nobody waits for ({time.monotonic_ns()})"
    _, _, cancels = counters(emulator)
    with time_scale(emulator, 20.0):  # the job would take 50-140 s
        async with httpx.AsyncClient(base_url=app_url, timeout=30, verify=TLS) as http:

            async def wait_for_image() -> None:
                await http.post("/images", json={"prompt": prompt})
                pytest.fail("the app answered a request for a 50-140 s job")

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(wait_for_image)
                await eventually(lambda: jobs_with_prompt(emulator, prompt))
                task_group.cancel_scope.cancel()  # hang up: httpx closes the connection

    (job,) = jobs_with_prompt(emulator, prompt)
    await eventually(lambda: job.status == "cancelled")
    assert counters(emulator)[2] == cancels + 1


@pytest.mark.anyio
async def test_jobs_api_enqueues_reads_and_streams_status_until_succeeded(
    emulator: Emulator, app_url: str
) -> None:
    async with httpx.AsyncClient(base_url=app_url, timeout=30, verify=TLS) as http:
        with time_scale(emulator, 0.2):  # queued 0.1-0.4 s, then processing 0.4-1 s
            created = await http.post("/jobs", json={"prompt": "an ox, step by step"})
        assert created.status_code == 202
        generation_id = created.json()["generation_id"]
        assert created.json()["status"] == "queued"

        events: list[tuple[str, dict[str, Any], float]] = []
        async with http.stream("GET", f"/jobs/{generation_id}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = ""
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: ")), time.time()))
        # The loop ended: the server closed the stream after the final status.

        row = await http.get(f"/jobs/{generation_id}")
        missing = await http.get("/jobs/no-such-id")
        missing_events = await http.get("/jobs/no-such-id/events")

    assert [name for name, _, _ in events][-1] == "end"  # so a browser does not reconnect
    events = events[:-1]
    assert {name for name, _, _ in events} == {"status"}
    statuses = [row["status"] for _, row, _ in events]
    assert statuses[0] == "queued"
    assert statuses[-1] == "succeeded"
    assert statuses == sorted(statuses, key=STATUS_ORDER.index)  # increasing ...
    assert len(set(statuses)) == len(statuses)  # ... and each sent once
    final = events[-1][1]
    assert final["generation_id"] == generation_id
    assert final["result_url"].startswith(emulator.files_url)
    # Completion is pushed as soon as the app's client learns it, not at the next 1 s tick.
    finished_at = emulator.stats()["completion_times"][generation_id]
    assert events[-1][2] - finished_at < 0.5

    assert row.status_code == 200
    assert row.json()["generation_id"] == generation_id
    assert row.json()["status"] == "succeeded"
    assert row.json()["prompt"] == "an ox, step by step"  # the row's extra fields survive
    assert missing.status_code == 404
    assert missing_events.status_code == 404


async def _quiet(count: Callable[[], int], *, seconds: float) -> None:
    """Return once ``count()`` has not changed for ``seconds``; fail after ``WITHIN`` s."""
    with anyio.fail_after(WITHIN):
        while True:
            seen = count()
            await anyio.sleep(seconds)  # the window in which nothing may change
            if count() == seen:
                return


async def _read_events(stream: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a Server-Sent Events response, to its end.

    (To stop early, cancel: every one of httpx's nested generators then unwinds, where
    breaking out would leave them to the garbage collector.)
    """
    name = ""
    async for line in stream.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))


@pytest.mark.anyio
async def test_one_stream_follows_every_job_of_a_page_to_its_end(
    emulator: Emulator, app_url: str
) -> None:
    """``GET /events?id=...``: each job's statuses in order, each once; a cancelled one; an
    unknown id as ``lost`` (not a 404 for the whole stream); then ``end``."""
    async with httpx.AsyncClient(base_url=app_url, timeout=30, verify=TLS) as http:
        with time_scale(emulator, 0.2):
            quick = (await http.post("/jobs", json={"prompt": "a quick ox"})).json()
        with time_scale(emulator, 5.0):  # queued 2.5-10 s: cancelled before it starts
            slow = (await http.post("/jobs", json={"prompt": "a slow ox"})).json()
        ids = [quick["generation_id"], slow["generation_id"], "no-such-id"]
        seen: dict[str, list[str]] = {generation_id: [] for generation_id in ids}
        async with http.stream("GET", "/events", params={"id": ids}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for name, data in _read_events(stream):
                if name == "status":
                    seen[data["generation_id"]].append(data["status"])
                    if (data["generation_id"], data["status"]) == (slow["generation_id"], "queued"):
                        cancel = await http.delete(f"/jobs/{slow['generation_id']}")
                        assert cancel.status_code == 204
                elif name == "lost":
                    seen[data["generation_id"]].append("lost: " + data["message"])
        image = await http.get(f"/jobs/{quick['generation_id']}/image")
        too_many = await http.get("/events", params={"id": [f"id-{i}" for i in range(51)]})

    assert seen[quick["generation_id"]][-1] == "succeeded"
    assert seen[quick["generation_id"]] == sorted(
        seen[quick["generation_id"]], key=STATUS_ORDER.index
    )
    assert len(set(seen[quick["generation_id"]])) == len(seen[quick["generation_id"]])
    assert seen[slow["generation_id"]] == ["queued", "cancelled"]
    ((lost,),) = [seen["no-such-id"]]
    assert lost.startswith("lost: ")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert too_many.status_code == 422  # bounded: at most 50 jobs a stream


@pytest.mark.anyio
async def test_leaving_a_stream_unsubscribes_and_the_watchers_extra_polls_stop(
    emulator: Emulator, app_url: str
) -> None:
    """While a stream follows a pending job, the app's client polls the queue every second
    (to show ``processing``); when the browser leaves, that stops at once."""

    def lists() -> int:
        return int(emulator.stats()["requests"].get("GET /api/ai/queue", 0))

    async with httpx.AsyncClient(base_url=app_url, timeout=30, verify=TLS) as http:
        with time_scale(emulator, 50.0):  # queued for 25-100 s: still queued at the end
            job = (await http.post("/jobs", json={"prompt": "an ox being watched"})).json()
        before = lists()
        events: list[tuple[str, str]] = []
        async with http.stream("GET", f"/jobs/{job['generation_id']}/events") as stream:

            async def read() -> None:
                async for name, data in _read_events(stream):
                    events.append((name, data["status"]))

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(read)
                # About one a second, shared by every stream of the app.
                await eventually(lambda: events and lists() - before >= 2)
                task_group.cancel_scope.cancel()
        # Closed: the server sees the disconnect and cancels what followed the job, and the
        # polls stop: a gap longer than the app's interval (1 s) comes (on a busy machine it
        # may come late, never falsely: the window below still counts what follows).
        await _quiet(lists, seconds=1.2)
        after = lists()
        await anyio.sleep(2.2)  # the window: two polls if still watched, the backstop's at most
        unwatched = lists() - after
        assert (await http.delete(f"/jobs/{job['generation_id']}")).status_code == 204
        row = (await http.get(f"/jobs/{job['generation_id']}")).json()

    assert events == [("status", "queued")]
    assert unwatched <= 1  # (the backstop's tick, every 10 s, may fall in the window)
    assert row["status"] == "cancelled"


@pytest.mark.anyio
async def test_the_page_its_choices_and_its_estimate(emulator: Emulator, app_url: str) -> None:
    async with httpx.AsyncClient(base_url=app_url, timeout=30, verify=TLS) as http:
        page = await http.get("/")
        choices = (await http.get("/options")).json()
        default = await http.get("/estimate")
        cheap = await http.get("/estimate", params={"quality": "low", "resolution": "1024x1024"})
        bad = await http.get("/estimate", params={"resolution": "999x999"})

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "new EventSource(" in page.text
    assert choices["choices"]["resolution"] == list(get_args(Resolution))
    assert choices["defaults"] == {
        "resolution": "1920x1080",
        "quality": "high",
        "output_format": "png",
    }
    # The emulator's published grid: high at 1920x1080 is 0.28, low at 1024x1024 0.02.
    assert default.json()["cost"] == "0.28"
    assert cheap.json()["cost"] == "0.02"
    # Refused by the SDK's checks before any price is looked up: 422, naming the field.
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "resolution"
