"""Published pricing, and the cost of each history row by it: in-process, on a manual clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import httpx
import pytest

from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp
from oxen_queue.testing._catalog import MODELS

from ._support import OpenAPI, asgi_client, enqueue

pytestmark = pytest.mark.anyio

RESOLUTIONS = ["1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160"]
QUALITIES = ["auto", "low", "medium", "high"]
KLING = "kling-video-v2-6-pro-text-to-video"
FLUX = "black-forest-labs-flux-2-klein-4b"
PLAIN_DECIMAL = re.compile(r"\d+(\.\d+)?")


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=3), clock=clock)


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


def price(pricing: Mapping[str, Any], params: Mapping[str, Any]) -> Decimal:
    """What a client would compute from the published pricing (the defaults of the models'
    schemas for absent parameters)."""
    if pricing["method"] == "per_image":
        grid = pricing["cost_per_image_grid"]
        if grid is not None:
            quality = params.get("quality", "high")
            resolution = params.get("resolution", "1920x1080")
            return Decimal(str(grid[quality][resolution]))
        return Decimal(str(pricing["cost_per_image"]))
    assert pricing["method"] == "per_video_output_second"
    audio = params.get("generate_audio") is True
    per_second = pricing["cost_per_second_with_audio" if audio else "cost_per_second"]
    return Decimal(str(per_second)) * int(params.get("duration", 5))


async def test_every_models_pricing_has_the_specs_shape_in_the_list_and_alone(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    """Each model publishes a complete `pricing` object valid against the spec's Model."""
    listing = (await client.get("/api/ai/models")).json()
    openapi.validate("ListModelsResponse", listing)
    fields = set(openapi.schemas["Model"]["properties"]["pricing"]["properties"])
    methods = {}
    for listed in listing["data"]:
        alone = (await client.get(f"/api/ai/models/{listed['id']}")).json()
        openapi.validate("Model", alone)
        assert alone["pricing"] == listed["pricing"]
        assert set(alone["pricing"]) == fields
        methods[alone["id"]] = alone["pricing"]["method"]
    assert methods == {
        "gpt-image-2": "per_image",
        "gpt-image-2-edit": "per_image",
        FLUX: "per_image",
        KLING: "per_video_output_second",
        "gpt-4o-mini": "token",
    }


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-edit"])
async def test_gpt_image_grids_price_every_quality_and_resolution_in_two_tiers(
    client: httpx.AsyncClient, model: str
) -> None:
    """The grid is {quality: {resolution: price}} over all 4 qualities and 6 resolutions; HD
    sizes share the standard price, QHD+ sizes the higher one; auto bills as high;
    `cost_per_image` is the default request's price."""
    pricing = (await client.get(f"/api/ai/models/{model}")).json()["pricing"]
    grid = pricing["cost_per_image_grid"]
    assert list(grid) == QUALITIES
    for quality in QUALITIES:
        assert list(grid[quality]) == RESOLUTIONS
        standard = {grid[quality][r] for r in RESOLUTIONS[:4]}
        high_res = {grid[quality][r] for r in RESOLUTIONS[4:]}
        assert len(standard) == len(high_res) == 1
        assert 0 < standard.pop() < high_res.pop()
    assert grid["auto"] == grid["high"]
    assert grid["low"]["1024x768"] < grid["medium"]["1024x768"] < grid["high"]["1024x768"]
    assert pricing["cost_per_image"] == grid["high"]["1920x1080"]
    assert pricing["cost_per_second"] is None


async def test_video_flux_and_chat_pricing(client: httpx.AsyncClient) -> None:
    """Kling bills per output second (more with audio, by resolution too); FLUX one price
    per image; the chat model per token."""
    kling = (await client.get(f"/api/ai/models/{KLING}")).json()["pricing"]
    assert kling["cost_per_second"] < kling["cost_per_second_with_audio"]
    assert kling["cost_per_second_by_resolution"] == {"1080p": kling["cost_per_second"]}
    assert kling["cost_per_image"] is None and kling["cost_per_image_grid"] is None
    flux = (await client.get(f"/api/ai/models/{FLUX}")).json()["pricing"]
    assert flux["cost_per_image"] > 0 and flux["cost_per_image_grid"] is None
    chat = (await client.get("/api/ai/models/gpt-4o-mini")).json()["pricing"]
    assert 0 < chat["input_cost_per_token"] < chat["output_cost_per_token"]


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("gpt-image-2", {}),
        ("gpt-image-2", {"quality": "low", "resolution": "1024x768"}),
        ("gpt-image-2", {"quality": "medium", "resolution": "2560x1440"}),
        ("gpt-image-2", {"quality": "auto", "resolution": "3840x2160", "output_format": "webp"}),
        (FLUX, {"aspect_ratio": "16:9"}),
        (KLING, {}),
        (KLING, {"duration": 10}),
        (KLING, {"duration": 10, "generate_audio": True}),
        (KLING, {"duration": 5, "generate_audio": True, "aspect_ratio": "1:1"}),
    ],
)
async def test_each_generations_cost_is_its_published_price(
    client: httpx.AsyncClient,
    clock: ManualClock,
    openapi: OpenAPI,
    model: str,
    params: dict[str, Any],
) -> None:
    """With num_generations=2, two rows, each charged the price the model's pricing gives for
    the job's parameters, as a plain decimal string; the show envelope carries the same."""
    pricing = (await client.get(f"/api/ai/models/{model}")).json()["pricing"]
    ids = await enqueue(client, model=model, num_generations=2, **params)
    clock.advance(120.0)
    listing = (await client.get("/api/ai/generations")).json()
    openapi.validate("GenerationsListResponse", listing)
    rows = {row["generation_id"]: row for row in listing["generations"]}
    assert set(rows) == set(ids)
    expected = price(pricing, params)
    for gid in ids:
        assert rows[gid]["status"] == "succeeded"
        assert PLAIN_DECIMAL.fullmatch(rows[gid]["cost"])
        assert Decimal(rows[gid]["cost"]) == expected
        shown = (await client.get(f"/api/ai/generations/{gid}")).json()
        openapi.validate("GenerationsShowResponse", shown)
        assert shown["generation"]["cost"] == rows[gid]["cost"]
    assert Decimal(listing["total_cost"]) == 2 * expected


