"""What a result download accepts: the one rule, for ``download()`` and ``read()`` alike.

A file host can answer anything (an empty body, a CDN's HTML error page with ``200 OK``, a
video where an image was asked for). `accept_body` judges each body before any of it is kept,
from the generation's ``media_type`` (``"image"`` or ``"video"``; anything else, or ``None``,
means either), the declared ``Content-Type`` (parameters dropped) and the first `HEAD_BYTES`,
which `sniff` reads as an image (PNG, JPEG, GIF, WebP, AVIF, HEIC) or video (MP4, QuickTime,
WebM/Matroska) signature, as text (UTF-8 without control characters, or opening with ``<``,
``{`` or ``[``: no media the queue makes reads so), or as unknown bytes.

* **Accepted**: media of the kind asked for, whatever its label (the bytes outrank it);
  unknown bytes labelled ``image/*`` (``video/*``) for an image (video) generation, with a
  warning (BMP, TIFF, JPEG XL, ...).
* **Refused** ([`DownloadError`][oxen_queue.DownloadError]): an empty body; text, and media of
  the other kind, whatever their label; any other unknown bytes (labelled ``text/html``,
  ``application/octet-stream``, or not at all).

The request's ``output_format`` is not part of the rule. A file we name takes the signature's
extension, else the label's (`EXTENSIONS`), else ``.bin``; never the URL's.
"""

from __future__ import annotations

import codecs
import logging
import re
from typing import Final, Literal

from ._exceptions import DownloadError

logger = logging.getLogger("oxen_queue")

MediaKind = Literal["image", "video"]

HEAD_BYTES: Final = 64
"""How many first bytes of a body `accept_body` needs to judge it (fewer: the whole)."""

EXTENSIONS: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "image/heic": ".heic",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
}
"""The extension of a file whose bytes are unknown, by its declared media type."""

_VIDEOS: Final = (".mp4", ".mov", ".webm")
_ASKED: Final = {"image": "an image", "video": "a video", None: "an image or a video"}
_SIGNATURES: Final = {
    b"\x89PNG\r\n\x1a\n": ".png",
    b"\xff\xd8\xff": ".jpg",
    b"GIF87a": ".gif",
    b"GIF89a": ".gif",
    b"\x1a\x45\xdf\xa3": ".webm",  # EBML: WebM and Matroska
}
# ISO base media files (``....ftyp<brand>``) are images or videos by their major brand: AVIF
# and HEIC share the container with MP4, and would otherwise be taken for videos.
_IMAGE_BRANDS: Final = {b"avif": ".avif", b"avis": ".avif"} | dict.fromkeys(
    (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"), ".heic"
)
_TEXT_START: Final = re.compile(rb"(?:\xef\xbb\xbf)?\s*[<{\[]")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def sniff(head: bytes) -> str | None:
    """The file extension the first bytes of a file show (``".png"``, ...), or ``None``."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _IMAGE_BRANDS.get(brand) or (".mov" if brand == b"qt  " else ".mp4")
    return next((suffix for magic, suffix in _SIGNATURES.items() if head.startswith(magic)), None)


def _is_text(head: bytes) -> bool:
    """Whether bytes that carry no media signature read as a document (see the module)."""
    if _TEXT_START.match(head):
        return True
    try:  # not final: the head may end inside a character
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(text) is None


def expected_kind(media_type: str | None) -> MediaKind | None:
    """The kind a generation asked for, from its record's ``media_type`` (``None``: either)."""
    return "image" if media_type == "image" else "video" if media_type == "video" else None


def accept_body(
    head: bytes, *, content_type: str | None, expected: MediaKind | None, generation_id: str
) -> str:
    """Judge a body by its first `HEAD_BYTES` (the whole body, when shorter) and its
    ``Content-Type`` (``None``: absent) by the rule of this module; the extension, with its dot,
    for a file we name. ``expected``: the kind asked for (``None``: either).

    Raises:
        DownloadError: A body the rule refuses.
    """
    asked = _ASKED[expected]
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    label = declared or "no Content-Type"
    if not head:
        raise DownloadError(f"result of generation {generation_id} is empty, not {asked}")
    found = sniff(head)
    if found is not None:
        kind: MediaKind = "video" if found in _VIDEOS else "image"
        if expected is not None and kind != expected:
            raise DownloadError(
                f"result of generation {generation_id} is {_ASKED[kind]} "
                f"({found[1:].upper()}, {label}), not {asked}"
            )
        if not declared.startswith(f"{kind}/"):
            logger.debug(
                "result of generation %s is %s labelled %s", generation_id, found[1:], label
            )
        return found
    if _is_text(head):
        raise DownloadError(
            f"result of generation {generation_id} is text ({label}: {head[:40]!r}), not {asked}"
        )
    kind_declared = declared.partition("/")[0]
    if kind_declared in ("image", "video") and expected in (None, kind_declared):
        suffix = EXTENSIONS.get(declared, ".bin")
        logger.warning(
            "result of generation %s: bytes of no format known here, labelled %s; kept as %s",
            generation_id,
            label,
            suffix,
        )
        return suffix
    raise DownloadError(
        f"result of generation {generation_id} is not {asked}: unknown bytes labelled {label}"
    )
