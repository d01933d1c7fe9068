"""AsyncClient operations against the scripted fake: request shaping and results."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from oxen_queue import (
    APITimeoutError,
    AsyncClient,
    BadRequestError,
    ClientClosedError,
    GenerationCancelledError,
    ImagesResponse,
    InvalidParamsError,
    NotFoundError,
    PollPolicy,
)
from oxen_queue._ledger import LedgerError
from oxen_queue._ledger._sqlledger import SqlLedger

from .fakes import API, FakeAPI
from .helpers import fake_client

pytestmark = pytest.mark.anyio


async def test_enqueue_posts_the_documented_body_with_the_bearer_key() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        generation = await client.enqueue(
            "gpt-image-2",
            prompt="An ox at sunset",
            resolution="1920x1080",
            quality="high",
            output_format="png",
        )
    post = next(r for r in api.requests if r.method == "POST")
    assert post.url == f"{API}/api/ai/queue"
    assert post.headers["authorization"] == "Bearer test-key"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"].startswith("oxen-queue/")
    assert json.loads(post.content) == {
        "model": "gpt-image-2",
        "prompt": "An ox at sunset",
        "resolution": "1920x1080",
        "quality": "high",
        "output_format": "png",
    }
    assert generation.id in api.jobs
    assert generation.model == "gpt-image-2"
    assert generation.params["resolution"] == "1920x1080"


async def test_defaults_are_left_to_the_server() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        await client.enqueue("gpt-image-2", prompt="ox")
    post = next(r for r in api.requests if r.method == "POST")
    assert json.loads(post.content) == {"model": "gpt-image-2", "prompt": "ox"}


async def test_enqueue_many_returns_every_generation() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        generations = await client.enqueue_many("gpt-image-2", 3, prompt="triplets")
        records = [await g for g in generations]
    post = next(r for r in api.requests if r.method == "POST")
    assert json.loads(post.content)["num_generations"] == 3
    assert len({g.id for g in generations}) == 3
    assert [r.generation_id for r in records] == [g.id for g in generations]


async def test_enqueue_many_splits_past_the_per_request_limit() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        generations = await client.enqueue_many("gpt-image-2", 10, prompt="many")
        with pytest.raises(InvalidParamsError, match="num_generations"):
            await client.enqueue_many("gpt-image-2", 0, prompt="none")
        with pytest.raises(InvalidParamsError, match="enqueue_many"):
            await client.enqueue("gpt-image-2", prompt="x", num_generations=2)
    sizes = sorted(
        json.loads(r.content).get("num_generations", 1) for r in api.requests if r.method == "POST"
    )
    assert sizes == [2, 4, 4]
    assert len({g.id for g in generations}) == 10


async def test_enqueue_many_names_what_it_made_when_one_request_fails() -> None:
    api = FakeAPI()

    def the_single_one_refused(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and "num_generations" not in json.loads(request.content):
            return httpx.Response(400, json={"error": {"message": "no credits"}})
        return None

    api.before.append(the_single_one_refused)
    async with fake_client(api) as client:
        with pytest.raises(BadRequestError, match="no credits") as info:
            await client.enqueue_many("gpt-image-2", 9, prompt="many")
    assert len(api.jobs) == 8
    (note,) = info.value.__notes__
    assert note.startswith("8 of 9 generations were created")
    assert all(generation_id in note for generation_id in api.jobs)


async def test_generate_enqueues_and_waits() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox", quality="low")
    assert record.status == "succeeded"
    assert record.params == {"prompt": "ox", "quality": "low"}


async def test_generate_cancelled_by_its_caller_cancels_the_job_upstream() -> None:
    api = FakeAPI(lifecycle=["queued"] * 10_000)
    slow = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0)
    async with fake_client(api, poll_policy=slow) as client:
        with anyio.move_on_after(0.1):
            await client.generate("gpt-image-2", prompt="nobody will look")
        assert api.calls["POST /api/ai/queue"] == 1
        (job,) = api.jobs.values()
        deletes = [r for r in api.requests if r.method == "DELETE"]
        assert [r.url.path for r in deletes] == [f"/api/ai/queue/{job.generation_id}"]
        assert job.status == "cancelled"


async def test_generate_past_its_deadline_cancels_the_job() -> None:
    api = FakeAPI(lifecycle=["queued"] * 10_000)
    slow = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0)
    async with fake_client(api, poll_policy=slow) as client:
        with pytest.raises(TimeoutError):
            await client.generate("gpt-image-2", prompt="too slow", deadline=0.05)
    assert api.calls["DELETE /api/ai/queue/" + next(iter(api.jobs))] == 1


async def test_generate_does_not_cancel_a_job_that_finished() -> None:
    api = FakeAPI(lifecycle=["queued", "failed"], error_message="bad")
    async with fake_client(api) as client:
        with pytest.raises(Exception, match="bad"):
            await client.generate("gpt-image-2", prompt="ox")
    assert not [r for r in api.requests if r.method == "DELETE"]


async def test_cancel_deletes_then_settles_waiters_as_cancelled() -> None:
    api = FakeAPI(lifecycle=["queued"] * 10_000)
    async with fake_client(api, poll_policy=PollPolicy(initial=30)) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        await generation.cancel()
        with pytest.raises(GenerationCancelledError):
            await generation
    methods = [(r.method, r.url.path) for r in api.requests[1:]]
    assert methods == [
        ("DELETE", f"/api/ai/queue/{generation.id}"),
        ("GET", f"/api/ai/queue/{generation.id}"),
    ]


async def test_cancel_of_an_unknown_id_raises_not_found() -> None:
    async with fake_client(FakeAPI()) as client:
        with pytest.raises(NotFoundError) as info:
            await client.cancel("00000000-0000-0000-0000-000000000000")
    assert info.value.error_type == "resource_not_found"
    assert info.value.status_message == "resource_not_found"
    assert info.value.title == "The requested resource could not be found"


async def test_awaiting_an_unknown_id_raises_not_found() -> None:
    async with fake_client(FakeAPI()) as client:
        with pytest.raises(NotFoundError):
            await client.generation("no-such-id")


async def test_get_generation_list_queue_and_history() -> None:
    api = FakeAPI(lifecycle=["queued", "queued", "processing", "succeeded"])
    async with fake_client(api, poll_policy=PollPolicy(initial=30)) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        row = await client.get_generation(generation.id)
        active = await client.list_queue(model="gpt-image-2")
        page = await client.list_generations(page_size=10)
    assert row.status == "queued" and row.enqueued_at == api.jobs[generation.id].enqueued_at
    assert [r.generation_id for r in active] == [generation.id]
    assert page.total_entries == 1 and page.generations[0].generation_id == generation.id
    listing = next(r for r in api.requests if r.method == "GET" and r.url.path == "/api/ai/queue")
    assert listing.url.params["model"] == "gpt-image-2"


async def test_get_model_reads_either_schema_key() -> None:
    async with fake_client(FakeAPI()) as client:
        model = await client.get_model("flux-test")
    assert model.id == "flux-test"
    assert model.media_type == "image"
    assert model.parameter_schema is not None
    assert model.parameter_schema["properties"]["aspect_ratio"]["enum"] == ["1:1", "16:9"]


async def test_generate_images_uses_the_blocking_endpoint() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        response = await client.generate_images("gpt-image-2", prompt="ox", n=2, quality="low")
    assert isinstance(response, ImagesResponse)
    assert [i.url for i in response.images] == ["https://files.oxen.test/sync.png"] * 2
    post = next(r for r in api.requests if r.method == "POST")
    assert post.url.path == "/api/ai/images/generate"
    assert json.loads(post.content) == {
        "model": "gpt-image-2",
        "prompt": "ox",
        "quality": "low",
        "n": 2,
    }


async def test_a_client_is_entered_only_once() -> None:
    """``async with`` opens a client once; used without it, see tests/test_lazy_open.py."""
    client = fake_client(FakeAPI())
    async with client:
        pass
    with pytest.raises(ClientClosedError, match="only once"):
        async with client:
            pass


async def test_base_url_with_the_api_prefix_is_reduced_to_the_origin() -> None:
    api = FakeAPI()
    async with fake_client(api, base_url=f"{API}/api/ai/") as client:
        await client.get_model("flux-test")
    assert api.requests[0].url == f"{API}/api/ai/models/flux-test"


async def test_ids_cannot_inject_path_segments_they_are_refused_before_any_request() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        with pytest.raises(InvalidParamsError) as info:
            await client.get_generation("../models/flux-test")
    assert info.value.field == "generation_id"
    assert api.requests == []  # tests/test_ids.py: every entry point, every kind of id


async def test_environment_supplies_key_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI()
    monkeypatch.setenv("OXEN_API_KEY", "test-key")
    monkeypatch.setenv("OXEN_BASE_URL", API)
    async with AsyncClient(transport=api.transport()) as client:
        await client.get_model("flux-test")
    assert api.requests[0].headers["authorization"] == "Bearer test-key"
    assert str(api.requests[0].url).startswith(API)


def test_completion_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="completion"):
        AsyncClient(api_key="k", completion="sometimes")  # type: ignore[arg-type]


async def test_transport_errors_are_wrapped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    from oxen_queue import APIConnectionError, RetryPolicy

    client = AsyncClient(
        api_key="k",
        base_url=API,
        transport=httpx.MockTransport(refuse),
        retry=RetryPolicy.no_wait(attempts=2),
    )
    async with client:
        with pytest.raises(APIConnectionError) as info:
            await client.get_model("x")
    assert info.value.request_sent is False
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_generate_images_waits_past_the_retry_deadline() -> None:
    """The blocking endpoint may take longer than the retry policy's overall deadline."""
    from oxen_queue import RetryPolicy

    api = FakeAPI()

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await anyio.sleep(0.3)  # the behaviour: an answer slower than the retry deadline
            answer = api.handle(request)
            return httpx.Response(answer.status_code, content=answer.content)

    policy = RetryPolicy(deadline=0.1)
    async with fake_client(api, transport=Slow(), retry=policy) as client:
        response = await client.generate_images("gpt-image-2", prompt="ox", timeout=5)
    assert len(response.images) == 1


