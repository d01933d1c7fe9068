"""gpt-image-2-edit: its schema, POST /api/ai/images/edit and queued edits, composed from the
emulator's own files and never from anywhere else."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image, ImageOps

from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp
from oxen_queue.testing._media import compose_image

from ._support import API_ORIGIN, OpenAPI, asgi_client, auth, enqueue

pytestmark = pytest.mark.anyio

EDIT = "gpt-image-2-edit"
INSTRUCTION = "Make it night, with a full moon"
LEFT_STRIP = (0, 0, 80, 768)  # clear of the prompt's box on a 1024x768 image
UNKNOWN_FILE = "/files/user-0/00000000-0000-4000-8000-000000000000.png"


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=5), clock=clock)


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that records whether anything connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _rgb(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    pixel = image.getpixel((x, y))
    assert isinstance(pixel, tuple)
    return int(pixel[0]), int(pixel[1]), int(pixel[2])


def _implied_tints(
    output: Image.Image, source: Image.Image, box: tuple[int, int, int, int], *, dx: int = 0
) -> list[tuple[float, ...]]:
    """Per sampled pixel, the tint that blended over ``source`` at a quarter gives
    ``output`` (whose box is ``box`` shifted by ``dx``)."""
    out, src = output.convert("RGB"), source.convert("RGB")
    tints = []
    for x in range(box[0], box[2], 9):
        for y in range(box[1], box[3], 9):
            o, s = _rgb(out, x + dx, y), _rgb(src, x, y)
            tints.append(tuple((oc - 0.75 * sc) / 0.25 for oc, sc in zip(o, s, strict=True)))
    return tints


def _assert_one_tint_over(tints: list[tuple[float, ...]]) -> None:
    """One constant colour explains every sampled pixel: the output is that source, tinted."""
    for channel in range(3):
        values = [tint[channel] for tint in tints]
        assert max(values) - min(values) <= 10, (min(values), max(values))


async def _generated(client: httpx.AsyncClient, **params: Any) -> tuple[str, Image.Image]:
    """A plain generation's URL (on the emulator's file origin) and its image."""
    body = {"model": "gpt-image-2", "prompt": "An ox", "resolution": "1024x768", **params}
    response = await client.post("/api/ai/images/generate", json=body)
    assert response.status_code == 200, response.text
    url = str(response.json()["images"][0]["url"])
    return url, _open((await client.get(url)).content)


async def _edit(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("model", EDIT)
    body.setdefault("prompt", INSTRUCTION)
    return await client.post("/api/ai/images/edit", json=body)


async def test_the_edit_model_publishes_exactly_its_parameters(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    """prompt and input_image required; input_image a URL or 1-16 URLs; mask a URL;
    gpt-image-2's resolution, quality and output_format; nothing else."""
    model = (await client.get(f"/api/ai/models/{EDIT}")).json()
    openapi.validate("Model", model)
    gpt = (await client.get("/api/ai/models/gpt-image-2")).json()["request_schema"]
    schema = model["request_schema"]
    assert schema == model["json_request_schema"]
    assert list(schema["properties"]) == [
        "prompt",
        "input_image",
        "mask",
        "resolution",
        "quality",
        "output_format",
    ]
    assert schema["required"] == ["prompt", "input_image"]
    assert schema["additionalProperties"] is False
    images = schema["properties"]["input_image"]
    assert images["type"] == ["string", "array"]
    assert (images["items"]["type"], images["minItems"], images["maxItems"]) == ("string", 1, 16)
    assert schema["properties"]["mask"]["type"] == "string"
    assert "default" not in schema["properties"]["prompt"]
    for name in ("resolution", "quality", "output_format"):
        mine, theirs = schema["properties"][name], gpt["properties"][name]
        assert (mine["enum"], mine["default"]) == (theirs["enum"], theirs["default"])
    assert model["capabilities"] == {"input": ["text", "image"], "output": ["image"]}


