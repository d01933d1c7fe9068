"""Checked by mypy only (never run): the public API's types as users' editors see them."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import assert_type

import starlette.requests

from oxen_queue import (
    AsyncClient,
    Client,
    Generation,
    GenerationHistory,
    GenerationPage,
    GenerationRecord,
    GptImage2EditOptions,
    GptImage2Options,
    ImagesResponse,
    KlingV26ProTextToVideoOptions,
    Model,
    SpendSummary,
    SyncGeneration,
    SyncGenerationHistory,
    VideosResponse,
    as_completed,
)
from oxen_queue.asgi import cancel_on_disconnect


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
    generation = client.enqueue(
        "gpt-image-2", prompt="ox", resolution="1920x1080", quality="high", output_format="png"
    )
    assert_type(generation, SyncGeneration)
    assert_type(generation.result(timeout=5), GenerationRecord)
    assert_type(client.generate("gpt-image-2", prompt="ox"), GenerationRecord)
    assert_type(
        client.enqueue("gpt-image-2", prompt="ox", deadline=None, extra_params={"seed": 1}),
        SyncGeneration,
    )
    assert_type(client.enqueue("some-video-model", prompt="ox", duration=5), SyncGeneration)
    assert_type(
        client.enqueue_many("gpt-image-2", 3, prompt="ox", validate=False), list[SyncGeneration]
    )
    assert_type(client.download("generation-id", "out/"), Path)
    assert_type(client.download(generation), Path)
    assert_type(client.read(client.get_generation("generation-id")), bytes)
    assert_type(client.list_generations(page=2, media_type="video"), GenerationPage)
    options: GptImage2Options = {"resolution": "1024x1024", "quality": "low"}
    client.generate("gpt-image-2", prompt="ox", **options)


async def check_the_blocking_client_is_typed_like_the_async_one(
    client: AsyncClient, blocking: Client
) -> None:
    """The same mistakes are type errors on both (each ignore is checked: warn_unused_ignores)."""
    AsyncClient(timeout="30 s")  # type: ignore[arg-type]
    Client(timeout="30 s")  # type: ignore[arg-type]
    AsyncClient(api_kye="k")  # type: ignore[call-arg]
    Client(api_kye="k")  # type: ignore[call-arg]
    await client.list_queue(media_type="audio")  # type: ignore[arg-type]
    blocking.list_queue(media_type="audio")  # type: ignore[arg-type]
    blocking.download(42)  # type: ignore[arg-type]


async def check_a_bad_resolution(client: AsyncClient, blocking: Client) -> None:
    """A bad ``resolution`` for gpt-image-2 is a type error in its typed options, on both."""
    options: GptImage2Options = {"resolution": "999x999"}  # type: ignore[typeddict-item]
    await client.generate("gpt-image-2", prompt="ox", **options)
    blocking.generate("gpt-image-2", prompt="ox", **options)
    # Written inline in the call it is not, on either client: the generic overload (any
    # model, any keyword) accepts it too, and no type says "any str but 'gpt-image-2'". The
    # client refuses it at run time, before sending anything (InvalidParamsError). Should a
    # checker start flagging these two lines, this file fails and the docs must say so.
    await client.generate("gpt-image-2", prompt="ox", resolution="999x999")
    blocking.generate("gpt-image-2", prompt="ox", resolution="999x999")


async def check_edits_videos_and_cost(client: AsyncClient, blocking: Client) -> None:
    """The edit and video models complete like gpt-image-2, on both clients; cost and history
    calls have their types."""
    edit = await client.enqueue(
        "gpt-image-2-edit",
        prompt="night",
        input_image=["https://x/a.png", "https://x/b.png"],
        mask="https://x/m.png",
        quality="low",
        resolution="1024x1024",
    )
    assert_type(edit, Generation)
    video = await client.generate(
        "kling-video-v2-6-pro-text-to-video",
        prompt="a river",
        duration=10,
        aspect_ratio="9:16",
        generate_audio=True,
        cfg_scale=0.7,
        negative_prompt="boats",
    )
    assert_type(video, GenerationRecord)
    assert_type(
        blocking.enqueue("gpt-image-2-edit", prompt="n", input_image="https://x/a.png"),
        SyncGeneration,
    )
    assert_type(
        blocking.generate("kling-video-v2-6-pro-text-to-video", prompt="r"), GenerationRecord
    )
    options: KlingV26ProTextToVideoOptions = {"duration": 7}  # type: ignore[typeddict-item]
    await client.enqueue("kling-video-v2-6-pro-text-to-video", prompt="r", **options)
    blocking.enqueue("kling-video-v2-6-pro-text-to-video", prompt="r", **options)
    ratio: KlingV26ProTextToVideoOptions = {"aspect_ratio": "4:3"}  # type: ignore[typeddict-item]
    await client.generate("kling-video-v2-6-pro-text-to-video", prompt="r", **ratio)
    edit_options: GptImage2EditOptions = {"quality": "ultra"}  # type: ignore[typeddict-item]
    await client.enqueue("gpt-image-2-edit", prompt="n", input_image="u", **edit_options)
    # Inline, a wrong type falls through to the generic overload, as for gpt-image-2 (see
    # check_a_bad_resolution): the client refuses it at run time, before sending anything.
    await client.enqueue("gpt-image-2-edit", prompt="n", input_image=42)
    assert_type(await client.estimate_cost("gpt-image-2", num_generations=2, prompt="x"), Decimal)
    assert_type(blocking.estimate_cost("gpt-image-2", prompt="x"), Decimal)
    assert_type(await client.get_generation_details("id"), GenerationRecord)
    history = client.iter_generations(model="gpt-image-2", status="succeeded", repo="r")
    assert_type(history, GenerationHistory)
    async for record in history:
        assert_type(record, GenerationRecord)
        assert_type(record.cost, Decimal | None)
    assert_type(history.total_cost, Decimal | None)
    rows = blocking.iter_generations(media_type="video", folder="f", namespace="org")
    assert_type(rows, SyncGenerationHistory)
    for row in rows:
        assert_type(row, GenerationRecord)
    assert_type(client.spend, SpendSummary | None)
    assert_type(blocking.spend, SpendSummary | None)
    assert_type(
        await client.edit_images("gpt-image-2-edit", prompt="n", input_image="u"), ImagesResponse
    )
    assert_type(
        blocking.generate_videos("kling-video-v2-6-pro-text-to-video", prompt="r"), VideosResponse
    )
    AsyncClient(max_spend=Decimal("25.50"))
    Client(max_spend=25)
    AsyncClient(max_spend=25.5)  # type: ignore[arg-type]
    await client.list_queue(repo="r", folder="f", namespace="n", status="queued")


async def check_the_blocking_client_maps_every_handle_type(
    client: AsyncClient, blocking: Client
) -> None:
    """Client is generated from AsyncClient: the same surface, with each handle type mapped
    (Generation -> SyncGeneration, GenerationHistory -> SyncGenerationHistory, AsyncClient ->
    Client), and the async handles refused by the blocking client and the other way round."""
    assert_type(client.pending, Mapping[str, Generation])
    assert_type(blocking.pending, Mapping[str, SyncGeneration])
    assert_type(client.with_options(validate=False), AsyncClient)
    assert_type(blocking.with_options(validate=False, deadline=None), Client)
    assert_type(await client.recover(wait=None), list[Generation])
    assert_type(blocking.recover(wait=None), list[SyncGeneration])
    assert_type(blocking.generation("id", deadline=5), SyncGeneration)
    assert_type(blocking.iter_generations(), SyncGenerationHistory)
    with Client() as opened:
        assert_type(opened, Client)
    blocking.close()
    async_generation = client.generation("id")
    sync_generation = blocking.generation("id")
    blocking.cancel(sync_generation)
    blocking.cancel(async_generation)  # type: ignore[arg-type]
    await client.cancel(sync_generation)  # type: ignore[arg-type]
    blocking.read(async_generation)  # type: ignore[arg-type]
    # The blocking batch() takes no progress callbacks (they would run on the loop's thread).
    await client.batch("gpt-image-2", [], on_enqueued=print)
    blocking.batch("gpt-image-2", [], on_enqueued=print)  # type: ignore[call-arg]
    edit_options: GptImage2EditOptions = {"mask": "https://x/m.png", "target_repo": "r"}
    assert_type(
        blocking.enqueue("gpt-image-2-edit", prompt="n", input_image="u", **edit_options),
        SyncGeneration,
    )
    bad: GptImage2EditOptions = {"mask": None}  # type: ignore[typeddict-item]
    blocking.generate("gpt-image-2-edit", prompt="n", input_image="u", **bad)


async def check_asgi(request: starlette.requests.Request, client: AsyncClient) -> None:
    """Starlette's (and FastAPI's) Request is what cancel_on_disconnect takes."""
    record = await cancel_on_disconnect(request, client.generate("gpt-image-2", prompt="ox"))
    assert_type(record, GenerationRecord)
    await cancel_on_disconnect(object(), client.get_model("m"))  # type: ignore[arg-type]