async def test_cost_is_null_while_queued_and_charged_in_full_once_processing(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Queued: cost null (nothing charged, total_cost null). Processing: the full price.
    Succeeded: the same price."""
    [gid] = await enqueue(client, quality="low")

    async def row() -> dict[str, Any]:
        return dict((await client.get(f"/api/ai/generations/{gid}")).json()["generation"])

    assert ((await row())["status"], (await row())["cost"]) == ("queued", None)
    assert (await client.get("/api/ai/generations")).json()["total_cost"] is None
    clock.advance(2.0)
    assert ((await row())["status"], (await row())["cost"]) == ("processing", "0.02")
    clock.advance(5.0)
    assert ((await row())["status"], (await row())["cost"]) == ("succeeded", "0.02")


async def test_a_cancel_while_queued_costs_0_and_while_processing_the_full_price(
    client: httpx.AsyncClient, clock: ManualClock, app: EmulatorApp
) -> None:
    """The provider had not run for a job cancelled while queued: "0". It had for one
    cancelled while processing: its charge stays."""
    [queued] = await enqueue(client, resolution="3840x2160")
    await client.delete(f"/api/ai/queue/{queued}")
    [processing] = await enqueue(client, resolution="3840x2160")
    clock.advance(2.0)
    assert (await client.get(f"/api/ai/queue/{processing}")).json()["status"] == "processing"
    await client.delete(f"/api/ai/queue/{processing}")
    clock.advance(60.0)
    cancelled = (await client.get("/api/ai/generations", params={"status": "cancelled"})).json()
    costs = {row["generation_id"]: row["cost"] for row in cancelled["generations"]}
    assert costs == {queued: "0", processing: "1.47"}
    assert cancelled["total_cost"] == "1.47"
    assert app.state.stats.jobs_billed == 1
    one_per_page = (
        await client.get("/api/ai/generations", params={"status": "cancelled", "page_size": 1})
    ).json()
    assert one_per_page["total_cost"] == "1.47"  # over the whole filter set, not the page


async def test_a_run_time_failure_is_charged_at_the_default_parameters_price(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A bad `duration` fails when the job runs, billed: priced at the default (5 s)."""
    [gid] = await enqueue(client, model=KLING, duration=7, generate_audio=True)
    clock.advance(2.0)
    row = (await client.get(f"/api/ai/generations/{gid}")).json()["generation"]
    assert row["status"] == "failed" and "duration: must be one of 5, 10" in row["error_message"]
    assert row["cost"] == "0.70"


async def test_total_cost_sums_the_filtered_rows_over_all_pages(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """total_cost is the sum of the costs of every row the filters select, the same on every
    page, and null for a set with nothing charged."""
    await enqueue(client, quality="low", num_generations=3, target_repo="a")  # 3 x 0.02
    await enqueue(client, resolution="2560x1440", target_repo="b", target_directory="d")  # 1.47
    await enqueue(client, model=KLING, duration=10, generate_audio=True)  # 1.40
    await enqueue(client, model=FLUX, num_generations=2, target_namespace="org")  # 2 x 0.004
    [cancelled] = await enqueue(client, model=FLUX)  # 0
    await client.delete(f"/api/ai/queue/{cancelled}")
    clock.advance(120.0)

    async def listing(**params: Any) -> dict[str, Any]:
        return dict((await client.get("/api/ai/generations", params=params)).json())

    cases: list[tuple[dict[str, Any], str | None, int]] = [
        ({}, "2.93", 6),  # the namespace defaults to the caller's: not "org"
        ({"model": "gpt-image-2"}, "1.53", 4),
        ({"media_type": "video"}, "1.40", 1),
        ({"media_type": "image"}, "1.53", 5),
        ({"repo": "a"}, "0.06", 3),
        ({"folder": "d"}, "1.47", 1),
        ({"namespace": "org"}, "0.008", 2),
        ({"model": FLUX}, "0", 1),  # in the caller's namespace, only the cancelled one
        ({"status": "cancelled"}, "0", 1),
        ({"status": "queued"}, None, 0),
        ({"model": "gpt-image-2", "repo": "b", "status": "succeeded"}, "1.47", 1),
    ]
    for filters, total, entries in cases:
        for page_size in (1, 2, 50):
            pages = [
                await listing(**filters, page=page, page_size=page_size)
                for page in range(1, max(1, -(-entries // page_size)) + 1)
            ]
            assert {page["total_cost"] for page in pages} == {total}, filters
            assert {page["total_entries"] for page in pages} == {entries}, filters
            rows = [row for page in pages for row in page["generations"]]
            assert len(rows) == entries
            if total is not None:
                assert sum(Decimal(row["cost"]) for row in rows) == Decimal(total)


def test_costs_are_decimals_computed_from_the_published_numbers() -> None:
    """The catalog prices with Decimal: no float rounding creeps into a cost (0.07 x 10)."""
    for model in MODELS.values():
        cost = model.cost({"prompt": "x", "duration": 10})
        assert cost is None or isinstance(cost, Decimal)
    assert MODELS[KLING].cost({"duration": 10}) == Decimal("0.70")
    assert str(MODELS[KLING].cost({"duration": 10, "generate_audio": True})) == "1.40"
