"""History with costs: one row's details, paging through every row, and the list filters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from oxen_queue import (
    APIResponseValidationError,
    AsyncClient,
    Client,
    GenerationHistory,
    InvalidParamsError,
    NotFoundError,
    PollPolicy,
)
from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp

from .fakes import API, FakeAPI
from .helpers import fake_client

pytestmark = pytest.mark.anyio

D = Decimal
HUB = "https://hub.oxen.test"
IDLE = PollPolicy(initial=3600, max_interval=3600, deadline=None)
KLING = "kling-video-v2-6-pro-text-to-video"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=9), clock=clock)


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        api_key="history-key",
        base_url=HUB,
        transport=httpx.ASGITransport(app=app),
        completion="poll",
        poll_policy=IDLE,
    ) as client:
        yield client


def requests(app: EmulatorApp, method: str, template: str) -> int:
    return app.state.stats.requests[(method, template)]


async def test_details_show_the_row_with_its_cost_once_charged(
    client: AsyncClient, clock: ManualClock
) -> None:
    generation = await client.enqueue("gpt-image-2", prompt="ox", quality="medium")
    queued = await client.get_generation_details(generation.id)
    assert (queued.status, queued.cost) == ("queued", None)
    assert queued.username is not None and queued.params == {"prompt": "ox", "quality": "medium"}
    clock.advance(100)
    done = await client.get_generation_details(generation.id)
    assert (done.status, done.cost) == ("succeeded", D("0.07"))
    assert generation.done()  # the row settled the pending handle too
    with pytest.raises(NotFoundError):
        await client.get_generation_details("00000000-0000-4000-8000-000000000000")


async def test_a_details_answer_without_its_envelope_is_a_validation_error() -> None:
    api = FakeAPI()
    api.before.append(
        lambda r: (
            httpx.Response(200, json={"generation_id": "g", "status": "succeeded"})
            if r.url.path.startswith("/api/ai/generations/")
            else None
        )
    )
    async with fake_client(api) as client:
        with pytest.raises(APIResponseValidationError, match="no generation object"):
            await client.get_generation_details("g")
    assert api.requests[-1].url == f"{API}/api/ai/generations/g"


async def test_iterating_pages_through_every_row_once_with_the_totals(
    client: AsyncClient, app: EmulatorApp, clock: ManualClock
) -> None:
    for index in range(7):
        await client.enqueue("gpt-image-2", prompt=f"ox {index}", quality="low")
    await client.enqueue(KLING, prompt="a river", duration=10)
    clock.advance(300)
    history = client.iter_generations(page_size=3)
    assert isinstance(history, GenerationHistory)
    assert (history.total_cost, history.total_entries, history.total_pages) == (None, None, None)
    before = requests(app, "GET", "/api/ai/generations")
    records = [record async for record in history]
    assert len(records) == len({r.generation_id for r in records}) == 8
    assert requests(app, "GET", "/api/ai/generations") - before == 3
    assert history.pages_read == 3
    assert history.total_entries == 8
    assert history.total_cost == 7 * D("0.02") + D("0.70")
    assert history.total_cost == sum(r.cost or 0 for r in records)
    assert "total_entries=8" in repr(history)
    with pytest.raises(StopAsyncIteration):  # exhausted: stays so, asks nothing more
        await history.__anext__()
    assert history.pages_read == 3


async def test_breaking_out_early_reads_no_further_page(
    client: AsyncClient, app: EmulatorApp
) -> None:
    for index in range(5):
        await client.enqueue("gpt-image-2", prompt=f"ox {index}")
    history = client.iter_generations(page_size=2)
    async for record in history:
        assert record.cost is None  # queued: not charged yet
        break
    assert history.pages_read == 1
    assert history.total_cost is None  # "Null when nothing in the set has been charged"
    assert history.total_entries == 5


async def test_an_empty_history_ends_at_once(client: AsyncClient) -> None:
    history = client.iter_generations(model="gpt-image-2")
    assert [record async for record in history] == []
    assert (history.total_entries, history.pages_read) == (0, 1)


async def test_page_size_is_checked(client: AsyncClient) -> None:
    for bad in (0, 1001, True):
        with pytest.raises(InvalidParamsError, match="page_size"):
            client.iter_generations(page_size=bad)


async def test_the_documented_filters_reach_the_server_and_select_rows(
    client: AsyncClient, clock: ManualClock
) -> None:
    """namespace, repo, folder, media_type, status and model, on the queue's list, a history
    page and the iterator alike."""
    in_repo = await client.enqueue(
        "gpt-image-2", prompt="stored", target_repo="renders", target_directory="oxen"
    )
    other = await client.enqueue("gpt-image-2", prompt="plain")
    video = await client.enqueue(KLING, prompt="a river")
    me = (await client.get_generation_details(other.id)).target_namespace
    assert me is not None

    async def ids_everywhere(**filters: Any) -> set[str]:
        queue = {r.generation_id for r in await client.list_queue(**filters)}
        page = {r.generation_id for r in (await client.list_generations(**filters)).generations}
        iterated = {r.generation_id async for r in client.iter_generations(**filters)}
        assert queue == page == iterated, filters
        return queue

    assert await ids_everywhere(repo="renders") == {in_repo.id}
    assert await ids_everywhere(repo="renders", folder="oxen") == {in_repo.id}
    assert await ids_everywhere(folder="elsewhere") == set()
    assert await ids_everywhere(media_type="video") == {video.id}
    assert await ids_everywhere(model="gpt-image-2", namespace=me) == {in_repo.id, other.id}
    assert await ids_everywhere(namespace="someone-else") == set()
    await other.cancel()
    assert await ids_everywhere(status="cancelled") == {other.id}
    clock.advance(300)
    assert await ids_everywhere(status="succeeded", media_type="image") == {in_repo.id}


async def test_filters_are_sent_by_their_documented_names() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        filters: dict[str, Any] = {
            "model": "m",
            "status": "failed",
            "media_type": "video",
            "namespace": "org",
            "repo": "r",
            "folder": "f",
        }
        await client.list_queue(**filters)
        await client.list_generations(page=2, page_size=10, **filters)
        async for _ in client.iter_generations(page_size=10, **filters):
            pass
    queue, page, iterated = (r for r in api.requests if r.method == "GET")
    assert dict(queue.url.params) == filters
    assert dict(page.url.params) == {**filters, "page": "2", "page_size": "10"}
    assert dict(iterated.url.params) == {**filters, "page": "1", "page_size": "10"}


@pytest.fixture
def hub() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(seed=3, time_scale=0.01)) as emulator:
        yield emulator


def test_the_blocking_client_iterates_too(hub: Emulator) -> None:
    with Client(api_key="k", base_url=hub.base_url) as client:
        made = {client.generate("gpt-image-2", prompt=f"ox {i}").generation_id for i in range(3)}
        history = client.iter_generations(page_size=2)
        assert (history.total_entries, history.total_cost) == (None, None)
        rows = list(history)
        assert {r.generation_id for r in rows} == made
        assert history.total_entries == 3 and history.total_pages == 2
        assert history.total_cost == 3 * D("0.28")
        assert "SyncGenerationHistory" in repr(history)
        details = client.get_generation_details(rows[0].generation_id)
        assert details.cost == D("0.28")
        assert client.list_queue(status="succeeded", repo="none") == []
