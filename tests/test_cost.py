"""Estimates from published pricing: exactly what the emulator charges, and a clear error
naming what is missing whenever a price cannot be worked out (never a guess of zero)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from oxen_queue import (
    AsyncClient,
    CostUnknownError,
    GenerationRecord,
    InvalidParamsError,
    Model,
    ModelPricing,
    PollPolicy,
)
from oxen_queue._cost import estimate_cost, schema_defaults
from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp

pytestmark = pytest.mark.anyio

D = Decimal
RESOLUTIONS = ["1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160"]
QUALITIES = ["auto", "low", "medium", "high"]
KLING = "kling-video-v2-6-pro-text-to-video"
FLUX = "black-forest-labs-flux-2-klein-4b"
HUB = "https://hub.oxen.test"
# Nothing is polled while the manual clock stands still; the tests read rows themselves.
IDLE = PollPolicy(initial=3600, max_interval=3600, deadline=None)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=11), clock=clock)


def in_process(app: EmulatorApp, **options: Any) -> AsyncClient:
    return AsyncClient(
        api_key="cost-test-key",
        base_url=HUB,
        transport=httpx.ASGITransport(app=app),
        completion="poll",
        poll_policy=IDLE,
        **options,
    )


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[AsyncClient]:
    async with in_process(app) as client:
        yield client


def requests(app: EmulatorApp, method: str, template: str) -> int:
    return app.state.stats.requests[(method, template)]


# -- against the emulator's charges ------------------------------------------------------------


async def test_estimates_equal_the_charged_cost_for_a_grid_of_parameters(
    client: AsyncClient, app: EmulatorApp, clock: ManualClock
) -> None:
    """Every quality x resolution of gpt-image-2 and gpt-image-2-edit, the defaults, Kling's
    durations with and without audio, FLUX, and several generations per request: each row's
    charged cost is the estimate, to the last digit (Decimal equality)."""
    source = await client.enqueue("gpt-image-2", prompt="the source", resolution="1024x768")
    clock.advance(100)
    picture = (await client.get_generation(source.id)).result_url
    assert picture is not None
    requests_: list[tuple[str, dict[str, Any]]] = [("gpt-image-2", {"prompt": "defaults"})]
    for quality in QUALITIES:
        for resolution in RESOLUTIONS:
            params: dict[str, Any] = {"prompt": "ox", "quality": quality, "resolution": resolution}
            requests_.append(("gpt-image-2", params))
            requests_.append(("gpt-image-2-edit", {**params, "input_image": picture}))
    requests_.append(("gpt-image-2-edit", {"prompt": "two", "input_image": [picture, picture]}))
    for duration in (5, 10):
        for audio in (False, True):
            kling: dict[str, Any] = {
                "prompt": "a river",
                "duration": duration,
                "generate_audio": audio,
            }
            requests_.append((KLING, kling))
    requests_ += [(KLING, {"prompt": "defaults"}), (FLUX, {"prompt": "ox", "aspect_ratio": "9:16"})]
    source_cost = await client.estimate_cost(
        "gpt-image-2", prompt="the source", resolution="1024x768"
    )
    expected: dict[str, Decimal] = {source.id: source_cost}
    for model, params in requests_:
        (generation,) = await client.enqueue_many(model, 1, **params)
        expected[generation.id] = await client.estimate_cost(model, **params)
    many = await client.enqueue_many("gpt-image-2", 3, prompt="three", quality="low")
    each = await client.estimate_cost("gpt-image-2", prompt="three", quality="low")
    assert (
        await client.estimate_cost("gpt-image-2", num_generations=3, prompt="three", quality="low")
        == 3 * each
    )
    expected.update(dict.fromkeys((g.id for g in many), each))

    clock.advance(200)  # every job has run (and the source's URL has not expired)
    charged = {}
    async for record in client.iter_generations(page_size=1000):
        charged[record.generation_id] = record.cost
        assert record.status == "succeeded", record.error_message
    assert charged == expected
    assert all(isinstance(cost, Decimal) for cost in charged.values())
    assert len(expected) == 1 + len(requests_) + 3


async def test_pricing_is_read_exactly_and_fetched_once_per_model(
    client: AsyncClient, app: EmulatorApp
) -> None:
    """0.07 stays 0.07 (no binary fraction), and estimates, checks and enqueues share the
    one fetch of each model (concurrent first callers included)."""
    kling = await client.get_model(KLING)
    assert kling.pricing is not None
    assert kling.pricing.cost_per_second == D("0.07")
    assert kling.pricing.cost_per_second_by_resolution == {"1080p": D("0.07")}
    assert str(await client.estimate_cost(KLING, prompt="x", duration=10)) == "0.70"
    before = requests(app, "GET", "/api/ai/models/{id}")
    for _ in range(3):
        await client.estimate_cost(FLUX, prompt="x")
        await client.enqueue(FLUX, prompt="x")
    assert requests(app, "GET", "/api/ai/models/{id}") - before == 1


async def test_estimating_sends_no_enqueue_and_checks_parameters_first(
    client: AsyncClient, app: EmulatorApp
) -> None:
    with pytest.raises(InvalidParamsError, match="resolution"):
        await client.estimate_cost("gpt-image-2", prompt="ox", resolution="999x999")
    with pytest.raises(InvalidParamsError, match="num_generations"):
        await client.estimate_cost("gpt-image-2", num_generations=0, prompt="ox")
    with pytest.raises(InvalidParamsError, match="not a model the API knows"):
        await client.estimate_cost("no-such-model", prompt="ox")
    # Unchecked, the bad value has no price: said so, not guessed.
    with pytest.raises(CostUnknownError) as unknown:
        await client.estimate_cost("gpt-image-2", prompt="ox", resolution="999x999", validate=False)
    assert unknown.value.missing == "cost_per_image_grid['high']['999x999']"
    assert "999x999" in str(unknown.value) and "3840x2160" in str(unknown.value)
    assert requests(app, "POST", "/api/ai/queue") == 0


async def test_a_token_priced_model_has_no_estimate(client: AsyncClient) -> None:
    with pytest.raises(CostUnknownError) as unknown:
        await client.estimate_cost("gpt-4o-mini", validate=False)
    assert unknown.value.model == "gpt-4o-mini"
    assert unknown.value.missing == "tokens"
    assert "billed by token" in str(unknown.value)


# -- the pricing rules, alone ------------------------------------------------------------------


def pricing(method: str, **amounts: Any) -> ModelPricing:
    return ModelPricing.model_validate({"method": method, **amounts})


def unknown(pricing_: ModelPricing | None, params: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(CostUnknownError) as error:
        estimate_cost("m", pricing_, params, **kw)
    assert "m" in str(error.value)
    return error.value.missing


def test_each_missing_piece_is_named() -> None:
    grid = pricing("per_image", cost_per_image_grid={"high": {"1920x1080": 0.28}})
    assert unknown(None, {}) == "pricing"
    assert unknown(pricing("time", cost_per_second=0.01), {}) == "run time"
    assert unknown(pricing("token", input_cost_per_token=1e-7), {}) == "tokens"
    assert unknown(pricing("per_frame"), {}) == "a known pricing method (got 'per_frame')"
    assert unknown(pricing("per_image"), {}) == "cost_per_image"
    assert unknown(grid, {"resolution": "1920x1080"}) == "quality"
    assert unknown(grid, {"quality": "high"}) == "resolution"
    assert unknown(grid, {"quality": "low", "resolution": "1920x1080"}) == (
        "cost_per_image_grid['low']"
    )
    assert unknown(grid, {"quality": "high", "resolution": "4K"}) == (
        "cost_per_image_grid['high']['4K']"
    )
    video = pricing("per_video_output_second", cost_per_second=0.07)
    assert unknown(video, {}) == "duration"
    assert unknown(video, {"duration": "long"}) == "a number of seconds in duration"
    assert unknown(video, {"duration": 0}) == "a number of seconds in duration"
    assert unknown(video, {"duration": 5, "generate_audio": True}) == "cost_per_second_with_audio"
    by_resolution = pricing(
        "per_video_output_second", cost_per_second_by_resolution={"480p": 0.05, "1080p": 0.1}
    )
    assert unknown(by_resolution, {"duration": 5}) == "cost_per_second"
    assert unknown(by_resolution, {"duration": 5, "resolution": "720p"}) == (
        "cost_per_second_by_resolution['720p']"
    )
    assert unknown(video, {"multi_prompt": [{"prompt": "a"}]}) == "multi_prompt[].duration"


def test_prices_by_each_rule() -> None:
    grid = pricing(
        "per_image",
        cost_per_image=0.28,
        cost_per_image_grid={"high": {"1920x1080": 0.28, "3840x2160": 1.47}},
    )
    defaults = {"quality": "high", "resolution": "1920x1080"}
    assert estimate_cost("m", grid, {}, defaults=defaults) == D("0.28")
    assert estimate_cost("m", grid, {"resolution": "3840x2160"}, defaults=defaults, count=3) == (
        D("4.41")
    )
    assert estimate_cost("m", pricing("per_image", cost_per_image="0.004"), {}, count=4) == (
        D("0.016")
    )
    video = pricing(
        "per_video_output_second",
        cost_per_second=0.07,
        cost_per_second_with_audio=0.14,
        cost_per_second_by_resolution={"480p": 0.03, "1080p": 0.07},
    )
    assert estimate_cost("m", video, {"duration": 10}) == D("0.70")
    assert estimate_cost("m", video, {}, defaults={"duration": 5}) == D("0.35")
    assert estimate_cost("m", video, {"duration": 5, "generate_audio": True}) == D("0.70")
    assert estimate_cost("m", video, {"duration": 5, "resolution": "480p"}) == D("0.15")
    shots = {"multi_prompt": [{"prompt": "a", "duration": 5}, {"prompt": "b", "duration": 3}]}
    assert estimate_cost("m", video, shots) == D("0.56")
    assert estimate_cost("m", video, {"duration": 5}, count=2) == D("0.70")


def test_schema_defaults_are_read_from_the_published_schema() -> None:
    schema = {
        "properties": {
            "duration": {"type": "integer", "default": 5},
            "prompt": {"type": "string"},
            "odd": "not a schema",
        }
    }
    assert schema_defaults(schema) == {"duration": 5}
    assert schema_defaults(None) == schema_defaults({"properties": []}) == {}


def test_costs_and_prices_parse_as_exact_decimals_and_never_break_a_row() -> None:
    row = {"generation_id": "g", "status": "succeeded"}
    assert GenerationRecord.model_validate({**row, "cost": "0.28"}).cost == D("0.28")
    assert GenerationRecord.model_validate({**row, "cost": "0"}).cost == 0
    assert GenerationRecord.model_validate({**row, "cost": 0.1}).cost == D("0.1")
    garbled: object
    for garbled in ("abc", "NaN", "Infinity", True, [], {"amount": 1}):
        assert GenerationRecord.model_validate({**row, "cost": garbled}).cost is None
    assert GenerationRecord.model_validate({**row, "cost": None}).cost is None
    described = Model.model_validate({"id": "m", "pricing": {"cost_per_image": "lots"}})
    assert described.pricing is not None  # one unusable price: that price alone is unknown
    assert described.pricing.cost_per_image is None
    assert described.pricing.refused == {"cost_per_image": "'lots' is not a decimal number"}
    unreadable = Model.model_validate({"id": "m", "pricing": "lots"})
    assert unreadable.pricing is None  # no pricing object at all: no estimate, model usable
    exact = ModelPricing.model_validate({"method": "per_image", "cost_per_image": 0.1 + 0.2})
    assert exact.cost_per_image == D("0.30000000000000004")  # the float the server wrote
