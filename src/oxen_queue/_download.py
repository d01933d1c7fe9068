"""Saving result files: named by us, written atomically, bounded in size and in time.

Result URLs are presigned links, often on another host than the API. They are fetched with a
connection pool and a bound of their own (``max_downloads``), so a slow file host never holds
the slots that API requests need. The key goes only to the API's own origin (some result URLs
live there), never to a file host, not even through a redirect.

Every byte is untrusted: the URL must be ``http(s)`` with a host (a malformed one is a
[`DownloadError`][oxen_queue.DownloadError], never a request to the API); the body must be the media
the generation asked for, by `accept_body` (not empty, not an error page,
not a video for an image), judged on its first bytes before any is kept; the file's name comes
from the caller's path or from the generation id by `safe_name`
(one name per id, safe on every OS), never from the server; its extension from the bytes or a
short list of media types; the body is bounded in size, and a transfer slower than
`MIN_DOWNLOAD_RATE` over a whole ``stall_timeout`` window is abandoned. It is streamed to
a temporary file beside the target, then renamed over it, so an interrupted or refused
download never leaves a file, whole or half.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import anyio
import httpx

from ._exceptions import ClientClosedError, DownloadError
from ._filenames import safe_name
from ._http import consume, route_through
from ._media import EXTENSIONS, HEAD_BYTES, MediaKind, accept_body, expected_kind, sniff
from ._transport import api_transport, ssl_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._models import GenerationRecord

__all__ = ["MIN_DOWNLOAD_RATE", "FileFetcher"]

logger = logging.getLogger("oxen_queue")

MIN_DOWNLOAD_RATE: Final = 1024
"""Bytes per second: a download slower than this over a whole stall window is abandoned."""

_KNOWN_SUFFIXES: Final = frozenset({*EXTENSIONS.values(), ".jpeg"})


def _destination(path: str | os.PathLike[str] | None) -> tuple[Path, str | None]:
    """The directory to save into, and the file name the caller chose (``None``: ours)."""
    if path is None:
        return Path.cwd(), None
    text = os.fspath(path)
    target = Path(text)
    if text.endswith(("/", os.sep)) or target.is_dir():
        return target, None
    return target.parent, target.name


def _source(record: GenerationRecord) -> tuple[str, str, MediaKind | None]:
    """What to fetch for a record: its result URL, its id, and the media it asked for."""
    if not record.result_url:
        raise DownloadError(
            f"generation {record.generation_id} has no result_url (status {record.status!r})"
        )
    return record.result_url, record.generation_id, expected_kind(record.media_type)


def _vet(url: str, generation_id: str) -> httpx.URL:
    """The result URL, if it is one we may fetch."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DownloadError(f"result_url of {generation_id} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(
            f"refusing to download {generation_id} from a {parsed.scheme or 'relative'!r} URL"
        )
    if not parsed.host:
        raise DownloadError(f"result_url of {generation_id} has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise DownloadError(f"result_url of {generation_id} has an impossible port")
    return parsed


_ATTEMPTS: Final = 3  # tries of a download that delivered nothing
_RETRYABLE: Final = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


class _NothingReceivedError(Exception):
    """A transfer that failed before its first byte: safe to try again."""

    def __init__(self, cause: httpx.TransportError) -> None:
        super().__init__(str(cause))
        self.cause = cause


_IN_MEMORY: Final = 8 << 20
"""Bytes of a download held in memory before it is spilled to its temporary file."""

_PIECE: Final = 1 << 20  # bytes written to a spilled file at a time


class _Spool:
    """A download's body on its way to its file, with as few trips to a worker thread as can be.

    A result that fits in `_IN_MEMORY` (an image, usually) is held in memory and written
    by `keep` in one trip: the directory made, a temporary file beside the target
    created ("x": nothing existing is followed or clobbered), written, closed and renamed over
    the target (atomic, in one directory). A larger one is spilled to that temporary file as it
    arrives, a `_PIECE` at a time. Refused bodies never reach it: the fetch judges the
    first bytes before passing any on. Downloads are bounded (``max_downloads``), and so is
    what they hold in memory. Its file operations run in a worker thread, one call each.
    """

    __slots__ = ("_buffer", "_file", "_generation_id", "_path", "_target", "_temp")

    def __init__(self, path: str | os.PathLike[str] | None, generation_id: str) -> None:
        self._path = path
        self._generation_id = generation_id
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._temp: Path | None = None
        self._target: tuple[Path, str | None] | None = None

    @property
    def spilled(self) -> bool:
        """Whether a temporary file exists (to remove, unless it was renamed into place)."""
        return self._temp is not None

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= (_PIECE if self._file is not None else _IN_MEMORY):
            await anyio.to_thread.run_sync(self._spill)

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._target = _destination(self._path)
            directory = self._target[0]
            directory.mkdir(parents=True, exist_ok=True)
            stem = safe_name(self._generation_id)[:16]
            self._temp = directory / f".{stem}.{secrets.token_hex(6)}.part"
            # "x": nothing existing is ever followed or clobbered; permissions follow the umask.
            self._file = open(self._temp, "xb")  # noqa: SIM115 (closed by keep or discard)
        return self._file

    def _spill(self) -> None:
        self._open().write(self._buffer)
        self._buffer.clear()

    def keep(self, suffix: str, head: bytes) -> Path:
        """Write what is left, close the file and rename it into place; its path."""
        self._spill()
        assert self._file is not None
        assert self._temp is not None
        assert self._target is not None
        self._file.close()
        directory, name = self._target
        if name is None:
            target = directory / f"{safe_name(self._generation_id)}{suffix}"
        else:
            target = directory / name
            given = Path(name).suffix.lower().replace(".jpeg", ".jpg")
            found = sniff(head)
            if found and given in _KNOWN_SUFFIXES and given != found:
                logger.warning(
                    "saved generation %s to %s, but its bytes are %s",
                    self._generation_id,
                    target,
                    found[1:].upper(),
                )
        # Same directory, so the rename is atomic: an interrupted download leaves no file.
        self._temp.replace(target)
        self._temp = None
        return target

    def discard(self) -> None:
        """Close and remove the temporary file (a download that failed or was cancelled)."""
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


class FileFetcher:
    """Downloads result files on a pool and a bound of their own.

    Args:
        auth: The origin-scoped auth of the API session (a file on the API's own origin
            needs the key; no other host ever gets it).
        connect_timeout: Seconds to connect.
        stall_timeout: Seconds: a download that receives nothing for this long, or less than
            `MIN_DOWNLOAD_RATE` per second over a window this long, fails.
        max_downloads: Downloads at once; more wait their turn.
        max_bytes: Largest file accepted; ``None`` means no limit.
        transport: An httpx transport, used as it is (tests); ``None``: the one
            ``http_backend`` names, as for the API's requests (its pool's CPU per request),
            behind httpx's client, which keeps the environment's proxies.
        http_backend: ``"httpx"`` or ``"aiohttp"`` (the client's choice).
        verify: TLS verification.
        headers: Headers for every request (the user agent).
    """

    def __init__(
        self,
        *,
        auth: httpx.Auth,
        connect_timeout: float | None,
        stall_timeout: float,
        max_downloads: int,
        max_bytes: int | None,
        transport: httpx.AsyncBaseTransport | None,
        http_backend: str = "httpx",
        verify: bool,
        headers: dict[str, str],
    ) -> None:
        if max_downloads < 1:
            raise ValueError("max_downloads must be at least 1")
        self._stall = stall_timeout
        self._max_bytes = max_bytes
        self._max_downloads = max_downloads
        self._limiter: anyio.CapacityLimiter | None = None
        self._verify = verify
        self._backend = http_backend
        self._options: dict[str, Any] = {
            "auth": auth,
            "follow_redirects": True,
            "timeout": httpx.Timeout(stall_timeout, connect=connect_timeout),
            "limits": httpx.Limits(
                max_connections=max_downloads, max_keepalive_connections=max_downloads
            ),
            "transport": transport,
            "headers": headers,
        }
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    @property
    def http(self) -> httpx.AsyncClient:
        """The pool of downloads, made on the first one: most clients never download (a
        result's URL is often all that is kept), and a client is made for every cold start.

        Raises:
            ClientClosedError: `aclose` came first.
        """
        if self._http is None:
            if self._closed:
                raise ClientClosedError("the client is closed; make a new one")
            mounts = {}
            if self._options["transport"] is None:
                carrier = api_transport(
                    self._backend, connections=self._max_downloads, verify=self._verify
                )
                mounts = route_through(carrier)
            self._http = httpx.AsyncClient(
                verify=ssl_context(self._verify), mounts=mounts, **self._options
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pool, if one was made; no download is made afterwards."""
        self._closed = True
        if self._http is not None:
            await self._http.aclose()

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use: anyio primitives need a running event loop to be made.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_downloads)
        return self._limiter

    async def save(self, record: GenerationRecord, path: str | os.PathLike[str] | None) -> Path:
        """Stream a finished record's result into a file and return its path.

        Args:
            record: The record: its ``result_url`` is fetched, its ``generation_id`` names
                the file when ``path`` is ``None`` or a directory
                (`safe_name`; the extension then follows the
                bytes received: PNG, JPEG, WebP, MP4, ...), and the body must be the media its
                ``media_type`` says (see `oxen_queue._media`; ``None``: either kind).
            path: A file path, a directory (or a path ending with ``/``, created if need
                be), or ``None`` for the current directory. A file path whose extension
                disagrees with the bytes is kept, and the mismatch is logged as a warning.

        Raises:
            DownloadError: No result URL or a bad one, the file host refused, the connection
                failed or stalled, the body was too big, empty or not the media asked for
                (nothing is left in the directory then), or the file could not be written.
        """
        url, generation_id, expected = _source(record)
        spool = _Spool(path, generation_id)
        try:
            suffix, head = await self._fetch(url, generation_id, expected, spool.write)
            target = await anyio.to_thread.run_sync(spool.keep, suffix, head)
        except OSError as exc:
            raise DownloadError(f"could not save generation {generation_id}: {exc}") from exc
        finally:
            if spool.spilled:  # shielded: a cancelled download leaves no temporary file
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(spool.discard)
        logger.debug("saved generation %s to %s", generation_id, target)
        return target

    async def read(self, record: GenerationRecord) -> bytes:
        """A finished record's result, in memory, within the same bounds and by the same
        rule as `save`.

        Raises:
            DownloadError: As for `save`.
        """
        url, generation_id, expected = _source(record)
        body = bytearray()

        async def collect(chunk: bytes) -> None:
            body.extend(chunk)

        await self._fetch(url, generation_id, expected, collect)
        return bytes(body)

    async def _fetch(
        self,
        url: str,
        generation_id: str,
        expected: MediaKind | None,
        sink: Callable[[bytes], Awaitable[object]],
    ) -> tuple[str, bytes]:
        """Stream ``url`` into ``sink`` within the bounds; the extension and first bytes.

        Raises:
            DownloadError: A bad URL, a refusal, a failed or stalled transfer, a body too
                big, or one that is not the media asked for (`accept_body`).
        """
        request_url = _vet(url, generation_id)
        async with self.limiter:
            for attempt in range(_ATTEMPTS):
                try:
                    return await self._fetch_once(request_url, generation_id, expected, sink)
                except _NothingReceivedError as exc:
                    # A kept-alive connection the host had closed, a refused connection: a
                    # GET that delivered nothing may simply be sent again.
                    if attempt + 1 == _ATTEMPTS:
                        raise DownloadError(
                            f"download of generation {generation_id} from {request_url.host} "
                            f"failed: {type(exc.cause).__name__}: {exc.cause}"
                        ) from exc.cause
                    logger.debug("download of %s failed (%r); retrying", generation_id, exc.cause)
                    await anyio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_once(
        self,
        request_url: httpx.URL,
        generation_id: str,
        expected: MediaKind | None,
        sink: Callable[[bytes], Awaitable[object]],
    ) -> tuple[str, bytes]:
        started = False

        async def counted(chunk: bytes) -> None:
            nonlocal started
            started = True
            await sink(chunk)

        try:
            request = self.http.build_request("GET", request_url)
            response = await self.http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    raise DownloadError(
                        f"download of generation {generation_id} refused: HTTP "
                        f"{response.status_code} from {response.url.host}"
                    )
                max_bytes = self._max_bytes
                declared = response.headers.get("content-length", "")
                if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise DownloadError(
                        f"result of {generation_id} is {declared} bytes, over the "
                        f"{max_bytes} byte limit"
                    )
                content_type = response.headers.get("content-type")

                def judge(head: bytes) -> str:
                    return accept_body(
                        head,
                        content_type=content_type,
                        expected=expected,
                        generation_id=generation_id,
                    )

                return await self._pump(response, generation_id, counted, judge)
            finally:
                # Shielded, as every response of the client: a cancelled download must still
                # release its connection.
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        except httpx.TransportError as exc:
            if not started and isinstance(exc, _RETRYABLE):
                raise _NothingReceivedError(exc) from exc
            raise DownloadError(
                f"download of generation {generation_id} from {request_url.host} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"download of generation {generation_id} from {request_url.host} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def _pump(
        self,
        response: httpx.Response,
        generation_id: str,
        sink: Callable[[bytes], Awaitable[object]],
        judge: Callable[[bytes], str],
    ) -> tuple[str, bytes]:
        """Feed the body to ``sink``, enforcing the size cap and the stall rule.

        The first `HEAD_BYTES` (the whole body, when shorter) are held back until
        ``judge`` has accepted them, so ``sink`` never receives a body that is refused.

        Returns:
            The extension ``judge`` gave, and the first bytes.
        """
        size = 0
        head = b""
        held: list[bytes] = []
        suffix: str | None = None
        window_start, window_bytes = anyio.current_time(), 0
        floor = self._stall * MIN_DOWNLOAD_RATE

        async def release(judged: str) -> str:
            nonlocal suffix
            suffix = judged
            for part in held:
                await sink(part)
            held.clear()
            return judged

        async def take(chunk: bytes) -> None:
            nonlocal size, head, window_start, window_bytes
            size += len(chunk)
            if self._max_bytes is not None and size > self._max_bytes:
                raise DownloadError(
                    f"result of {generation_id} exceeds the {self._max_bytes} byte limit"
                )
            window_bytes += len(chunk)
            now = anyio.current_time()
            if now - window_start >= self._stall:
                if window_bytes < floor:
                    raise DownloadError(
                        f"download of {generation_id} stalled: {window_bytes} bytes in "
                        f"{now - window_start:.1f} s (at least {MIN_DOWNLOAD_RATE} "
                        "bytes/s are needed)"
                    )
                window_start, window_bytes = now, 0
            if suffix is not None:
                await sink(chunk)
                return
            head += chunk[: HEAD_BYTES - len(head)]
            held.append(chunk)
            if len(head) == HEAD_BYTES:
                await release(judge(head))

        await consume(response, take)
        if suffix is None:  # a body shorter than HEAD_BYTES, or empty
            return await release(judge(head)), head
        return suffix, head
