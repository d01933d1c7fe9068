"""What a result download accepts: the one rule, for ``download()`` and ``read()`` alike.

A result file comes from a host that can answer anything: an empty body, a CDN's HTML error
page with ``200 OK``, a JSON error, a video where an image was asked for. Saved as it came,
each is a ``.png`` that opens as nothing. `accept_body` judges every body before it is
kept, from two facts:

**What was asked**: the generation's ``media_type`` (``"image"`` or ``"video"``, from its
record; anything else, or ``None`` for a record made by hand, means either).

**What arrived**: the declared ``Content-Type`` (its media type, parameters dropped) and the
first bytes (`HEAD_BYTES`), which `sniff` reads as

* a known image (PNG, JPEG, GIF, WebP, AVIF, HEIC) or video (MP4, QuickTime, WebM/Matroska)
  signature;
* text: UTF-8 with no control characters, or opening with ``<``, ``{`` or ``[`` (an HTML page,
  JSON, XML, SVG, a plain ``Forbidden``); no media the queue makes reads so;
* or unknown bytes.

**Refused** ([`DownloadError`][oxen_queue.DownloadError]; nothing is kept):

* an empty body;
* text, whatever its label;
* media of the other kind (a video for an image generation, or the reverse), whatever its
  label;
* unknown bytes, unless labelled ``image/*`` or ``video/*`` of the kind asked for: unknown
  bytes labelled ``text/html``, ``application/json``, ``application/octet-stream``, or not
  labelled at all, are refused.

**Accepted**:

* media of the kind asked for, whatever its label (``text/html`` or none included: the bytes
  outrank the label);
* unknown bytes labelled ``image/*`` (``video/*``) for an image (video) generation, with a
  warning: a format this module does not know (BMP, TIFF, JPEG XL, ...).

The request's ``output_format`` is not part of the rule: a JPEG for ``output_format="png"`` is
still the image asked for, and a file we name is named by its bytes (``.jpg``).

The extension of a file we name: the signature's; for unknown bytes, the label's from a short
list (`EXTENSIONS`), else ``.bin``. Never from the URL, which the server chooses.
"""

from __future__ import annotations

import codecs
import logging
import re
from typing import Final, Literal

from ._exceptions import DownloadError

__all__ = ["EXTENSIONS", "HEAD_BYTES", "MediaKind", "accept_body", "expected_kind", "sniff"]

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

_KINDS: Final[dict[str, MediaKind]] = {
    ".png": "image",
    ".jpg": "image",
    ".gif": "image",
    ".webp": "image",
    ".avif": "image",
    ".heic": "image",
    ".mp4": "video",
    ".mov": "video",
    ".webm": "video",
}

# Magic numbers of the media the API makes: the bytes, not the server's labels, name the file.
_SIGNATURES: Final = (
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"GIF87a", ".gif"),
    (0, b"GIF89a", ".gif"),
    (0, b"\x1a\x45\xdf\xa3", ".webm"),  # EBML: WebM and Matroska
)
# ISO base media files (``....ftyp<brand>``) are images or videos by their major brand: AVIF
# and HEIC share the container with MP4, and would otherwise be taken for videos.
_IMAGE_BRANDS: Final = {
    b"avif": ".avif",
    b"avis": ".avif",
    b"heic": ".heic",
    b"heix": ".heic",
    b"heim": ".heic",
    b"heis": ".heic",
    b"hevc": ".heic",
    b"hevx": ".heic",
    b"mif1": ".heic",
    b"msf1": ".heic",
}
_TEXT_START: Final = re.compile(rb"(?:\xef\xbb\xbf)?\s*[<{\[]")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def sniff(head: bytes) -> str | None:
    """The file extension the first bytes of a file show (``".png"``, ...), or ``None``."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return _IMAGE_BRANDS[brand]
        return ".mov" if brand == b"qt  " else ".mp4"
    for offset, magic, suffix in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return suffix
    return None


def _is_text(head: bytes) -> bool:
    """Whether bytes that carry no media signature read as a document (see the module)."""
    if _TEXT_START.match(head):
        return True
    try:
        # Not final: the head may end inside a character.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(text) is None


def expected_kind(media_type: str | None) -> MediaKind | None:
    """The kind a generation asked for, from its record's ``media_type`` (``None``: either)."""
    if media_type == "image":
        return "image"
    if media_type == "video":
        return "video"
    return None


def _declared(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _asked(expected: MediaKind | None) -> str:
    return {"image": "an image", "video": "a video", None: "an image or a video"}[expected]


def accept_body(
    head: bytes, *, content_type: str | None, expected: MediaKind | None, generation_id: str
) -> str:
    """Judge a result body by the rule of this module; the extension for a file we name.

    Args:
        head: The body's first `HEAD_BYTES` bytes (the whole body when shorter, so
            ``b""`` is an empty body).
        content_type: The ``Content-Type`` header as received (``None`` when absent).
        expected: What the generation asked for (`expected_kind`); ``None``: either.
        generation_id: For messages.

    Returns:
        The extension, with its dot: ``".png"``, ``".mp4"``, ... or ``".bin"``.

    Raises:
        DownloadError: An empty body, text, media of the other kind, or unknown bytes
            without an ``image/*`` or ``video/*`` label of the kind asked for.
    """
    asked = _asked(expected)
    declared = _declared(content_type)
    label = declared or "no Content-Type"
    if not head:
        raise DownloadError(f"result of generation {generation_id} is empty, not {asked}")
    found = sniff(head)
    if found is not None:
        kind = _KINDS[found]
        if expected is not None and kind != expected:
            raise DownloadError(
                f"result of generation {generation_id} is {_asked(kind)} "
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
