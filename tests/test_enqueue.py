"""Nothing billed twice: refused enqueues are resent; ambiguous ones are reconciled, not resent."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from oxen_queue import (
    AmbiguousEnqueueError,
    BadRequestError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
)

from .fakes import FakeAPI, on_enqueue
from .helpers import fake_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("refusal", ["429", "503", "refused"])
async def test_refused_enqueues_are_sent_again(refusal: str) -> None:
    api = FakeAPI()
    on_enqueue(api, [refusal, refusal, "ok"])
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
    assert api.calls["POST /api/ai/queue"] == 3
    assert list(api.jobs) == [generation.id]


@pytest.mark.parametrize("loss", ["cut", "timeout", "502", "504", "garbled"])
async def test_a_lost_answer_is_reconciled_and_the_job_adopted_not_resent(loss: str) -> None:
    api = FakeAPI()
    on_enqueue(api, [loss])
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox", quality="low")
        record = await generation
        stats = {"reconciled": client.stats.reconciled, "resent": client.stats.resent}
    assert api.calls["POST /api/ai/queue"] == 1
    assert list(api.jobs) == [generation.id]
    assert record.status == "succeeded"
    assert stats == {"reconciled": 1, "resent": 0}


async def test_an_ambiguous_failure_that_created_nothing_is_resent_after_two_looks() -> None:
    api = FakeAPI()

    def lost_before_creating(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and api.calls["POST /api/ai/queue"] == 1:
            raise httpx.ReadTimeout("timed out before the server acted", request=request)
        return None

    api.before.append(lost_before_creating)
    async with fake_client(api) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        assert (client.stats.reconciled, client.stats.resent) == (0, 1)
    assert api.calls["POST /api/ai/queue"] == 2
    assert list(api.jobs) == [generation.id]
    assert api.calls["GET /api/ai/queue"] == 2 and api.calls["GET /api/ai/generations"] == 2


async def test_reconciliation_never_adopts_a_job_this_client_already_owns() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    async with fake_client(api, poll_policy=PollPolicy(initial=30)) as client:
        first = await client.enqueue("gpt-image-2", prompt="same")
        on_enqueue(api, ["cut"])
        second = await client.enqueue("gpt-image-2", prompt="same")
    assert first.id != second.id
    assert set(api.jobs) == {first.id, second.id}


async def test_concurrent_identical_ambiguous_enqueues_each_adopt_their_own_job() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    on_enqueue(api, ["cut", "502", "ok", "timeout"])
    ids: list[str] = []

    async def one() -> None:
        generation = await client.enqueue("gpt-image-2", prompt="same prompt")
        ids.append(generation.id)

    async with (
        fake_client(api, poll_policy=PollPolicy(initial=30)) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(4):
            tg.start_soon(one)
    assert api.calls["POST /api/ai/queue"] == 4
    assert sorted(ids) == sorted(api.jobs)


async def test_when_lookups_fail_the_enqueue_is_reported_ambiguous_and_not_resent() -> None:
    api = FakeAPI()
    on_enqueue(api, ["cut"])
    api.before.append(
        lambda r: (
            httpx.Response(500)
            if r.method == "GET" and r.url.path in ("/api/ai/queue", "/api/ai/generations")
            else None
        )
    )
    async with fake_client(api, retry=RetryPolicy.no_wait(attempts=2)) as client:
        with pytest.raises(AmbiguousEnqueueError, match="not sent again") as info:
            await client.enqueue("gpt-image-2", prompt="ox")
    assert info.value.model == "gpt-image-2" and info.value.params == {"prompt": "ox"}
    assert api.calls["POST /api/ai/queue"] == 1
    assert len(api.jobs) == 1


async def test_a_garbled_success_whose_job_cannot_be_found_is_never_resent() -> None:
    api = FakeAPI()

    def garbled_without_job(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            return httpx.Response(200, content=b'{"generations": [{"gen')
        return None

    api.before.append(garbled_without_job)
    async with fake_client(api) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        with pytest.raises(AmbiguousEnqueueError):
            await client.enqueue("gpt-image-2", prompt="ox")
    assert api.calls["POST /api/ai/queue"] == 1


async def test_enqueue_refusals_past_the_policy_surface_the_error() -> None:
    api = FakeAPI()
    on_enqueue(api, ["429"] * 10)
    async with fake_client(api, retry=RetryPolicy.no_wait(attempts=3)) as client:
        with pytest.raises(RateLimitError):
            await client.enqueue("gpt-image-2", prompt="ox")
    assert api.calls["POST /api/ai/queue"] == 3 and not api.jobs


async def test_a_bad_request_is_never_resent() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        with pytest.raises(BadRequestError):
            await client.enqueue_many("gpt-image-2", 9, prompt="ox", validate=False, n=1)
    assert api.calls["POST /api/ai/queue"] == 3  # 4 + 4 + 1, each refused once, none resent


async def test_an_enqueue_cancelled_mid_request_still_accounts_for_its_job() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    entered = anyio.Event()
    release = anyio.Event()

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                entered.set()
                await release.wait()
            response = api.handle(request)
            return httpx.Response(
                response.status_code, headers=response.headers, content=response.content
            )

    async with fake_client(api, transport=Slow(), poll_policy=PollPolicy(initial=30)) as client:
        async with anyio.create_task_group() as tg:

            async def caller() -> None:
                await client.enqueue("gpt-image-2", prompt="cancelled caller")

            tg.start_soon(caller)
            await entered.wait()
            tg.cancel_scope.cancel()
            release.set()
        (job_id,) = api.jobs
        assert job_id in client.pending  # the job exists, and the client knows it


async def test_a_lost_answer_is_found_in_history_pages_behind_newer_jobs() -> None:
    """The job finished, and more than a page of newer jobs came after it: still found."""
    api = FakeAPI(lifecycle=["succeeded"])
    lost_ids: list[str] = []

    def created_then_cut(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST" or b"lost one" not in request.content:
            return None
        answer = api.create(json.loads(request.content))
        lost_ids.append(answer.json()["generations"][0]["generation_id"])
        api.jobs[lost_ids[0]].reads = 1  # finished: it has left the active list
        for i in range(2500):  # newer jobs from elsewhere push it to the third page
            api.create({"model": "gpt-image-2", "prompt": f"newer {i}"})
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    api.before.append(created_then_cut)
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="lost one")
    assert generation.id == lost_ids[0]
    assert api.calls["POST /api/ai/queue"] == 1
    pages = [r.url.params["page"] for r in api.requests if r.url.path == "/api/ai/generations"]
    assert pages == ["1", "2", "3"]


async def test_a_job_with_other_parameters_is_never_adopted() -> None:
    """Rows carry exactly the submitted parameters: a superset is someone else's request."""
    api = FakeAPI(lifecycle=["queued"] * 1000)
    other = api.create({"model": "gpt-image-2", "prompt": "ox", "quality": "high"})
    others_id = other.json()["generations"][0]["generation_id"]

    def lost_before_creating(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and api.calls["POST /api/ai/queue"] == 1:
            raise httpx.ReadTimeout("timed out before the server acted", request=request)
        return None

    api.before.append(lost_before_creating)
    async with fake_client(api, poll_policy=PollPolicy(initial=30)) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        generation = await client.enqueue("gpt-image-2", prompt="ox")
    assert generation.id != others_id
    assert (client.stats.reconciled, client.stats.resent) == (0, 1)
    assert len(api.jobs) == 2
