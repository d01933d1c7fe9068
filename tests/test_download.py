"""Downloads: named by us, atomic, bounded, and the key never sent to the file host."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from oxen_queue import DownloadError, GenerationRecord

from .fakes import FakeAPI
from .helpers import fake_client

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2048


def serve_files(
    api: FakeAPI, body: bytes = PNG, content_type: str = "image/png", status: int = 200
) -> None:
    def files(request: httpx.Request) -> httpx.Response | None:
        if request.url.host != "files.oxen.test":
            return None
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    api.before.append(files)


async def test_download_names_the_file_after_the_id_and_sends_no_key(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api)
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        path = await client.download(record, tmp_path)
    assert path == tmp_path / f"{record.generation_id}.png"
    assert path.read_bytes() == PNG
    file_request = next(r for r in api.requests if r.url.host == "files.oxen.test")
    assert "authorization" not in file_request.headers
    assert list(tmp_path.iterdir()) == [path]


async def test_download_to_an_explicit_path_and_from_a_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeAPI()
    serve_files(api, content_type="image/jpeg")  # the label says JPEG; the bytes are PNG
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        path = await client.download(generation, tmp_path / "sub" / "ox.jpeg")
        other = await generation.download(tmp_path)
    assert path == tmp_path / "sub" / "ox.jpeg" and path.read_bytes() == PNG
    assert "its bytes are PNG" in caplog.text  # the caller's name is kept, the mismatch told
    assert other.suffix == ".png"  # our own name follows the bytes, not the label


async def test_a_directory_path_an_id_and_reading_into_memory(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api, content_type="application/octet-stream")
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        into_new_dir = await client.download(record.generation_id, f"{tmp_path}/new/")
        data = await client.read(record)
        by_id = await client.read(record.generation_id)
    assert into_new_dir == tmp_path / "new" / f"{record.generation_id}.png"
    assert into_new_dir.read_bytes() == data == by_id == PNG
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [into_new_dir.name]


async def test_server_supplied_names_never_choose_the_path(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api, content_type="application/x-evil")
    record = GenerationRecord(
        generation_id="../../etc/passwd",
        status="succeeded",
        result_url="https://files.oxen.test/../../../etc/passwd.sh",
    )
    async with fake_client(api) as client:
        path = await client.download(record, tmp_path)
    assert path.parent == tmp_path
    assert path.name == "etcpasswd.png"  # the bytes name the extension, not the label


async def test_an_oversized_file_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api, body=b"x" * 10_000)
    async with fake_client(api, max_download_bytes=1000) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match="1000 byte limit"):
            await client.download(record, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_body_longer_than_declared_is_cut_off_and_removed(tmp_path: Path) -> None:
    api = FakeAPI()

    def lying(request: httpx.Request) -> httpx.Response | None:
        if request.url.host != "files.oxen.test":
            return None
        return httpx.Response(200, content=b"x" * 10_000, headers={"content-length": "10"})

    api.before.append(lying)
    async with fake_client(api, max_download_bytes=1000) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError):
            await client.download(record, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_an_interrupted_download_leaves_no_half_file(tmp_path: Path) -> None:
    api = FakeAPI()

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b"x" * 1000
            raise httpx.ReadError("connection reset")

    def broken(request: httpx.Request) -> httpx.Response | None:
        if request.url.host != "files.oxen.test":
            return None
        return httpx.Response(200, stream=Broken(), headers={"content-type": "image/png"})

    api.before.append(broken)
    target = tmp_path / "ox.png"
    target.write_bytes(b"previous")
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match="connection reset"):
            await client.download(record, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ox.png"]
    assert target.read_bytes() == b"previous"


async def test_refusals_and_missing_urls_raise_download_error(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api, status=403, body=b"expired")
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match="HTTP 403"):
            await client.download(record, tmp_path)
        with pytest.raises(DownloadError, match="no result_url"):
            await client.download(GenerationRecord(generation_id="g", status="failed"), tmp_path)
        with pytest.raises(DownloadError, match="'file'"):
            await client.download(
                GenerationRecord(
                    generation_id="g", status="succeeded", result_url="file:///etc/passwd"
                ),
                tmp_path,
            )