async def test_an_edit_is_composed_from_its_input_image(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    """The output has the requested size and format, is the input under a uniform tint (with
    the prompt drawn on top) and differs from the input and from a plain generation."""
    url, source = await _generated(client)
    response = await _edit(client, input_image=url, resolution="1024x768")
    assert response.status_code == 200, response.text
    body = response.json()
    openapi.validate("ImageGenerateResponse", body)
    assert body["model"] == EDIT
    [item] = body["images"]
    output_bytes = (await client.get(item["url"])).content
    output = _open(output_bytes)
    assert (output.format, output.size) == ("PNG", (1024, 768))
    _assert_one_tint_over(_implied_tints(output, source, LEFT_STRIP))
    assert output.tobytes() != source.tobytes()
    _, plain = await _generated(client, prompt=INSTRUCTION)
    assert output.tobytes() != plain.tobytes()


@pytest.mark.parametrize(
    ("params", "size", "fmt"),
    [
        ({"resolution": "1024x1536", "output_format": "jpeg"}, (1024, 1536), "JPEG"),
        ({"resolution": "1920x1080", "output_format": "webp"}, (1920, 1080), "WEBP"),
        ({}, (1920, 1080), "PNG"),  # the defaults, as gpt-image-2's
    ],
)
async def test_an_edit_has_the_requested_resolution_and_format(
    client: httpx.AsyncClient, params: dict[str, Any], size: tuple[int, int], fmt: str
) -> None:
    url, _ = await _generated(client)
    response = await _edit(client, input_image=[url], **params)
    assert response.status_code == 200, response.text
    file = await client.get(response.json()["images"][0]["url"])
    assert file.headers["content-type"] == f"image/{fmt.lower()}"
    image = _open(file.content)
    assert (image.format, image.size) == (fmt, size)


async def test_several_inputs_are_tiled_side_by_side(client: httpx.AsyncClient) -> None:
    """Two inputs: the first fills the left half, the second the right, each fitted."""
    first_url, first = await _generated(client)
    second_url, second = await _generated(client, resolution="1024x1536")
    response = await _edit(client, input_image=[first_url, second_url], resolution="1024x768")
    assert response.status_code == 200, response.text
    output = _open((await client.get(response.json()["images"][0]["url"])).content)
    cell = (512, 768)
    strip = (0, 0, 60, 60)  # the top-left corner of a cell, clear of the prompt's box
    _assert_one_tint_over(_implied_tints(output, ImageOps.fit(first, cell), strip))
    _assert_one_tint_over(_implied_tints(output, ImageOps.fit(second, cell), strip, dx=512))


async def test_the_specs_image_field_stands_for_input_image_but_not_both(
    client: httpx.AsyncClient,
) -> None:
    url, _ = await _generated(client)
    assert (await _edit(client, image=url, resolution="1024x768")).status_code == 200
    both = await _edit(client, image=url, input_image=url)
    assert (both.status_code, both.json()) == (
        400,
        {"error": {"message": "Cannot provide both 'image' and 'input_image'."}},
    )


async def test_a_mask_is_accepted_and_b64_json_inlines_the_edit(client: httpx.AsyncClient) -> None:
    url, _ = await _generated(client)
    mask_url, _ = await _generated(client, prompt="mask")
    response = await _edit(client, input_image=url, mask=mask_url, n=2, response_format="b64_json")
    assert response.status_code == 200, response.text
    images = [_open(base64.b64decode(i["b64_json"])) for i in response.json()["images"]]
    assert [image.size for image in images] == [(1920, 1080)] * 2
    assert images[0].tobytes() != images[1].tobytes()  # each result is its own


def test_a_mask_limits_the_edit_to_where_it_is_transparent_or_white() -> None:
    """Opaque (or black) mask areas keep the input's pixels exactly; the others change."""
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (200, 30, 30)).save(buffer, format="PNG")
    red = buffer.getvalue()
    alpha = Image.new("RGBA", (200, 100), (0, 0, 0, 255))
    alpha.paste((0, 0, 0, 0), (100, 0, 200, 100))  # the right half is transparent
    grey = Image.new("L", (200, 100), 0)
    grey.paste(255, (100, 0, 200, 100))  # the right half is white
    for mask_image in (alpha, grey):
        buffer = io.BytesIO()
        mask_image.save(buffer, format="PNG")
        data = compose_image(
            200, 100, fmt="png", images=[red], mask=buffer.getvalue(), prompt="", seed=1
        )
        output = _open(data).convert("RGB")
        assert _rgb(output, 2, 2) == (200, 30, 30)
        assert _rgb(output, 197, 2) != (200, 30, 30)


async def test_a_queued_edit_composes_from_its_inputs_and_is_charged_its_grid_price(
    client: httpx.AsyncClient, clock: ManualClock, openapi: OpenAPI
) -> None:
    url, source = await _generated(client)
    [gid] = await enqueue(client, model=EDIT, input_image=[url], resolution="1024x768")
    clock.advance(60.0)
    shown = (await client.get(f"/api/ai/generations/{gid}")).json()
    openapi.validate("GenerationsShowResponse", shown)
    row = shown["generation"]
    assert row["status"] == "succeeded", row
    assert row["input_image"] == [url]  # the request's params, merged in
    pricing = (await client.get(f"/api/ai/models/{EDIT}")).json()["pricing"]
    assert Decimal(row["cost"]) == Decimal(str(pricing["cost_per_image_grid"]["high"]["1024x768"]))
    output = _open((await client.get(row["result_url"])).content)
    assert output.size == (1024, 768)
    _assert_one_tint_over(_implied_tints(output, source, LEFT_STRIP))


def _refusal(field: str, status: int, reason: str, url: str) -> str:
    return f"Failed to download {field}: {status} Client Error: {reason} for url: {url}"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cat.png",
        f"{API_ORIGIN}{UNKNOWN_FILE}",  # the API's origin is not the file origin
        f"http://files.oxen.test:8080{UNKNOWN_FILE}",  # nor is another port
        f"https://files.oxen.test{UNKNOWN_FILE}",  # nor another scheme
        "file:///etc/passwd",
        "ftp://files.oxen.test/files/x.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "not a url",
        "http://[::1",
    ],
)
async def test_an_input_anywhere_but_the_emulators_file_origin_is_refused(
    client: httpx.AsyncClient, app: EmulatorApp, url: str
) -> None:
    response = await _edit(client, input_image=url)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": _refusal("input_image", 403, "Forbidden", url)}}
    assert app.state.stats.sync_generations == 0


