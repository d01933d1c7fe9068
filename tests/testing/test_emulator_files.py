"""Result files: another origin, presigned URLs, real images and videos."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import av
import httpx
import pytest
from PIL import Image

from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp
from oxen_queue.testing._media import render_image

from ._support import API_ORIGIN, asgi_client, enqueue

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(url_ttl=600.0), clock=clock)


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


async def _result_url(client: httpx.AsyncClient, clock: ManualClock, **params: object) -> str:
    [gid] = await enqueue(client, **params)
    clock.advance(120.0)  # long enough for a video, too
    row = (await client.get(f"/api/ai/queue/{gid}")).json()
    assert row["status"] == "succeeded", row
    return str(row["result_url"])


async def test_result_urls_are_on_another_origin_and_look_presigned(
    client: httpx.AsyncClient, clock: ManualClock, app: EmulatorApp
) -> None:
    url = urlsplit(await _result_url(client, clock))
    assert f"{url.scheme}://{url.netloc}" != API_ORIGIN
    assert url.netloc == "files.oxen.test"
    assert url.path.startswith("/files/user-") and url.path.endswith(".png")
    query = dict(part.split("=", 1) for part in url.query.split("&"))
    assert set(query) == {"expires", "signature"}
    assert int(query["expires"]) == pytest.approx(time.time() + 600, abs=30)


async def test_files_need_no_authorization_and_requests_carrying_one_are_counted(
    app: EmulatorApp, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    url = await _result_url(client, clock)
    async with asgi_client(app, key=None) as anonymous:
        assert (await anonymous.get(url)).status_code == 200
    assert (await client.get(url)).status_code == 200  # this client sends its key
    stats = app.state.snapshot()["file_requests"]
    assert stats == {"with_authorization": 1, "without_authorization": 1}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.split("&signature=")[0],
        lambda url: url.split("?")[0],
        lambda url: url[:-4] + ("0000" if not url.endswith("0000") else "1111"),
        lambda url: url.replace("expires=", "expires=1"),
    ],
)
async def test_a_missing_or_wrong_signature_is_403(
    client: httpx.AsyncClient, clock: ManualClock, tamper: Callable[[str], str]
) -> None:
    url = await _result_url(client, clock)
    response = await client.get(tamper(url))
    assert response.status_code == 403
    assert b"AccessDenied" in response.content


async def test_an_expired_url_is_403(client: httpx.AsyncClient, clock: ManualClock) -> None:
    url = await _result_url(client, clock)
    clock.advance(601.0)
    assert (await client.get(url)).status_code == 403


async def test_an_unknown_file_is_404(client: httpx.AsyncClient, clock: ManualClock) -> None:
    url = await _result_url(client, clock)
    assert (await client.get(url.replace(".png?", ".jpg?"))).status_code == 404
    other = "http://files.oxen.test/files/x/00000000-0000-4000-8000-000000000000.png"
    assert (await client.get(other)).status_code == 404
    assert (await client.post(url)).status_code == 405


@pytest.mark.parametrize(
    ("params", "size", "fmt", "content_type"),
    [
        ({}, (1920, 1080), "PNG", "image/png"),
        ({"resolution": "1024x1536", "output_format": "jpeg"}, (1024, 1536), "JPEG", "image/jpeg"),
        ({"resolution": "1024x1024", "output_format": "webp"}, (1024, 1024), "WEBP", "image/webp"),
        (
            {"model": "black-forest-labs-flux-2-klein-4b", "aspect_ratio": "9:16"},
            (768, 1344),
            "PNG",
            "image/png",
        ),
    ],
)
async def test_images_have_the_requested_size_and_format(
    client: httpx.AsyncClient,
    clock: ManualClock,
    params: dict[str, object],
    size: tuple[int, int],
    fmt: str,
    content_type: str,
) -> None:
    url = await _result_url(client, clock, **params)
    response = await client.get(url)
    assert response.headers["content-type"] == content_type
    assert int(response.headers["content-length"]) == len(response.content)
    image = Image.open(io.BytesIO(response.content))
    assert (image.size, image.format) == (size, fmt)


async def test_images_differ_per_generation(client: httpx.AsyncClient, clock: ManualClock) -> None:
    first = await client.get(await _result_url(client, clock))
    second = await client.get(await _result_url(client, clock))
    assert first.content != second.content


async def test_a_head_request_gives_the_length_without_the_body(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    url = await _result_url(client, clock, resolution="1024x768")
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len((await client.get(url)).content)


async def test_videos_are_real_mp4s_of_the_requested_shape(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    url = await _result_url(
        client,
        clock,
        model="kling-video-v2-6-pro-text-to-video",
        aspect_ratio="9:16",
        duration=10,
    )
    response = await client.get(url)
    assert response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"
    with av.open(io.BytesIO(response.content), mode="r") as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (180, 320)
        assert stream.codec_context.name in ("h264", "mpeg4")
        frames = len(list(container.decode(stream)))
    assert frames == 120  # 10 s at 12 fps


def test_a_4k_png_renders_with_a_long_prompt() -> None:
    """(How long it takes, about 0.3 s, is for a benchmark: no verdict on speed here.)"""
    data = render_image(3840, 2160, fmt="png", prompt="x " * 200, seed=1)
    assert Image.open(io.BytesIO(data)).size == (3840, 2160)
