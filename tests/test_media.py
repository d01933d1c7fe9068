"""The rule of what a download accepts, alone: sniffing, text, and the verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue import DownloadError
from oxen_queue._media import HEAD_BYTES, MediaKind, accept_body, expected_kind, sniff


@pytest.mark.parametrize(
    ("head", "suffix"),
    [
        (b"\x89PNG\r\n\x1a\n\x00", ".png"),
        (b"\xff\xd8\xff\xdb", ".jpg"),
        (b"GIF87a", ".gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L", ".webp"),
        (b"\x00\x00\x00\x1cftypavif", ".avif"),  # AVIF shares its box format with MP4
        (b"\x00\x00\x00\x18ftypheic", ".heic"),
        (b"\x00\x00\x00\x18ftypmif1", ".heic"),
        (b"\x00\x00\x00\x14ftypqt  ", ".mov"),
        (b"\x00\x00\x00\x18ftypisom", ".mp4"),
        (b"\x00\x00\x00\x18ftypmp42", ".mp4"),
        (b"\x1a\x45\xdf\xa3\x01", ".webm"),
        (b"BM\x36\x00", None),
        (b"", None),
    ],
)
def test_sniff_names_each_format_by_its_bytes(head: bytes, suffix: str | None) -> None:
    assert sniff(head) == suffix


def test_an_unknown_media_type_in_a_record_means_either_kind() -> None:
    assert [expected_kind(m) for m in ("image", "video", "audio", None, "IMAGE")] == [
        "image",
        "video",
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "head",
    [
        "<!doctype html><title>Accès refusé</title>".encode(),  # not ASCII: still text
        b"\xef\xbb\xbf<html>",  # a byte-order mark first
        b'\n\n  {"error": 1}',
        b"Zugriff verweigert \xc3",  # the head cut inside a character
        b"x" * HEAD_BYTES,
    ],
)
def test_text_is_refused_whatever_its_label(head: bytes) -> None:
    for label in ("image/png", "application/octet-stream", None):
        with pytest.raises(DownloadError, match="is text"):
            accept_body(head, content_type=label, expected=None, generation_id="g")


@pytest.mark.parametrize(
    ("head", "label", "expected", "suffix"),
    [
        (b"BM\x36\x00\x0c\x00\x00\x00", "image/bmp", "image", ".bin"),
        (b"BM\x36\x00\x0c\x00\x00\x00", "image/png", None, ".png"),  # the label's name
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "Image/JP2; q=1", "image", ".bin"),
        (b"\x00\x00\x01\xba\x44\x00", "video/mpeg", "video", ".bin"),
        (b"\x89PNG\r\n\x1a\n", "text/html", "image", ".png"),  # bytes outrank the label
        (b"\x00\x00\x00\x18ftypisom", None, None, ".mp4"),
    ],
)
def test_what_is_kept_and_under_which_extension(
    head: bytes, label: str | None, expected: MediaKind | None, suffix: str
) -> None:
    assert accept_body(head, content_type=label, expected=expected, generation_id="g") == suffix


@settings(max_examples=500)
@given(
    head=st.binary(max_size=HEAD_BYTES),
    label=st.none() | st.text(max_size=40),
    expected=st.sampled_from(["image", "video", None]),
)
def test_any_head_and_label_get_an_extension_or_a_download_error(
    head: bytes, label: str | None, expected: MediaKind | None
) -> None:
    try:
        suffix = accept_body(head, content_type=label, expected=expected, generation_id="g")
    except DownloadError:
        return
    assert head  # an empty body is never kept
    assert suffix in {".png", ".jpg", ".gif", ".webp", ".avif", ".heic", ".mp4", ".mov"} | {
        ".webm",
        ".bin",
    }
