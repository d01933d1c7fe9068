"""The connection pools that carry the API's requests: httpx's own, or aiohttp's when asked.

`api_transport` turns ``http_backend`` into a transport below httpx's client (auth,
timeouts, the environment's proxies): ``"httpx"``, `ShardedTransport`; ``"aiohttp"`` (the
extra, asyncio only), `AiohttpTransport`. A transport given by the user is used as it is.
"""

from __future__ import annotations

import functools
import importlib.util
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import httpx

from ._exceptions import InvalidParamsError

if TYPE_CHECKING:
    import aiohttp

KEEPALIVE_EXPIRY: Final = 5.0  # httpx's default: seconds an idle connection is kept
_Stream = httpx.AsyncByteStream | httpx.SyncByteStream

HttpBackend = Literal["httpx", "aiohttp"]
"""What carries the API's requests: ``"httpx"`` (httpx's own transport, the default) or
``"aiohttp"`` (aiohttp's pool, asyncio only; ``pip install 'oxen-queue[aiohttp]'``)."""
HTTP_BACKENDS: Final[tuple[HttpBackend, ...]] = ("httpx", "aiohttp")


def _refused(message: str) -> InvalidParamsError:
    return InvalidParamsError(message, field="http_backend", allowed=HTTP_BACKENDS)


def check_backend_name(http_backend: object) -> None:
    """Refuse (``InvalidParamsError``) a name `api_transport` does not know, used or not."""
    if http_backend not in HTTP_BACKENDS:
        names = ", ".join(map(repr, HTTP_BACKENDS))
        raise _refused(f"http_backend must be one of {names}, not {http_backend!r}")


def api_transport(
    http_backend: str, *, connections: int, verify: bool = True
) -> httpx.AsyncBaseTransport:
    """The transport ``http_backend`` names, for ``connections`` at once; nothing connected.

    Raises:
        InvalidParamsError: Another name, or ``"aiohttp"`` without the extra (the message says
            what to install).
    """
    check_backend_name(http_backend)
    if http_backend == "aiohttp":
        if not aiohttp_installed():
            extra = "pip install 'oxen-queue[aiohttp]'"
            raise _refused(f"http_backend='aiohttp' needs the aiohttp extra: {extra}")
        return AiohttpTransport(connections=connections, verify=verify)
    return ShardedTransport(connections=connections, verify=verify)


