"""Checked by mypy only (never run): the public API's types as users' editors see them."""

from __future__ import annotations

from typing import assert_type

from oxen_queue import (
    AsyncClient,
    Client,
    Generation,
    GenerationRecord,
    GptImage2Options,
    ImagesResponse,
    Model,
    SyncGeneration,
    as_completed,
)


async def check_async(client: AsyncClient) -> None:
    generation = await client.enqueue(
        "gpt-image-2", prompt="ox", resolution="1920x1080", quality="high", output_format="png"
    )
    assert_type(generation, Generation)
    assert_type(await generation, GenerationRecord)
    assert_type(await client.generate("gpt-image-2", prompt="ox"), GenerationRecord)
    assert_type(await client.enqueue("some-video-model", prompt="ox", duration=5), Generation)
    assert_type(await client.enqueue_many("gpt-image-2", 3, prompt="ox"), list[Generation])
    assert_type(client.generation("id"), Generation)
    assert_type(await client.get_model("gpt-image-2"), Model)
    assert_type(await client.generate_images("gpt-image-2", prompt="ox"), ImagesResponse)
    async for done in as_completed([generation]):
        assert_type(done, Generation)
    options: GptImage2Options = {"resolution": "1024x1024", "quality": "low"}
    await client.enqueue("gpt-image-2", prompt="ox", **options)


def check_sync(client: Client) -> None:
    generation = client.enqueue("gpt-image-2", prompt="ox")
    assert_type(generation, SyncGeneration)
    assert_type(generation.result(timeout=5), GenerationRecord)
    assert_type(client.generate("gpt-image-2", prompt="ox"), GenerationRecord)
