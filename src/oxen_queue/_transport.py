"""The connection pools behind the API session: the cheapest that keeps every guarantee.

httpx's own pool (httpcore) rescans every connection, and polls every idle socket, on each
request it takes in and each response it closes, so its CPU cost per request grows with the
pool: measured with ``benchmarks/wan.py``, about 1 ms per request with 16 connections, 7-9 ms
with 64 and 13-16 ms with 256, and throughput to a distant hub *falls* as the pool grows.
Two ways out, both flat with concurrency:

* on asyncio, aiohttp's pool, through the ``httpx-aiohttp`` transport (0.35-0.5 ms per
  request: the fastest measured), behind :class:`AiohttpTransport`, which maps aiohttp's
  errors onto httpx's exactly (see there: httpx-aiohttp's own mapping would have a request
  the server may have received sent again);
* on trio, or wherever aiohttp cannot be imported, :class:`ShardedTransport`: several small
  httpcore pools behind one transport, so each scan stays short (0.8-1.3 ms per request).

:class:`DefaultTransport` picks one on the first request, from the async library running it.
A transport given by the user (``AsyncClient(transport=...)``) is always used as it is.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, Literal

import httpx

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "AiohttpTransport",
    "DefaultTransport",
    "ShardedTransport",
    "current_async_library",
    "map_aiohttp_error",
    "ssl_context",
]

logger = logging.getLogger("oxen_queue")

KEEPALIVE_EXPIRY: Final = 5.0  # httpx's default: seconds an idle connection is kept
PER_POOL: Final = 16  # connections per httpcore pool: where its scans still cost little

TransportName = Literal["aiohttp", "sharded"]


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


class DefaultTransport(httpx.AsyncBaseTransport):
    """The session's transport when the user gives none, chosen on its first request.

    aiohttp's pool on asyncio, :class:`ShardedTransport` on trio or without aiohttp.

    Args:
        connections: Connections allowed at once (the request bound, plus the event stream).
        verify: TLS verification, or an SSL context.
    """

    def __init__(self, *, connections: int, verify: bool | ssl.SSLContext = True) -> None:
        self._connections = connections
        self._verify = verify
        self._chosen: httpx.AsyncBaseTransport | None = None
        self.name: TransportName | None = None
        """Which one was chosen (``None`` before the first request)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._chosen or self.choose()
        return await transport.handle_async_request(request)

    def choose(self) -> httpx.AsyncBaseTransport:
        """Choose for the async library running now (at once, if not yet chosen)."""
        if self._chosen is not None:
            return self._chosen
        transport: httpx.AsyncBaseTransport | None = None
        if current_async_library() == "asyncio":
            try:
                transport = AiohttpTransport(connections=self._connections, verify=self._verify)
                self.name = "aiohttp"
            except ImportError as exc:
                logger.debug("aiohttp unavailable (%s): httpcore pools instead", exc)
        if transport is None:
            transport = ShardedTransport(connections=self._connections, verify=self._verify)
            self.name = "sharded"
        self._chosen = transport
        return transport

    async def aclose(self) -> None:
        if self._chosen is not None:
            await self._chosen.aclose()


# -- aiohttp ------------------------------------------------------------------------------


def map_aiohttp_error(exc: Exception) -> httpx.TransportError:
    """httpx's error for an aiohttp failure, telling truly whether the request left.

    httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``,
    including a server that hung up after reading the request (``ServerDisconnectedError``)
    and a connection reset mid-answer (``ClientOSError``). The session takes a connect error
    to mean "never sent", and would send an enqueue again that the server may have made a
    job of. So the error is mapped again from aiohttp's own (``exc.__cause__``): only a
    connection that could not be made (``ClientConnectorError``, DNS and TLS failures
    included) or a timeout while making it (``ConnectionTimeoutError``) is "not sent";
    everything after a connection was had "may have been sent". An aiohttp error that
    httpx-aiohttp lets through unmapped (a garbled status line or header, a bad chunk size:
    ``ClientResponseError``) is one after a connection was had.
    """
    import aiohttp

    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    message = str(exc) or type(cause or exc).__name__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for the pool
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):  # reading (SocketTimeoutError), or other
        return httpx.ReadTimeout(message)
    if isinstance(
        cause,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return httpx.ReadError(message)  # said "not sent" for a cause not known to be so
    if isinstance(exc, httpx.TransportError):
        return exc
    return httpx.RemoteProtocolError(message)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport (asyncio only), its errors mapped by :func:`map_aiohttp_error`.

    Its aiohttp session keeps no cookies (httpx's client keeps them, once) and ignores proxy
    variables (httpx routes proxied origins to transports of its own).

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
    """A response body whose errors are mapped by :func:`map_aiohttp_error` too."""

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
    """The chunks of an aiohttp body, with :func:`map_aiohttp_error` applied to failures."""

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


def _cause(exc: Exception) -> BaseException:
    """aiohttp's own error: what httpx-aiohttp wrapped, or what it let through."""
    return exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc


def _ssl_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    return verify if isinstance(verify, ssl.SSLContext) else ssl_context(verify)


@functools.cache
def ssl_context(verify: bool) -> ssl.SSLContext:
    """httpx's TLS context for ``verify``, made once per process and shared by every pool.

    Each one made anew loads the CA bundle again (tens of milliseconds, and about a
    megabyte): a client has several pools (API requests, sharded or not, and downloads).
    """
    return httpx.create_ssl_context(verify=verify)


# -- sharded httpcore pools -----------------------------------------------------------------


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several small httpcore pools behind one transport (any async library httpx supports).

    httpcore's pool rescans its connections (and, for every idle one, polls its socket) on
    every request it takes in and every response it closes, so a pool of ``n`` connections
    costs CPU that grows faster than ``n``. Pools of at most ``per_pool`` keep the scans
    short. A request goes to the first pool with a connection to spare; pools are made as
    they are first needed, so a quiet client has one.

    Args:
        connections: Connections allowed at once, over all pools.
        per_pool: Connections per pool.
        verify: TLS verification, or an SSL context.
    """

    def __init__(
        self,
        *,
        connections: int,
        per_pool: int = PER_POOL,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        self._per_pool = per_pool
        self._max_pools = max(1, math.ceil(connections / per_pool))
        self._context = _ssl_context(verify)
        self._pools: list[httpx.AsyncHTTPTransport] = []
        self._busy: list[int] = []

    def _pick(self) -> int:
        for index, busy in enumerate(self._busy):
            if busy < self._per_pool:
                return index
        if len(self._pools) < self._max_pools:
            limits = httpx.Limits(
                max_connections=self._per_pool,
                max_keepalive_connections=self._per_pool,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            self._pools.append(httpx.AsyncHTTPTransport(verify=self._context, limits=limits))
            self._busy.append(0)
            return len(self._pools) - 1
        # More requests than connections (the caller bounds them, so this is rare): queue in
        # the least busy pool.
        return min(range(len(self._busy)), key=self._busy.__getitem__)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self._busy[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._busy[index] -= 1
            raise
        response.stream = _Released(response.stream, lambda: self._release(index))
        return response

    def _release(self, index: int) -> None:
        self._busy[index] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Released(httpx.AsyncByteStream):
    """A response body that says when it is closed (its connection is free again)."""

    def __init__(
        self, stream: httpx.AsyncByteStream | httpx.SyncByteStream, release: Callable[[], None]
    ) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # as it is: no generator layer of its own

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None
