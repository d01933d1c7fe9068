"""The models endpoints and the synchronous generation endpoints, in-process."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp
from oxen_queue.testing._catalog import MODELS

from ._support import PROMPT, OpenAPI, asgi_client

pytestmark = pytest.mark.anyio

GPT_IMAGE_2_SCHEMA = {
    "prompt": ("string", None, None),
    "resolution": (
        "string",
        "1920x1080",
        ["1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160"],
    ),
    "quality": ("string", "high", ["auto", "low", "medium", "high"]),
    "output_format": ("string", "png", ["png", "jpeg", "webp"]),
}


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI()


@pytest.fixture
def app() -> EmulatorApp:
    return create_app(clock=ManualClock())


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


async def test_models_list_is_an_openai_style_list_of_spec_models(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    body = (await client.get("/api/ai/models")).json()
    openapi.validate("ListModelsResponse", body)
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == list(MODELS)
    for model in body["data"]:
        assert model["object"] == "model" and model["owned_by"] == "oxen"
        assert model["model_type"] == "base" and model["deployments"] == []
        assert model["request_schema"] == model["json_request_schema"]


async def test_models_list_filters_by_developer(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/ai/models", params={"developer_name": "openai"})).json()
    assert [model["id"] for model in body["data"]] == [
        "gpt-image-2",
        "gpt-image-2-edit",
        "gpt-4o-mini",
    ]
    body = (await client.get("/api/ai/models", params={"action": "sft"})).json()
    assert body["data"] == []


async def test_gpt_image_2_has_exactly_the_documented_parameters(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    model = (await client.get("/api/ai/models/gpt-image-2")).json()
    openapi.validate("Model", model)
    schema = model["json_request_schema"]
    assert schema == model["request_schema"]
    assert schema["required"] == ["prompt"]
    assert set(schema["basic"]) <= set(schema["properties"])
    described = {
        name: (prop["type"], prop.get("default") if name != "prompt" else None, prop.get("enum"))
        for name, prop in schema["properties"].items()
    }
    assert described == GPT_IMAGE_2_SCHEMA
    orders = [prop["x-order"] for prop in schema["properties"].values()]
    assert orders == sorted(orders)
    assert all(prop["description"] for prop in schema["properties"].values())
    assert model["endpoint"] == "/images/generate"
    assert model["capabilities"] == {"input": ["text"], "output": ["image"]}
    assert schema["additionalProperties"] is False
    assert model["pricing"]["method"] == "per_image"


async def test_video_and_chat_models_look_as_documented(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    kling = (await client.get("/api/ai/models/kling-video-v2-6-pro-text-to-video")).json()
    openapi.validate("Model", kling)
    schema = kling["request_schema"]
    assert schema == kling["json_request_schema"]
    assert list(schema["properties"]) == [
        "prompt",
        "negative_prompt",
        "aspect_ratio",
        "duration",
        "generate_audio",
        "cfg_scale",
    ]
    assert schema["required"] == ["prompt"] and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["duration"]["type"] == "integer" and props["cfg_scale"]["default"] == 0.5
    assert props["aspect_ratio"]["enum"] == ["16:9", "9:16", "1:1"]
    assert props["aspect_ratio"]["default"] == "16:9"
    assert props["duration"]["enum"] == [5, 10] and props["duration"]["default"] == 5
    assert props["generate_audio"]["default"] is False
    assert (props["cfg_scale"]["minimum"], props["cfg_scale"]["maximum"]) == (0, 10)
    assert kling["pricing"]["method"] == "per_video_output_second"
    chat = (await client.get("/api/ai/models/gpt-4o-mini")).json()
    openapi.validate("Model", chat)
    assert chat["request_schema"] is None and chat["endpoint"] == "/chat/completions"


async def test_an_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/ai/models/bad-model-name")
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Model not found: bad-model-name"}}


async def test_images_generate_answers_urls_of_real_images(
    client: httpx.AsyncClient, app: EmulatorApp, openapi: OpenAPI
) -> None:
    response = await client.post(
        "/api/ai/images/generate",
        json={"model": "gpt-image-2", "prompt": PROMPT, "resolution": "1024x768", "n": 2},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    openapi.validate("ImageGenerateResponse", body)
    assert body["model"] == "gpt-image-2" and isinstance(body["created"], int)
    assert [image["revised_prompt"] for image in body["images"]] == [None, None]
    for image in body["images"]:
        file = await client.get(image["url"], headers={"Authorization": ""})
        assert file.status_code == 200
        assert Image.open(io.BytesIO(file.content)).size == (1024, 768)
    assert app.state.stats.sync_generations == 2
    assert app.state.stats.jobs_created == 0  # not queue rows


async def test_images_generate_b64_json_inlines_the_file(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/ai/images/generate",
        json={
            "model": "black-forest-labs-flux-2-klein-4b",
            "prompt": PROMPT,
            "aspect_ratio": "16:9",
            "response_format": "b64_json",
        },
    )
    assert response.status_code == 200, response.text
    [item] = response.json()["images"]
    assert set(item) == {"b64_json"}
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert (image.format, image.size) == ("PNG", (1344, 768))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "gpt-image-2", "prompt": ""}, "Prompt cannot be empty"),
        ({"model": "gpt-image-2"}, "Prompt cannot be empty"),
        ({"model": "bad-model-name", "prompt": "x"}, "Model not found: bad-model-name"),
        ({"model": "gpt-4o-mini", "prompt": "x"}, ":unsupported_media_type"),
        (
            {"model": "kling-video-v2-6-pro-text-to-video", "prompt": "x"},
            ":unsupported_media_type",
        ),
        (
            {"model": "gpt-image-2", "prompt": "x", "resolution": "999x999"},
            "Getting model response error: 422 - resolution: must be one of 1024x768, "
            "1024x1024, 1024x1536, 1920x1080, 2560x1440, 3840x2160",
        ),
        ({"model": "gpt-image-2", "prompt": "x", "n": 0}, "n must be an integer between 1 and 4"),
        (
            {"model": "gpt-image-2", "prompt": "x", "response_format": "file"},
            "response_format must be one of url, b64_json",
        ),
    ],
)
async def test_images_generate_validates_synchronously(
    client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    response = await client.post("/api/ai/images/generate", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message}}


async def test_videos_generate_answers_an_mp4(client: httpx.AsyncClient, openapi: OpenAPI) -> None:
    response = await client.post(
        "/api/ai/videos/generate",
        json={
            "model": "kling-video-v2-6-pro-text-to-video",
            "prompt": PROMPT,
            "duration": 5,
            "generate_audio": True,
            "cfg_scale": 2,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    openapi.validate("VideoGenerateResponse", body)
    [video] = body["videos"]
    assert urlsplit(video["url"]).path.endswith(".mp4")
    file = await client.get(video["url"])
    assert file.headers["content-type"] == "video/mp4"
    assert file.content[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"prompt": "x", "multi_prompt": [{"prompt": "y", "duration": 5}]},
            "Getting model response error: 422 - Value error, Cannot provide both 'prompt' "
            "and 'multi_prompt'.",
        ),
        (
            {},
            "Getting model response error: 422 - Value error, Either 'prompt' or "
            "'multi_prompt' must be provided.",
        ),
        (
            {"prompt": "x", "duration": 7},
            "Getting model response error: 422 - duration: must be one of 5, 10",
        ),
        (
            {"prompt": "x", "aspect_ratio": "4:3"},
            "Getting model response error: 422 - aspect_ratio: must be one of 16:9, 9:16, 1:1",
        ),
        ({"prompt": "x", "model": "gpt-image-2"}, ":unsupported_media_type"),
    ],
)
async def test_videos_generate_validates_synchronously_with_the_docs_messages(
    client: httpx.AsyncClient, app: EmulatorApp, body: dict[str, object], message: str
) -> None:
    body = {"model": "kling-video-v2-6-pro-text-to-video", **body}
    response = await client.post("/api/ai/videos/generate", json=body)
    assert (response.status_code, response.json()) == (400, {"error": {"message": message}})
    assert app.state.stats.sync_generations == 0


async def test_sync_generation_waits_its_scaled_duration_on_a_real_clock() -> None:
    # 10 s scaled to 0.1 s: the unscaled duration and no wait at all are both far outside.
    config = EmulatorConfig(image_duration=(10.0, 10.0), time_scale=0.01)
    async with asgi_client(create_app(config=config)) as client:
        started = time.perf_counter()
        response = await client.post(
            "/api/ai/images/generate", json={"model": "gpt-image-2", "prompt": "x"}
        )
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert 0.09 <= elapsed < 5.0
