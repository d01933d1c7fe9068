"""Result files that are not what the generation made (issue 14), from a real file origin.

The files origin answers 0 bytes, an HTML page for a ``.png``, or an image for a video: each
is a ``DownloadError`` on that download alone (and on ``read()``), with nothing left in the
directory. Two generations whose ids clean to the same file name, saved to one directory, are
two files.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from oxen_queue import DownloadError, GenerationRecord

from .actions import reply
from .server import HostileServer
from .support import PROMPT, make_client

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1024
HTML = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body></body></html>"
VIDEO_MODEL = "kling-video-v2-6-pro-text-to-video"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        pytest.param(b"", "image/png", "is empty, not an image", id="zero-bytes"),
        pytest.param(HTML, "text/html; charset=utf-8", "is text", id="html-page"),
        pytest.param(HTML, "image/png", "is text", id="html-labelled-png"),
    ],
)
async def test_an_empty_or_html_result_for_an_image_is_refused_and_nothing_is_left(
    server: HostileServer, tmp_path: Path, body: bytes, content_type: str, message: str
) -> None:
    server.on(
        "GET", "/files/{ns}/{name}", reply(200, body, content_type=content_type), origin="files"
    )
    async with make_client(server) as client:
        with anyio.fail_after(10):
            record = await client.generate("gpt-image-2", prompt=PROMPT)
            assert record.media_type == "image" and record.result_url is not None
            assert record.result_url.split("?")[0].endswith(".png")
            with pytest.raises(DownloadError, match=message):
                await client.download(record, tmp_path)
            with pytest.raises(DownloadError, match=message):
                await client.read(record)
            # The client goes on: the refusal concerned that one download.
            assert (await client.get_generation(record.generation_id)).status == "succeeded"
    assert list(tmp_path.iterdir()) == []
    assert server.count("GET", "/files/{ns}/{name}", origin="files") == 2


async def test_an_image_for_a_video_generation_is_refused_and_nothing_is_left(
    server: HostileServer, tmp_path: Path
) -> None:
    server.on(
        "GET", "/files/{ns}/{name}", reply(200, PNG, content_type="video/mp4"), origin="files"
    )
    async with make_client(server) as client:
        with anyio.fail_after(20):
            record = await client.generate(VIDEO_MODEL, prompt=PROMPT)
            assert record.media_type == "video"
            with pytest.raises(DownloadError, match=r"is an image \(PNG, video/mp4\), not a video"):
                await client.download(record, tmp_path)
            with pytest.raises(DownloadError, match="not a video"):
                await client.read(record)
    assert list(tmp_path.iterdir()) == []


async def test_generations_whose_ids_clean_alike_are_saved_as_separate_files(
    server: HostileServer, tmp_path: Path
) -> None:
    """The server names generations ``ab``, ``a.b``, ``AB`` and ``a~b``: one directory gets
    four files, each with its own bytes (none overwrote another, also where case folds)."""
    ids = ["ab", "a.b", "AB", "a~b"]
    bodies = {generation_id: PNG + generation_id.encode() for generation_id in ids}
    for generation_id in ids:
        row = {
            "generation_id": generation_id,
            "status": "succeeded",
            "media_type": "image",
            "model_name": "gpt-image-2",
            "result_url": f"{server.files_url}/files/ns/{generation_id}.png?signature=x",
        }
        server.on("GET", f"/api/ai/queue/{generation_id}", reply(200, json.dumps(row).encode()))
        server.on(
            "GET",
            f"/files/ns/{generation_id}.png",
            reply(200, bodies[generation_id], content_type="image/png"),
            origin="files",
        )
    async with make_client(server) as client:
        with anyio.fail_after(10):
            records: list[GenerationRecord] = [await client.get_generation(i) for i in ids]
            paths = [await client.download(record, tmp_path) for record in records]
    assert [record.generation_id for record in records] == ids
    assert len({path.name.casefold() for path in paths}) == len(ids)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(p.name for p in paths)
    for generation_id, path in zip(ids, paths, strict=True):
        assert path.read_bytes() == bodies[generation_id]
    assert paths[0].name == "ab.png"  # a clean id is its own name
