"""Downloads: named by us, atomic, bounded, and the key never sent to the file host."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.lowlevel
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue import DownloadError, GenerationRecord
from oxen_queue._download import FileFetcher
from oxen_queue._filenames import safe_name

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
    # Cleaned, so it carries a hash of the whole id; the bytes name the extension, not the label.
    assert path.name == f"{safe_name('../../etc/passwd')}.png"
    assert path.name.startswith("etcpasswd~")


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


# -- what a download accepts (see oxen_queue._media) -----------------------------------------

MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 2048
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
BMP = b"BM" + b"\x36\x00\x0c\x00" + b"\x00" * 200  # a format the rule does not know


def video_record(body_url: str = "https://files.oxen.test/v.mp4") -> GenerationRecord:
    return GenerationRecord(
        generation_id="v", status="succeeded", media_type="video", result_url=body_url
    )


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", ""])
async def test_an_empty_body_is_refused_by_download_and_read_and_leaves_nothing(
    tmp_path: Path, content_type: str
) -> None:
    api = FakeAPI()
    serve_files(api, body=b"", content_type=content_type)
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match="is empty, not an image"):
            await client.download(record, tmp_path)
        with pytest.raises(DownloadError, match="is empty"):
            await client.read(record)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (HTML, "text/html; charset=utf-8"),
        (HTML, "image/png"),  # text, whatever its label
        (b'{"error": "signature expired"}', "application/json"),
        (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>", "application/xml"),
        (b"Forbidden", "image/png"),
        (b"   \r\n", "image/png"),
    ],
)
async def test_text_for_an_image_is_refused_by_download_and_read_and_leaves_nothing(
    tmp_path: Path, body: bytes, content_type: str
) -> None:
    api = FakeAPI()
    serve_files(api, body=body, content_type=content_type)
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match=r"is text .* not an image"):
            await client.download(record, tmp_path)
        with pytest.raises(DownloadError, match="is text"):
            await client.read(record)
    assert list(tmp_path.iterdir()) == []


async def test_a_video_for_an_image_and_an_image_for_a_video_are_refused(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api, body=MP4, content_type="image/png")  # the label does not make it one
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match=r"is a video \(MP4, image/png\), not an image"):
            await client.download(record, tmp_path)
    api = FakeAPI()
    serve_files(api, body=PNG, content_type="video/mp4")
    async with fake_client(api) as client:
        with pytest.raises(DownloadError, match=r"is an image \(PNG, video/mp4\), not a video"):
            await client.download(video_record(), tmp_path)
        with pytest.raises(DownloadError, match="not a video"):
            await client.read(video_record())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream", "", "video/mp4"])
async def test_the_media_asked_for_is_kept_whatever_its_label(
    tmp_path: Path, content_type: str
) -> None:
    api = FakeAPI()
    serve_files(api, content_type=content_type)
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        path = await client.download(record, tmp_path)
        data = await client.read(record)
    assert path == tmp_path / f"{record.generation_id}.png"
    assert path.read_bytes() == data == PNG
    api = FakeAPI()
    serve_files(api, body=MP4, content_type=content_type)
    async with fake_client(api) as client:
        path = await client.download(video_record(), tmp_path)
    assert path == tmp_path / "v.mp4" and path.read_bytes() == MP4


async def test_unknown_bytes_are_kept_under_an_image_label_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeAPI()
    serve_files(api, body=BMP, content_type="image/bmp")
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        path = await client.download(record, tmp_path)
    assert path == tmp_path / f"{record.generation_id}.bin"  # no name from a label we don't know
    assert path.read_bytes() == BMP
    assert "bytes of no format known here, labelled image/bmp" in caplog.text


@pytest.mark.parametrize(
    ("content_type", "media_type"),
    [
        ("application/octet-stream", "image"),
        ("", "image"),
        ("text/plain", "image"),
        ("image/bmp", "video"),  # an image label, for a video
        ("application/octet-stream", None),
    ],
)
async def test_unknown_bytes_without_a_label_of_the_kind_asked_for_are_refused(
    tmp_path: Path, content_type: str, media_type: str | None
) -> None:
    api = FakeAPI()
    serve_files(api, body=BMP, content_type=content_type)
    record = GenerationRecord(
        generation_id="g",
        status="succeeded",
        media_type=media_type,
        result_url="https://files.oxen.test/g.png",
    )
    async with fake_client(api) as client:
        with pytest.raises(DownloadError, match="unknown bytes labelled"):
            await client.download(record, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_refused_body_leaves_the_callers_existing_file_as_it_was(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api, body=HTML, content_type="text/html")
    target = tmp_path / "ox.png"
    target.write_bytes(b"previous")
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError):
            await client.download(record, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ox.png"]
    assert target.read_bytes() == b"previous"


async def test_a_body_of_the_wrong_kind_is_refused_on_its_first_bytes() -> None:
    """A video sent for an image is refused as soon as its head is read, not after the
    whole (perhaps huge) file."""
    sent = 0

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            nonlocal sent
            yield MP4[:40]
            yield MP4[40:80]
            while True:
                await anyio.lowlevel.checkpoint()  # as a socket read is: where a stop lands
                sent += 1
                yield b"\x00" * 1024

    api = FakeAPI()

    def endless(request: httpx.Request) -> httpx.Response | None:
        if request.url.host != "files.oxen.test":
            return None
        return httpx.Response(200, stream=Endless(), headers={"content-type": "video/mp4"})

    api.before.append(endless)
    async with fake_client(api) as client:
        record = await client.generate("gpt-image-2", prompt="ox")
        with pytest.raises(DownloadError, match="not an image"):
            await client.read(record)
    assert sent <= 2


async def test_ids_that_clean_alike_are_saved_to_different_files(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api)
    ids = ["ab", "a/b", "a.b", "AB", "CON", "con", "nul", "LPT1"]
    async with fake_client(api) as client:
        paths = [
            await client.download(
                GenerationRecord(
                    generation_id=generation_id,
                    status="succeeded",
                    media_type="image",
                    result_url="https://files.oxen.test/x.png",
                ),
                tmp_path,
            )
            for generation_id in ids
        ]
    names = [path.name for path in paths]
    assert len({name.casefold() for name in names}) == len(ids)  # none overwrote another
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert names[0] == "ab.png"  # a clean id is its own name
    for name in names[4:]:
        assert name.split(".")[0].lower() not in {"con", "nul", "lpt1"}


# -- the rule, over any body and any label ---------------------------------------------------

_TAIL = st.binary(max_size=200)
# Bodies whose truth is known: text of every sort (always refused), media of a known kind
# (kept exactly when that kind was asked for, whatever the label), and bytes of any sort.
_TEXT_BODIES = st.one_of(
    st.just(b""),
    st.just(HTML),
    st.sampled_from([b'{"error": "expired"}', b"[1, 2]", b"<svg xmlns='x'/>", b"Not Found"]),
    st.text(
        st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from("\t\r\n "),
        max_size=120,
    ).map(lambda text: text.encode()),
)
_MEDIA_BODIES: dict[str, st.SearchStrategy[bytes]] = {
    "image": st.one_of(
        _TAIL.map(lambda tail: PNG[:8] + tail),
        _TAIL.map(lambda tail: b"\xff\xd8\xff\xe0" + tail),
        _TAIL.map(lambda tail: b"GIF89a" + tail),
        _TAIL.map(lambda tail: b"RIFF\x10\x00\x00\x00WEBPVP8 " + tail),
        _TAIL.map(lambda tail: b"\x00\x00\x00\x1cftypavif" + tail),
    ),
    "video": st.one_of(
        _TAIL.map(lambda tail: MP4[:12] + tail),
        _TAIL.map(lambda tail: b"\x00\x00\x00\x14ftypqt  " + tail),
        _TAIL.map(lambda tail: b"\x1a\x45\xdf\xa3" + tail),
    ),
}
_CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "image/png",
            "IMAGE/JPEG; charset=binary",
            "image/bmp",
            "video/mp4",
            "text/html; charset=utf-8",
            "application/json",
            "application/xml",
            "application/octet-stream",
            "",
        ]
    ),
    st.from_regex(r"[a-z]{1,8}/[a-z0-9.+-]{1,12}", fullmatch=True),
)


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, body: bytes, size: int) -> None:
        self._parts = [body[i : i + size] for i in range(0, len(body), size)]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            await anyio.lowlevel.checkpoint()
            yield part


def _fetcher(body: bytes, content_type: str | None, chunk: int) -> FileFetcher:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {} if content_type is None else {"content-type": content_type}
        return httpx.Response(200, stream=_Chunks(body, chunk), headers=headers)

    return FileFetcher(
        auth=httpx.Auth(),
        connect_timeout=5.0,
        stall_timeout=30.0,
        max_downloads=2,
        max_bytes=None,
        transport=httpx.MockTransport(answer),
        verify=True,
        headers={},
    )


def _body(truth: str) -> st.SearchStrategy[tuple[str, bytes]]:
    bodies = {"text": _TEXT_BODIES, "any": st.binary(max_size=300), **_MEDIA_BODIES}
    return st.tuples(st.just(truth), bodies[truth])


@settings(max_examples=80)
@given(
    # Drawn before the test runs (no data.draw inside the async test: an overrun's StopTest
    # raised there would end anyio's runner task with an exception nobody retrieves).
    truth_and_body=st.sampled_from(["text", "image", "video", "any"]).flatmap(_body),
    content_type=_CONTENT_TYPES,
    media_type=st.sampled_from(["image", "video", None, "audio"]),
    chunk=st.integers(min_value=1, max_value=80),
)
async def test_any_body_is_saved_whole_as_the_media_asked_for_or_refused_leaving_nothing(
    truth_and_body: tuple[str, bytes],
    content_type: str | None,
    media_type: str | None,
    chunk: int,
) -> None:
    truth, body = truth_and_body
    asked = media_type if media_type in ("image", "video") else None
    fetcher = _fetcher(body, content_type, chunk)
    record = GenerationRecord(
        generation_id="g/1",
        status="succeeded",
        result_url="https://files.oxen.test/x.png",
        media_type=media_type,
    )
    with tempfile.TemporaryDirectory() as directory:
        try:
            saved: Path | None = await fetcher.save(record, directory)
        except DownloadError:
            saved = None
        left = list(Path(directory).iterdir())
        kept = saved.read_bytes() if saved is not None else None
    try:
        read: bytes | None = await fetcher.read(record)
    except DownloadError:
        read = None
    finally:
        await fetcher.http.aclose()

    assert left == ([] if saved is None else [saved])  # no .part, no refused file
    assert kept == read  # one rule for download() and read()
    if saved is None:
        # Refused: text, unknown bytes, or media of the other kind; never the media asked
        # for, whatever its label.
        assert truth in ("text", "any") or asked not in (None, truth)
        return
    assert kept == body and body
    assert saved.name.startswith("g1~")
    kind = {".png": "image", ".jpg": "image", ".gif": "image", ".webp": "image"}
    kind |= {".avif": "image", ".mp4": "video", ".mov": "video", ".webm": "video"}
    assert truth != "text", "text is never kept"
    if truth in ("image", "video"):
        assert asked in (None, truth)
        assert kind[saved.suffix] == truth
    else:  # unknown bytes: kept as the kind asked for, by their bytes or their label
        label = (content_type or "").split(";")[0].strip().lower()
        shown = kind.get(saved.suffix) if saved.suffix != ".bin" else label.partition("/")[0]
        assert shown in ("image", "video") and asked in (None, shown)


# -- a result larger than what a download holds in memory ---------------------------------------


_LARGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (40 << 10)  # 10 MiB + a PNG's signature


class _Stalled(httpx.AsyncByteStream):
    """A large body whose last part never comes (until the download is cancelled)."""

    def __init__(self, body: bytes, started: anyio.Event) -> None:
        self._body = body
        self._started = started

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._body), 1 << 16):
            yield self._body[start : start + (1 << 16)]
        self._started.set()
        await anyio.sleep_forever()


def _large_record() -> GenerationRecord:
    return GenerationRecord(
        generation_id="big-1",
        status="succeeded",
        result_url="https://files.oxen.test/big.png",
        media_type="image",
    )


@pytest.mark.anyio
async def test_a_result_larger_than_memory_holds_is_spilled_and_saved_whole(
    tmp_path: Path,
) -> None:
    """Past what a download keeps in memory, the body goes to its temporary file as it comes:
    the file saved is the body, and nothing else is left in the directory."""
    fetcher = _fetcher(_LARGE, "image/png", 1 << 16)
    try:
        saved = await fetcher.save(_large_record(), tmp_path)
    finally:
        await fetcher.http.aclose()
    assert saved == tmp_path / "big-1.png"
    assert saved.read_bytes() == _LARGE
    assert list(tmp_path.iterdir()) == [saved]


@pytest.mark.anyio
async def test_a_large_download_cancelled_midway_leaves_no_file(tmp_path: Path) -> None:
    """Cancelled once most of a large body is spilled to its temporary file: no file at all
    is left, the temporary one included (asyncio's own cancellation and trio's alike)."""
    started = anyio.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=_Stalled(_LARGE, started), headers={"content-type": "image/png"}
        )

    fetcher = FileFetcher(
        auth=httpx.Auth(),
        connect_timeout=5.0,
        stall_timeout=30.0,
        max_downloads=2,
        max_bytes=None,
        transport=httpx.MockTransport(answer),
        verify=True,
        headers={},
    )
    try:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(fetcher.save, _large_record(), tmp_path)
            with anyio.fail_after(30):
                await started.wait()
            assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
            task_group.cancel_scope.cancel()
    finally:
        await fetcher.http.aclose()
    assert list(tmp_path.iterdir()) == []
