"""Saving result files: named by us, written atomically, bounded in size, no key to other hosts.

Result URLs are presigned links, often on another host than the API. The file's name comes
from the generation id or the caller's path, never from the server (no path traversal); its
extension from a short list of media types. The body is streamed to a temporary file beside the
target, then renamed over it, so an interrupted download never leaves half a file.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import anyio
import httpx

from ._exceptions import DownloadError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from ._http import ApiSession

__all__ = ["download_to"]

logger = logging.getLogger("oxen_queue")

_EXTENSIONS: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
}
_KNOWN_SUFFIXES: Final = frozenset({*_EXTENSIONS.values(), ".jpeg"})
_CHUNK: Final = 1 << 16


def _suffix(url: httpx.URL, content_type: str | None) -> str:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _EXTENSIONS:
        return _EXTENSIONS[media]
    suffix = Path(url.path).suffix.lower()
    return suffix if suffix in _KNOWN_SUFFIXES else ".bin"


def _target(path: str | os.PathLike[str] | None, generation_id: str, suffix: str) -> Path:
    # The id comes from the server too: keep only what is safe in a file name.
    safe_id = "".join(c for c in generation_id if c.isalnum() or c in "-_") or "generation"
    if path is None:
        return Path.cwd() / f"{safe_id}{suffix}"
    target = Path(path)
    if target.is_dir():
        return target / f"{safe_id}{suffix}"
    return target


async def download_to(
    session: ApiSession,
    url: str,
    *,
    generation_id: str,
    path: str | os.PathLike[str] | None,
    max_bytes: int | None,
) -> Path:
    """Stream ``url`` into a file and return its path.

    Args:
        session: The client's session (its auth adds the key only on the API's own origin).
        url: The result URL.
        generation_id: Names the file when ``path`` is ``None`` or a directory.
        path: A file path, a directory, or ``None`` for the current directory.
        max_bytes: Refuse bodies larger than this; ``None`` means no limit.

    Raises:
        DownloadError: The file host refused, the connection failed, or the body was too big.
    """
    request_url = httpx.URL(url)
    if request_url.scheme not in ("http", "https"):
        raise DownloadError(f"refusing to download from a {request_url.scheme!r} URL")
    try:
        async with (
            session.admission.limiter,
            session.http.stream("GET", request_url, follow_redirects=True) as response,
        ):
            if response.status_code >= 400:
                raise DownloadError(
                    f"download of generation {generation_id} refused: HTTP "
                    f"{response.status_code} from {request_url.host}"
                )
            declared = response.headers.get("content-length", "")
            if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError(
                    f"result of {generation_id} is {declared} bytes, over the "
                    f"{max_bytes} byte limit"
                )
            target = _target(
                path, generation_id, _suffix(response.url, response.headers.get("content-type"))
            )
            await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
            await _write_atomically(response, target, max_bytes, generation_id)
    except httpx.HTTPError as exc:
        raise DownloadError(f"download of generation {generation_id} failed: {exc}") from exc
    logger.debug("saved generation %s to %s", generation_id, target)
    return target


async def _write_atomically(
    response: httpx.Response, target: Path, max_bytes: int | None, generation_id: str
) -> None:
    # A fresh name beside the target (same filesystem, so the rename is atomic), opened with
    # "x" so nothing existing is ever followed or clobbered; permissions follow the umask.
    temp = anyio.Path(target.parent / f".{target.name}.{secrets.token_hex(6)}.part")
    out = await anyio.open_file(temp, "xb")
    try:
        size = 0
        # aclosing: a generator abandoned mid-way must be closed here, not by a finaliser
        # (trio has none).
        chunks = cast("AsyncGenerator[bytes, None]", response.aiter_bytes(_CHUNK))
        async with out, aclosing(chunks):
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise DownloadError(
                        f"result of {generation_id} exceeds the {max_bytes} byte limit"
                    )
                await out.write(chunk)
        await temp.replace(target)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await temp.unlink(missing_ok=True)
        raise
