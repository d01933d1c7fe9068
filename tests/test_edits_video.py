"""gpt-image-2-edit and Kling text-to-video, typed and checked locally; the blocking edit and
video endpoints; videos downloaded as ``.mp4``."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from oxen_queue import (
    AsyncClient,
    BadRequestError,
    Client,
    GptImage2EditParams,
    InvalidParamsError,
    KlingV26ProTextToVideoParams,
    PollPolicy,
    VideosResponse,
)
from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp

pytestmark = pytest.mark.anyio

EDIT = "gpt-image-2-edit"
KLING = "kling-video-v2-6-pro-text-to-video"
HUB = "https://hub.oxen.test"
QUICK = PollPolicy(initial=0.0, max_interval=0.0, jitter=0.0, deadline=30)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=13), clock=clock)


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        api_key="edit-key",
        base_url=HUB,
        transport=httpx.ASGITransport(app=app),
        completion="poll",
        poll_policy=QUICK,
    ) as client:
        yield client


def sent(app: EmulatorApp) -> int:
    """Requests that could have cost something."""
    stats = app.state.stats.requests
    return sum(
        stats[("POST", path)]
        for path in ("/api/ai/queue", "/api/ai/images/edit", "/api/ai/videos/generate")
    )


BAD_EDITS: list[tuple[dict[str, Any], str, str]] = [
    ({"prompt": "night"}, "input_image", "required"),
    ({"prompt": "night", "input_image": "ftp://files/ox.png"}, "input_image", "http(s) URL"),
    ({"prompt": "night", "input_image": []}, "input_image", "1 to 16"),
    ({"prompt": "night", "input_image": ["https://a/1.png"] * 17}, "input_image", "1 to 16"),
    ({"prompt": "night", "input_image": ["https://a/1.png", 7]}, "input_image", "list URLs"),
    ({"prompt": "night", "input_image": "https://a/1.png", "mask": "x"}, "mask", "http(s) URL"),
    ({"prompt": "night", "input_image": "https://a/1.png", "mask": None}, "mask", "leave it"),
    ({"prompt": "", "input_image": "https://a/1.png"}, "prompt", "empty"),
    ({"prompt": "night", "input_image": "https://a/1.png", "quality": "ultra"}, "quality", "low"),
    ({"prompt": "n", "input_image": "https://a/1.png", "resolution": "9x9"}, "resolution", "1920"),
    ({"prompt": "n", "input_image": "https://a/1.png", "strength": 1}, "strength", "mask"),
]
BAD_VIDEOS: list[tuple[dict[str, Any], str, str]] = [
    ({}, "prompt", "required"),
    ({"prompt": "a river", "duration": 7}, "duration", "5, 10"),
    ({"prompt": "a river", "duration": 5.0}, "duration", "5, 10"),
    ({"prompt": "a river", "aspect_ratio": "4:3"}, "aspect_ratio", "9:16, 16:9, 1:1"),
    ({"prompt": "a river", "cfg_scale": 11}, "cfg_scale", "less than or equal to 10"),
    ({"prompt": "a river", "cfg_scale": True}, "cfg_scale", "number"),
    ({"prompt": "a river", "generate_audio": "yes"}, "generate_audio", "boolean"),
    ({"prompt": "a river", "negative_prompt": None}, "negative_prompt", "string"),
    ({"prompt": "a river", "multi_prompt": []}, "multi_prompt", "negative_prompt"),
]


@pytest.mark.parametrize(("params", "field", "says"), BAD_EDITS)
async def test_bad_edit_parameters_fail_here_naming_the_field(
    client: AsyncClient, app: EmulatorApp, params: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InvalidParamsError, match=f"(?i){_escape(says)}") as bad:
        await client.enqueue(EDIT, **params)
    assert bad.value.field == field
    if "input_image" in params:  # the blocking endpoint's own keyword
        with pytest.raises(InvalidParamsError):
            await client.edit_images(EDIT, **params)
    assert sent(app) == 0


@pytest.mark.parametrize(("params", "field", "says"), BAD_VIDEOS)
async def test_bad_video_parameters_fail_here_naming_the_field(
    client: AsyncClient, app: EmulatorApp, params: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InvalidParamsError, match=f"(?i){_escape(says)}") as bad:
        await client.enqueue(KLING, **params)
    assert bad.value.field == field
    assert sent(app) == 0


def _escape(text: str) -> str:
    return text.replace("(", r"\(").replace(")", r"\)")


def test_the_typed_parameters_carry_the_documented_defaults() -> None:
    edit = GptImage2EditParams(prompt="night", input_image=["https://a/1.png"])
    assert (edit.resolution, edit.quality, edit.output_format, edit.mask) == (
        "1920x1080",
        "high",
        "png",
        None,
    )
    video = KlingV26ProTextToVideoParams(prompt="a river")
    assert (video.aspect_ratio, video.duration, video.generate_audio, video.cfg_scale) == (
        "16:9",
        5,
        False,
        0.5,
    )


async def test_a_queued_edit_composes_the_input_image_and_is_saved(
    client: AsyncClient, clock: ManualClock, tmp_path: Path
) -> None:
    source = await client.enqueue("gpt-image-2", prompt="an ox", resolution="1024x768")
    clock.advance(60)
    url = (await source).result_url
    assert url is not None
    edit = await client.enqueue(
        EDIT, prompt="make it night", input_image=url, resolution="1024x1024", output_format="webp"
    )
    clock.advance(60)
    record = await edit
    assert record.params["input_image"] == url
    path = await client.download(record, tmp_path)
    assert path.suffix == ".webp"
    with Image.open(path) as image:
        assert (image.width, image.height, image.format) == (1024, 1024, "WEBP")


async def test_the_blocking_edit_endpoint(client: AsyncClient, clock: ManualClock) -> None:
    source = await client.enqueue("gpt-image-2", prompt="an ox", resolution="1024x768")
    clock.advance(60)
    url = (await source).result_url
    assert url is not None
    edited = await client.edit_images(
        EDIT, prompt="night", input_image=[url, url], resolution="1024x1536", n=2
    )
    assert edited.model == EDIT and len(edited.images) == 2
    inline = await client.edit_images(
        EDIT, prompt="night", input_image=url, mask=url, response_format="b64_json"
    )
    assert inline.images[0].b64_json
    # The provider must be able to fetch the image: another host is refused, by the server.
    with pytest.raises(BadRequestError, match="input_image"):
        await client.edit_images(EDIT, prompt="night", input_image="https://elsewhere.test/a.png")


async def test_the_blocking_video_endpoint_and_its_one_prompt_rule(
    client: AsyncClient, app: EmulatorApp
) -> None:
    videos = await client.generate_videos(KLING, prompt="a river", duration=5, aspect_ratio="1:1")
    assert isinstance(videos, VideosResponse)
    assert videos.model == KLING and len(videos.videos) == 1 and videos.videos[0].url
    data = await _get(app, videos.videos[0].url)
    assert data[4:8] == b"ftyp"
    both: dict[str, Any] = {"prompt": "a", "multi_prompt": [{"prompt": "b", "duration": 5}]}
    for bad in ({}, both):
        with pytest.raises(InvalidParamsError, match="exactly one of prompt and multi_prompt"):
            await client.generate_videos(KLING, **bad)
    assert app.state.stats.requests[("POST", "/api/ai/videos/generate")] == 1


async def _get(app: EmulatorApp, url: str) -> bytes:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.content


async def test_a_video_result_downloads_as_mp4(
    client: AsyncClient, clock: ManualClock, tmp_path: Path
) -> None:
    """A real emulator video (H.264 in MP4): the download names it by its bytes."""
    generation = await client.enqueue(KLING, prompt="a river at dawn", aspect_ratio="9:16")
    clock.advance(120)
    record = await generation
    assert record.media_type == "video"
    path = await client.download(record, tmp_path)
    assert path.name == f"{generation.id}.mp4"
    assert path.read_bytes()[4:8] == b"ftyp"
    assert (await client.get_generation_details(generation.id)).cost == Decimal("0.35")


@pytest.fixture
def hub() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(seed=6, time_scale=0.001)) as emulator:
        yield emulator


def test_the_blocking_client_edits_and_makes_videos(hub: Emulator) -> None:
    with Client(api_key="k", base_url=hub.base_url) as client:
        source = client.generate("gpt-image-2", prompt="ox", resolution="1024x768")
        assert source.result_url is not None
        edited = client.edit_images(EDIT, prompt="night", input_image=source.result_url)
        assert edited.images[0].url
        with Image.open(io.BytesIO(httpx.get(edited.images[0].url).content)) as image:
            assert image.size == (1920, 1080)
        videos = client.generate_videos(KLING, prompt="a river")
        assert videos.videos[0].url
        record = client.generate(EDIT, prompt="dawn", input_image=[source.result_url])
        assert record.status == "succeeded"