async def test_missing_unsigned_and_non_image_files_of_its_own_origin_are_refused(
    client: httpx.AsyncClient,
) -> None:
    """As the file origin answers them: 404 Not Found, 403 Forbidden; a video is no image."""
    url, _ = await _generated(client)
    unsigned = url.split("?")[0]
    missing = f"http://files.oxen.test{UNKNOWN_FILE}"
    cases = {
        missing: _refusal("input_image", 404, "Not Found", missing),
        unsigned: _refusal("input_image", 403, "Forbidden", unsigned),
    }
    for bad, message in cases.items():
        response = await _edit(client, input_image=[url, bad])
        assert (response.status_code, response.json()) == (400, {"error": {"message": message}})
    video = await client.post(
        "/api/ai/videos/generate",
        json={"model": "kling-video-v2-6-pro-text-to-video", "prompt": "x"},
    )
    video_url = video.json()["videos"][0]["url"]
    response = await _edit(client, input_image=video_url)
    assert response.json()["error"]["message"] == (
        f"Getting model response error: 422 - input_image: {video_url} is not an image"
    )
    foreign_mask = await _edit(client, input_image=url, mask="https://example.com/m.png")
    assert foreign_mask.json()["error"]["message"] == _refusal(
        "mask", 403, "Forbidden", "https://example.com/m.png"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Getting model response error: 422 - input_image: is required"),
        (
            {"input_image": []},
            "Getting model response error: 422 - input_image: must have at least 1 item",
        ),
        (
            {"input_image": ["http://files.oxen.test/x"] * 17},
            "Getting model response error: 422 - input_image: must have at most 16 items",
        ),
        (
            {"input_image": [3]},
            "Getting model response error: 422 - input_image: item 0 must be a string",
        ),
        (
            {"input_image": "u", "size": "1024x1024"},
            "Getting model response error: 422 - size: is not a parameter of this model",
        ),
        ({"input_image": "u", "prompt": " "}, "Prompt cannot be empty"),
        (
            {"input_image": "u", "model": "gpt-image-2"},
            "Model gpt-image-2 does not take input images",
        ),
        ({"input_image": "u", "model": "nope"}, "Model not found: nope"),
    ],
)
async def test_images_edit_validates_synchronously(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await _edit(client, **body)
    assert (response.status_code, response.json()) == (400, {"error": {"message": message}})


async def test_a_queued_edit_of_a_foreign_url_fails_when_it_runs_and_is_billed(
    client: httpx.AsyncClient, clock: ManualClock, app: EmulatorApp
) -> None:
    foreign = "https://example.com/cat.png"
    [gid] = await enqueue(client, model=EDIT, input_image=foreign, quality="low")
    assert (await client.get(f"/api/ai/queue/{gid}")).json()["status"] == "queued"
    clock.advance(2.0)
    row = (await client.get(f"/api/ai/generations/{gid}")).json()["generation"]
    assert row["status"] == "failed" and row["result_url"] is None
    assert row["error_message"] == _refusal("input_image", 403, "Forbidden", foreign)
    assert row["cost"] == "0.03"
    assert app.state.stats.jobs_billed == 1


async def test_no_request_ever_leaves_for_a_foreign_input(
    client: httpx.AsyncClient, clock: ManualClock, listener: socket.socket
) -> None:
    """Inputs on a live loopback port: refused, blocking or queued, and nothing connects."""
    port = listener.getsockname()[1]
    foreign = f"http://127.0.0.1:{port}{UNKNOWN_FILE}"
    response = await _edit(client, input_image=foreign, mask=foreign)
    assert response.status_code == 400
    [gid] = await enqueue(client, model=EDIT, input_image=[foreign, foreign])
    clock.advance(60.0)
    assert (await client.get(f"/api/ai/queue/{gid}")).json()["status"] == "failed"
    with pytest.raises(BlockingIOError):
        listener.accept()


@pytest.fixture(scope="module")
def live() -> Iterator[Emulator]:
    config = EmulatorConfig(queue_delay=(0.0, 0.0), image_duration=(0.0, 0.0))
    with Emulator(config=config) as emu:
        yield emu


async def test_a_running_emulator_edits_from_its_file_port_only(live: Emulator) -> None:
    """On real sockets the file origin is 127.0.0.1:<files port>: the API's port on the same
    host is another origin, refused."""
    async with httpx.AsyncClient(base_url=live.base_url, headers=auth(), timeout=30) as client:
        url, _ = await _generated(client)
        assert url.startswith(f"{live.files_url}/files/")
        response = await _edit(client, input_image=url, resolution="1024x768")
        assert response.status_code == 200, response.text
        output = _open((await client.get(response.json()["images"][0]["url"])).content)
        assert output.size == (1024, 768)
        elsewhere = url.replace(live.files_url, live.base_url)
        refused = await _edit(client, input_image=elsewhere)
        assert refused.json() == {
            "error": {"message": _refusal("input_image", 403, "Forbidden", elsewhere)}
        }