def check_backend(transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse (``InvalidParamsError``) to open aiohttp's transport outside asyncio."""
    library = current_async_library() if isinstance(transport, AiohttpTransport) else "asyncio"
    if library != "asyncio":
        raise _refused(f"http_backend='aiohttp' runs on asyncio only; on {library} use 'httpx'")


def aiohttp_installed() -> bool:
    """Whether ``aiohttp`` and ``httpx-aiohttp`` are installed, without importing either."""
    return all(importlib.util.find_spec(name) is not None for name in ("aiohttp", "httpx_aiohttp"))


def current_async_library() -> str | None:
    """``"asyncio"``, ``"trio"``, ..., or ``None`` outside an event loop (as anyio tells)."""
    try:
        import sniffio
    except ImportError:  # anyio does without it: then only asyncio can be running
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


@functools.cache
def ssl_context(verify: bool) -> ssl.SSLContext:
    """httpx's TLS context for ``verify``, made once per process and shared by every pool
    (each made anew loads the CA bundle again: tens of milliseconds, a megabyte)."""
    return httpx.create_ssl_context(verify=verify)


@dataclass(slots=True, eq=False)
class _Shard:
    """One of httpx's transports, holding at most one connection, and how many use it."""

    transport: httpx.AsyncHTTPTransport
    busy: int = 0


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, one connection per pool; its ``ConnectError`` and ``ConnectTimeout``
    come only from making a connection, before anything is written.

    httpcore's pool (1.0) hands a connection that falls idle to every request waiting in it,
    and all but one go round again, rescanning every connection (docs/guides/performance.md):
    a pool of one, given a request only while its connection is free, never does. A request
    goes to the pool freed last (so a quiet client reuses a few warm connections), else to a
    new one while fewer than ``connections`` exist, else shares one.
    """

    def __init__(self, *, connections: int, verify: bool = True) -> None:
        self._max = connections
        self._context = ssl_context(verify)
        self._limits = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        self._shards: list[_Shard] = []
        self._free: list[_Shard] = []  # a stack: the last freed is used first
        self._next = 0  # past the limit, requests share the pools in turn

    @property
    def pools(self) -> int:
        """Pools made so far (each holds one connection at most)."""
        return len(self._shards)

    def _take(self) -> _Shard:
        if self._free:
            shard = self._free.pop()
        elif len(self._shards) < self._max:
            shard = _Shard(httpx.AsyncHTTPTransport(verify=self._context, limits=self._limits))
            self._shards.append(shard)
        else:
            shard = self._shards[self._next % len(self._shards)]
            self._next += 1
        shard.busy += 1
        return shard

    def _release(self, shard: _Shard) -> None:
        shard.busy -= 1
        if not shard.busy:
            self._free.append(shard)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._take()
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            self._release(shard)
            raise
        response.stream = _Released(response.stream, self, shard)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.transport.aclose()


class _Released(httpx.AsyncByteStream):
    """A response body that frees its pool when it is closed (its connection is free)."""

    __slots__ = ("_owner", "_shard", "_stream")

    def __init__(self, stream: _Stream, owner: ShardedTransport, shard: _Shard) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._owner: ShardedTransport | None = owner
        self._shard = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # as it is: no generator layer of its own

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._owner is not None:
                self._owner._release(self._shard)
                self._owner = None


def map_aiohttp_error(exc: Exception) -> httpx.TransportError:
    """httpx's error for a failure on aiohttp's transport, telling truly whether the request left.

    Decided by aiohttp's own error (`_cause`), not httpx-aiohttp's class, which calls every
    ``ClientConnectionError`` a ``ConnectTimeout`` ("never sent"), even a reset mid-answer.
    Not sent: only ``ClientConnectorError`` (refused, DNS, TLS) and ``ConnectionTimeoutError``
    (connecting, or waiting for the pool). ``ServerTimeoutError``: a read timeout. All else
    may have been sent (``RemoteProtocolError``, ``ReadError``).
    """
    import aiohttp

    cause = _cause(exc)
    message = str(exc) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return httpx.ReadError(message)
    if isinstance(exc, httpx.TransportError):
        return exc
    return httpx.RemoteProtocolError(message)


def _cause(exc: BaseException) -> BaseException:
    """aiohttp's own error: what httpx-aiohttp raised ``from``, or what it let through."""
    return exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport (asyncio only), its errors mapped by `map_aiohttp_error`.

    Its aiohttp session is made on the first request (in the running loop) and keeps no cookies
    nor proxies (httpx's client does). Raises ``ImportError`` without the extra.
    """

    def __init__(self, *, connections: int, verify: bool = True) -> None:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport as _Inner

        self._connections = connections
        self._context = ssl_context(verify)
        # The limits are the connector's (_session): httpx-aiohttp reads none given a client.
        self._inner = _Inner(verify=self._context, client=self._session)
        self._errors = (httpx.TransportError, aiohttp.ClientError)

    def _session(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self._connections, keepalive_timeout=KEEPALIVE_EXPIRY, ssl=self._context
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except self._errors as exc:
            raise map_aiohttp_error(exc) from _cause(exc)
        response.stream = _Mapped(response.stream, self._errors)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Mapped(httpx.AsyncByteStream):
    """A response body whose errors are mapped too: its own iterator, as a generator layer would
    be left suspended, for the collector to close, by a read that stops early."""

    def __init__(self, stream: _Stream, errors: tuple[type[Exception], ...]) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._errors = errors
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> _Mapped:
        self._chunks = self._stream.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        assert self._chunks is not None
        try:
            return await self._chunks.__anext__()
        except self._errors as exc:
            raise map_aiohttp_error(exc) from _cause(exc)

    async def aclose(self) -> None:
        # A body closed before its end closes its connection: aiohttp pools only a
        # connection whose payload reached its end.
        try:
            await self._stream.aclose()
        except self._errors as exc:
            raise map_aiohttp_error(exc) from _cause(exc)