async def test_stats_is_one_snapshot_of_the_counters() -> None:
    api = FakeAPI()
    flaky = {"n": 0}

    def one_503(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and not flaky["n"]:
            flaky["n"] += 1
            return httpx.Response(503)
        return None

    api.before.append(one_503)
    async with fake_client(api) as client:
        before = client.stats
        generations = await client.enqueue_many("gpt-image-2", 2, prompt="ox")
        await generations[0]
        await generations[1]
        after = client.stats
    assert (before.enqueued, before.requests, before.pending) == (0, 0, 0)
    assert after.enqueued == 2
    assert after.retries == 1  # the 503, sent again
    assert after.requests == api.calls["POST /api/ai/queue"] + sum(
        n for key, n in api.calls.items() if key.startswith("GET")
    )
    assert after.pending == 0
    # The adaptive bound starts at 64; one 503 ("too much") among few answers is noise.
    assert before.max_concurrency == 64
    assert after.max_concurrency == 64
    assert after.enqueue_rate == float("inf")


async def test_stats_report_a_fixed_bound_as_given() -> None:
    api = FakeAPI()
    async with fake_client(api, max_concurrency=16) as client:
        await client.enqueue("gpt-image-2", prompt="ox")
        assert client.stats.max_concurrency == 16


async def test_with_options_is_a_view_with_other_defaults() -> None:
    api = FakeAPI()

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/api/ai/models"):
                await anyio.sleep(1.0)  # the behaviour: only this read is slow
            return api.handle(request)

    async with fake_client(api, transport=Slow()) as client:
        unchecked = client.with_options(validate=False)
        generation = await unchecked.enqueue("gpt-image-2", prompt="ox", qualty="low")
        with pytest.raises(InvalidParamsError):  # the client itself still checks
            await client.enqueue("gpt-image-2", prompt="ox", qualty="low")
        assert client.pending.keys() == unchecked.pending.keys() == {generation.id}
        quick = client.with_options(timeout=0.1, deadline=None)
        with pytest.raises(APITimeoutError):
            await quick.get_model("flux")
        assert (await quick.enqueue("gpt-image-2", prompt="ox")).deadline is None
    assert "closed" in repr(unchecked)  # closing the client closed its views
    with pytest.raises(ClientClosedError):
        await unchecked.enqueue("gpt-image-2", prompt="ox")


async def test_a_ledger_that_fails_to_close_leaves_the_callers_scopes_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the ledger fails (its disk is full): ``__aexit__`` raises that
    ``LedgerError``, and the client's task group is still left, so the caller's own cancel
    scope and task group exit normally (before, they raised RuntimeError: a cancel scope
    left on the caller's task)."""

    async def full_disk(self: SqlLedger) -> None:
        raise LedgerError("ledger sqlite: disk I/O error")

    monkeypatch.setattr(SqlLedger, "aclose", full_disk)
    api = FakeAPI()
    with anyio.CancelScope() as callers_scope:
        async with anyio.create_task_group() as callers_group:
            with pytest.raises(LedgerError, match="disk I/O error"):
                async with fake_client(api, ledger=f"sqlite://{tmp_path}/ledger.db"):
                    pass
            callers_group.start_soon(anyio.sleep, 0)
    assert not callers_scope.cancelled_caught
