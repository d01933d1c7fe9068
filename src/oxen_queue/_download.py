"""Saving result files: named by us, written atomically, bounded in size and in time.

Result URLs (presigned, often on another host) are fetched on a pool and a bound of their own
(``max_downloads``), so a slow file host never holds the API's slots; the key goes to the API's
own origin only, never to a file host, not even through a redirect. Accepted: an ``http(s)``
URL with a host (else a [`DownloadError`][oxen_queue.DownloadError], never a request); a body
`accept_body` takes, no larger than ``max_bytes``, arriving at `MIN_DOWNLOAD_RATE` or more over
each ``stall_timeout``. A file is named by the caller or `safe_name`, never by the server, and
written to a temporary file renamed over the target, so a failed download leaves no file.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

import anyio
import httpx

from ._exceptions import ClientClosedError, DownloadError
from ._filenames import safe_name
from ._http import consume, route_through
from ._media import EXTENSIONS, HEAD_BYTES, accept_body, expected_kind, sniff
from ._transport import api_transport, ssl_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._models import GenerationRecord

    Sink = Callable[[bytes], Awaitable[object]]

logger = logging.getLogger("oxen_queue")

MIN_DOWNLOAD_RATE: Final = 1024
"""Bytes per second: a download slower than this over a whole stall window is abandoned."""

_ATTEMPTS: Final = 3  # tries of a download that delivered nothing
_RETRYABLE: Final = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)
_IN_MEMORY: Final = 8 << 20  # bytes held in memory before spilling to the temporary file
_PIECE: Final = 1 << 20  # bytes written to a spilled file at a time


def _destination(path: str | os.PathLike[str] | None) -> tuple[Path, str | None]:
    """The directory to save into, and the file name the caller chose (``None``: ours)."""
    target = Path.cwd() if path is None else Path(path)
    if path is None or os.fspath(path).endswith(("/", os.sep)) or target.is_dir():
        return target, None
    return target.parent, target.name


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


class _Spool:
    """A download's body on its way to its file: held in memory up to `_IN_MEMORY` (written by
    `keep` in one trip to a worker thread), past that spilled a `_PIECE` at a time to ``temp``,
    the temporary file (``None`` until made, and once renamed into place)."""

    def __init__(self, path: str | os.PathLike[str] | None, generation_id: str) -> None:
        self._path = path
        self._generation_id = generation_id
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._directory = Path()
        self._name: str | None = None
        self.temp: Path | None = None

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= (_PIECE if self._file is not None else _IN_MEMORY):
            await anyio.to_thread.run_sync(self._spill)

    def _spill(self) -> None:
        if self._file is None:
            self._directory, self._name = _destination(self._path)
            self._directory.mkdir(parents=True, exist_ok=True)
            stem = safe_name(self._generation_id)[:16]
            self.temp = self._directory / f".{stem}.{secrets.token_hex(6)}.part"
            # "x": nothing existing is ever followed or clobbered; permissions follow the umask.
            self._file = open(self.temp, "xb")  # noqa: SIM115 (closed by keep or discard)
        self._file.write(self._buffer)
        self._buffer.clear()

    def keep(self, suffix: str, head: bytes) -> Path:
        """Write what is left, close the file and rename it into place; its path."""
        self._spill()
        assert self._file is not None
        assert self.temp is not None
        self._file.close()
        if self._name is None:
            target = self._directory / f"{safe_name(self._generation_id)}{suffix}"
        else:
            target = self._directory / self._name
            given = Path(self._name).suffix.lower().replace(".jpeg", ".jpg")
            found = sniff(head)
            if found and given in EXTENSIONS.values() and given != found:
                logger.warning(
                    "saved generation %s to %s, but its bytes are %s",
                    self._generation_id,
                    target,
                    found[1:].upper(),
                )
        self.temp.replace(target)  # atomic: the same directory
        self.temp = None
        return target

    def discard(self) -> None:
        """Close and remove the temporary file (a download that failed or was cancelled)."""
        if self._file is not None:
            self._file.close()
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


class FileFetcher:
    """Downloads result files on a pool and a bound of their own: ``max_downloads`` at once
    (more wait their turn), of ``max_bytes`` each (``None``: no limit), failing one that gets
    nothing for ``stall_timeout`` seconds, or less than `MIN_DOWNLOAD_RATE` per second over a
    window that long. ``auth`` is the API session's (scoped to its origin); ``transport`` is
    used as it is (tests), else the one ``http_backend`` names, as for the API's requests.
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
        self.limiter = anyio.CapacityLimiter(max_downloads)
        self._http: httpx.AsyncClient | None = None
        self._closed = False

        def connect() -> httpx.AsyncClient:
            mounts: dict[str, httpx.AsyncBaseTransport] = {}
            if transport is None:
                backend = api_transport(http_backend, connections=max_downloads, verify=verify)
                mounts = route_through(backend)
            return httpx.AsyncClient(
                auth=auth,
                follow_redirects=True,
                timeout=httpx.Timeout(stall_timeout, connect=connect_timeout),
                limits=httpx.Limits(
                    max_connections=max_downloads, max_keepalive_connections=max_downloads
                ),
                transport=transport,
                mounts=mounts,
                headers=headers,
                verify=ssl_context(verify),
            )

        self._connect = connect

    @property
    def http(self) -> httpx.AsyncClient:
        """The pool of downloads, made at the first one (most clients never download);
        `ClientClosedError` after `aclose`."""
        if self._http is None:
            if self._closed:
                raise ClientClosedError("the client is closed; make a new one")
            self._http = self._connect()
        return self._http

    async def aclose(self) -> None:
        """Close the pool, if one was made; no download is made afterwards."""
        self._closed = True
        if self._http is not None:
            await self._http.aclose()

    async def save(self, record: GenerationRecord, path: str | os.PathLike[str] | None) -> Path:
        """Stream a finished record's result into a file (``AsyncClient.download``); its path.
        A file ``path`` whose extension disagrees with the bytes is kept, with a warning."""
        spool = _Spool(path, record.generation_id)
        try:
            suffix, head = await self._fetch(record, spool.write)
            target = await anyio.to_thread.run_sync(spool.keep, suffix, head)
        except OSError as exc:
            raise DownloadError(f"could not save generation {record.generation_id}: {exc}") from exc
        finally:
            if spool.temp is not None:  # shielded: a cancelled download leaves no temporary file
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(spool.discard)
        logger.debug("saved generation %s to %s", record.generation_id, target)
        return target

    async def read(self, record: GenerationRecord) -> bytes:
        """A finished record's result, in memory, within the bounds and by the rule of `save`."""
        body = bytearray()

        async def collect(chunk: bytes) -> None:
            body.extend(chunk)

        await self._fetch(record, collect)
        return bytes(body)

    async def _fetch(self, record: GenerationRecord, sink: Sink) -> tuple[str, bytes]:
        """Stream a record's result into ``sink``; the extension and the first bytes."""
        generation_id = record.generation_id
        if not record.result_url:
            raise DownloadError(
                f"generation {generation_id} has no result_url (status {record.status!r})"
            )
        url = _vet(record.result_url, generation_id)
        sunk = False

        async def counted(chunk: bytes) -> None:
            nonlocal sunk
            sunk = True
            await sink(chunk)

        async with self.limiter:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    response = await self.http.send(
                        self.http.build_request("GET", url), stream=True
                    )
                    try:
                        return await self._pump(response, record, counted)
                    finally:
                        # Shielded: a cancelled download must still release its connection.
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                except httpx.HTTPError as exc:
                    # A GET that delivered nothing (a kept-alive connection the host had
                    # closed, a refused connection) may simply be sent again.
                    if sunk or attempt == _ATTEMPTS or not isinstance(exc, _RETRYABLE):
                        raise DownloadError(
                            f"download of generation {generation_id} from {url.host} failed: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                    logger.debug("download of %s failed (%r); retrying", generation_id, exc)
                    await anyio.sleep(0.1 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pump(
        self, response: httpx.Response, record: GenerationRecord, sink: Sink
    ) -> tuple[str, bytes]:
        """Feed the body to ``sink`` within the size cap and the stall rule; the extension and
        the first bytes. Those (the whole body, when shorter than `HEAD_BYTES`) are held back
        until `accept_body` takes them, so ``sink`` never receives a refused body."""
        generation_id, limit = record.generation_id, self._max_bytes
        if response.status_code >= 400:
            raise DownloadError(
                f"download of generation {generation_id} refused: HTTP "
                f"{response.status_code} from {response.url.host}"
            )
        declared = response.headers.get("content-length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            raise DownloadError(
                f"result of {generation_id} is {declared} bytes, over the {limit} byte limit"
            )
        size = window_bytes = 0
        window_start = anyio.current_time()
        held = bytearray()
        judged: tuple[str, bytes] | None = None

        async def judge() -> tuple[str, bytes]:
            head = bytes(held[:HEAD_BYTES])
            suffix = accept_body(
                head,
                content_type=response.headers.get("content-type"),
                expected=expected_kind(record.media_type),
                generation_id=generation_id,
            )
            await sink(bytes(held))
            return suffix, head

        async def take(chunk: bytes) -> None:
            nonlocal size, window_start, window_bytes, judged
            size += len(chunk)
            if limit is not None and size > limit:
                raise DownloadError(f"result of {generation_id} exceeds the {limit} byte limit")
            window_bytes += len(chunk)
            now = anyio.current_time()
            if now - window_start >= self._stall:
                if window_bytes < self._stall * MIN_DOWNLOAD_RATE:
                    raise DownloadError(
                        f"download of {generation_id} stalled: {window_bytes} bytes in "
                        f"{now - window_start:.1f} s (at least {MIN_DOWNLOAD_RATE} "
                        "bytes/s are needed)"
                    )
                window_start, window_bytes = now, 0
            if judged is not None:
                await sink(chunk)
            else:
                held.extend(chunk)
                if len(held) >= HEAD_BYTES:
                    judged = await judge()

        await consume(response, take)
        return judged or await judge()
