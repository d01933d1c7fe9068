"""The connection pools that carry the API's requests: httpx's own, or aiohttp's when asked.

`api_transport` is the one place that turns ``AsyncClient(http_backend=...)`` into a
transport:

* ``"httpx"`` (the default, on asyncio and trio): `ShardedTransport`, httpx's own
  HTTP/1.1 transport with one connection per pool. httpcore's pool (1.0) hands a connection
  that falls idle to *every* request waiting in the pool in one pass, and to a request that
  arrives before the last one assigned to it has started; all but one of them then find it
  taken and go round again, rescanning every connection each time. A pool of one
  connection, given a request only while its connection is free, never has a second
  request to hand it to, and each of its scans looks at one connection. Plain httpx posting
  through ``benchmarks/wan.py``'s proxy, 256 in flight, 80 ms away: one pool of 256, 13 ms
  of CPU per request (75/s); pools of 16, 2.0-2.1 ms; pools of 4, 0.8-0.9 ms; pools of
  one, 0.77-0.84 ms (750-1,200/s, as busy as the machine was).
* ``"aiohttp"`` (the ``aiohttp`` extra, asyncio only): `AiohttpTransport`,
  aiohttp's pool through ``httpx-aiohttp`` (0.41-0.44 ms per request, the same way), with
  its errors mapped by `map_aiohttp_error` so that "never sent" means what it says.

Either keeps httpx's client above it (auth, timeouts, the proxies of the environment, which
``_http`` routes around it). A transport given by the user (``AsyncClient(transport=...)``)
is used as it is.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final, Literal

import httpx

from ._exceptions import InvalidParamsError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "HTTP_BACKENDS",
    "AiohttpTransport",
    "HttpBackend",
    "ShardedTransport",
    "aiohttp_installed",
    "api_transport",
    "check_backend",
    "check_backend_name",
    "current_async_library",
    "map_aiohttp_error",
    "ssl_context",
]

logger = logging.getLogger("oxen_queue")

KEEPALIVE_EXPIRY: Final = 5.0  # httpx's default: seconds an idle connection is kept

HttpBackend = Literal["httpx", "aiohttp"]
"""What carries the API's requests: ``"httpx"`` (httpx's own transport, the default) or
``"aiohttp"`` (aiohttp's pool, asyncio only; ``pip install 'oxen-queue[aiohttp]'``)."""
HTTP_BACKENDS: Final[tuple[HttpBackend, ...]] = ("httpx", "aiohttp")
_AIOHTTP_HELP: Final = (
    "http_backend='aiohttp' needs the aiohttp extra: pip install 'oxen-queue[aiohttp]'"
)


def check_backend_name(http_backend: object) -> None:
    """Refuse a name `api_transport` does not know, whether or not it is used.

    Raises:
        InvalidParamsError: Not ``"httpx"`` or ``"aiohttp"`` (field ``http_backend``, with
            the names allowed).
    """
    if http_backend not in HTTP_BACKENDS:
        raise InvalidParamsError(
            f"http_backend must be one of {', '.join(map(repr, HTTP_BACKENDS))}, "
            f"not {http_backend!r}",
            field="http_backend",
            allowed=HTTP_BACKENDS,
        )


def api_transport(
    http_backend: str, *, connections: int, verify: bool | ssl.SSLContext = True
) -> httpx.AsyncBaseTransport:
    """The transport for the API's requests, as ``AsyncClient(http_backend=...)`` asks.

    Accepts ``"httpx"`` (`ShardedTransport`, any async library httpx supports) and
    ``"aiohttp"`` (`AiohttpTransport`, asyncio only: checked when the client opens,
    by `check_backend`). Nothing is connected here.

    Args:
        http_backend: ``"httpx"`` or ``"aiohttp"``.
        connections: Connections allowed at once (the request bound, plus the event stream).
        verify: TLS verification, or an SSL context.

    Raises:
        InvalidParamsError: Another name (see `check_backend_name`), or ``"aiohttp"``
            without the ``aiohttp`` extra installed (``aiohttp`` and ``httpx-aiohttp``;
            field ``http_backend``, the message says what to install).
    """
    check_backend_name(http_backend)
    if http_backend == "aiohttp":
        if not aiohttp_installed():
            raise InvalidParamsError(_AIOHTTP_HELP, field="http_backend", allowed=HTTP_BACKENDS)
        return AiohttpTransport(connections=connections, verify=verify)
    return ShardedTransport(connections=connections, verify=verify)


def check_backend(transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse to open a client whose API transport cannot run on the async library running.

    Raises:
        InvalidParamsError: aiohttp's transport outside asyncio (field ``http_backend``).
    """
    if isinstance(transport, AiohttpTransport) and current_async_library() != "asyncio":
        raise InvalidParamsError(
            "http_backend='aiohttp' runs on asyncio only; "
            f"on {current_async_library()} use the default, 'httpx'",
            field="http_backend",
            allowed=HTTP_BACKENDS,
        )


def aiohttp_installed() -> bool:
    """Whether the ``aiohttp`` extra is installed (``aiohttp`` and ``httpx-aiohttp``),
    without importing either."""
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
    """httpx's TLS context for ``verify``, made once per process and shared by every pool.

    Each one made anew loads the CA bundle again (tens of milliseconds, and about a
    megabyte): a client has several pools (one per API connection, and downloads).
    """
    return httpx.create_ssl_context(verify=verify)


def _ssl_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    return verify if isinstance(verify, ssl.SSLContext) else ssl_context(verify)


# -- httpx's own: one connection per pool ---------------------------------------------------


class _Shard:
    """One of httpx's transports, holding at most one connection, and how many use it."""

    __slots__ = ("busy", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.busy = 0


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport (``httpx.AsyncHTTPTransport``), one connection per pool.

    A request goes to the pool whose connection fell free last (so a quiet client reuses a
    few warm connections and lets the others expire), or to a new pool while fewer than
    ``connections`` exist; its pool is free again once its response is closed. Only past
    ``connections`` requests at once (the session bounds them below that) does one wait in a
    pool already in use, for its connection.

    Errors are httpx's own: ``httpx.ConnectError`` and ``httpx.ConnectTimeout`` come only
    from making a connection, before anything is written to it.

    Args:
        connections: Connections allowed at once.
        verify: TLS verification, or an SSL context.
        keepalive_expiry: Seconds an idle connection is kept.
    """

    def __init__(
        self,
        *,
        connections: int,
        verify: bool | ssl.SSLContext = True,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._max = connections
        self._context = _ssl_context(verify)
        self._limits = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry
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

    def __init__(
        self,
        stream: httpx.AsyncByteStream | httpx.SyncByteStream,
        owner: ShardedTransport,
        shard: _Shard,
    ) -> None:
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


# -- aiohttp (the extra) ------------------------------------------------------------------


def map_aiohttp_error(exc: Exception) -> httpx.TransportError:
    """httpx's error for a failure on aiohttp's transport, telling truly whether the request left.

    Decided by aiohttp's own error (what httpx-aiohttp raised ``from``, or what it let
    through), never by httpx-aiohttp's choice of httpx class: it maps every
    ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``, including a server that
    hung up after reading the request (``ServerDisconnectedError``) and a connection reset
    mid-answer (``ClientOSError``), which the session would take for "never sent".

    * "not sent" (``httpx.ConnectError``, ``httpx.ConnectTimeout``): only aiohttp's
      ``ClientConnectorError`` (the connection could not be made: refused, DNS, TLS) and
      ``ConnectionTimeoutError`` (timed out making it, or waiting for the pool);
    * a read timeout: ``ServerTimeoutError`` (``SocketTimeoutError`` included);
    * "may have been sent" (``httpx.RemoteProtocolError``, ``httpx.ReadError``): everything
      else, aiohttp's garbled answers (``ClientResponseError``) and errors of unknown cause
      included. A connect error whose aiohttp cause is unknown is one of these too: only a
      cause known to be before the connection may say "not sent".
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

    Its aiohttp session is made on the first request (inside the running loop), keeps no
    cookies (httpx's client keeps them, once) and reads no proxy variables (httpx routes
    proxied origins to transports of its own).

    Args:
        connections: Connections allowed at once.
        verify: TLS verification, or an SSL context.

    Raises:
        ImportError: aiohttp or httpx-aiohttp is not installed.
    """

    def __init__(self, *, connections: int, verify: bool | ssl.SSLContext = True) -> None:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport as _Inner

        self._connections = connections
        self._context = _ssl_context(verify)
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
        response.stream = _MappedStream(response.stream, self._errors)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _MappedStream(httpx.AsyncByteStream):
    """A response body whose errors are mapped by `map_aiohttp_error` too."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream | httpx.SyncByteStream,
        errors: tuple[type[Exception], ...],
    ) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._errors = errors

    def __aiter__(self) -> AsyncIterator[bytes]:
        # An iterator, not an async generator: one more generator layer would be left
        # suspended, for the collector to close, by a read that stops early.
        return _MappedChunks(self._stream.__aiter__(), self._errors)

    async def aclose(self) -> None:
        # A body closed before its end closes its connection: aiohttp pools only a
        # connection whose payload reached its end.
        try:
            await self._stream.aclose()
        except self._errors as exc:
            raise map_aiohttp_error(exc) from _cause(exc)


class _MappedChunks:
    """The chunks of an aiohttp body, with `map_aiohttp_error` applied to failures."""

    __slots__ = ("_chunks", "_errors")

    def __init__(self, chunks: AsyncIterator[bytes], errors: tuple[type[Exception], ...]) -> None:
        self._chunks = chunks
        self._errors = errors

    def __aiter__(self) -> _MappedChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except self._errors as exc:
            raise map_aiohttp_error(exc) from _cause(exc)
