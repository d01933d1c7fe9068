"""The HTTP layer: one connection pool, the key sent only to the API, every failure mapped.

Every API request of the client goes through `ApiSession`. It bounds how many requests
are in flight (so 10,000 concurrent ``enqueue()`` calls queue here instead of timing out in
httpx's pool), bounds each attempt as a whole (httpx's timeouts are per network operation, so
a server sending a byte a second would otherwise hold a request open forever), reads at most
`MAX_BODY_BYTES` of any body, and maps every failure onto the ``OxenError``
tree. It retries what `_retry` says may be retried. It decodes bodies with `_json`
and knows nothing of their shapes, which `_api` owns.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import httpx

from . import _api, _json
from ._admission import AdmissionControl
from ._clock import ServerClock
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    InvalidParamsError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._otel import NO_TELEMETRY, Telemetry
from ._retry import RetryPolicy, is_refused, is_retryable, parse_retry_after, retrying_call
from ._transport import api_transport, check_backend, check_backend_name, ssl_context
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "USER_AGENT",
    "ApiSession",
    "check_base_url",
    "consume",
    "read_capped",
    "same_origin",
    "status_error",
    "transport_error",
]

logger = logging.getLogger("oxen_queue")

DEFAULT_BASE_URL: Final = "https://hub.oxen.ai"
USER_AGENT: Final = f"oxen-queue/{__version__}"
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_CLOSED: Final = "the client is closed: use it inside `async with AsyncClient() as client:`"
_FIXED_PATHS: Final = frozenset(
    {_api.QUEUE, _api.HISTORY, _api.MODELS, _api.IMAGES, _api.EDITS, _api.VIDEOS}
)


_KEY: Final = re.compile(r"[\x21-\x7e]+\Z")
"""A key as it may travel in a header: visible ASCII, no space or control character."""


def check_api_key(api_key: str | None) -> str:
    """The API key: ``api_key``, else ``$OXEN_API_KEY``, without surrounding whitespace (a
    newline read from a file with it).

    It must then be visible ASCII (``!`` to ``~``): it travels in the ``Authorization``
    header, where a control character, a space or a non-ASCII letter would be refused by the
    HTTP library with a message quoting the header, key included. The messages here never
    repeat the key; they say where the first character that is not allowed stands.

    Raises:
        InvalidParamsError: No key, a key that is not a string, or one holding a character
            outside visible ASCII (field ``api_key``).
    """
    key = api_key if api_key is not None else os.environ.get("OXEN_API_KEY", "")
    if not isinstance(key, str):
        raise InvalidParamsError(
            f"api_key must be a string, not {type(key).__name__}", field="api_key"
        )
    key = key.strip()
    if not key:
        raise InvalidParamsError(
            "no API key: pass api_key=... or set the OXEN_API_KEY environment variable "
            "(create a key at https://www.oxen.ai under your profile's API keys)",
            field="api_key",
        )
    if _KEY.match(key) is None:
        where = next(i for i, c in enumerate(key) if not _KEY.match(c))
        raise InvalidParamsError(
            f"api_key holds a character that is not visible ASCII at position {where + 1} of "
            f"{len(key)} (a space, a control character or a non-ASCII letter; the key is "
            "not shown): copy the key again",
            field="api_key",
        )
    return key


def check_base_url(base_url: str, *, allow_insecure_http: bool) -> httpx.URL:
    """Parse and vet the API's base URL.

    A plain ``http://`` URL would send the key in clear, so it is refused unless it points at a
    loopback address (the local emulator) or ``allow_insecure_http`` is set. Credentials in the
    URL (``https://user:secret@host``) are refused: they would show wherever the URL does, and
    the key belongs in ``api_key``. A base URL given with the API's own prefix
    (``https://hub.oxen.ai/api/ai``, the OpenAI-compatible form) is reduced to its origin,
    since the event stream lives outside ``/api/ai``.

    Raises:
        InvalidParamsError: An unusable, insecure or credential-carrying URL (field
            ``base_url``; the message never repeats the credentials).
    """
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidParamsError(
            "base_url must be an http(s) URL such as https://hub.oxen.ai", field="base_url"
        ) from None
    if url.userinfo:
        raise InvalidParamsError(
            "base_url must not carry credentials (user:password@): pass the key as api_key",
            field="base_url",
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidParamsError(
            f"base_url must be an http(s) URL with a host, not {base_url!r}", field="base_url"
        )
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise InvalidParamsError(
            f"refusing plain http:// to {url.host}: the API key would travel in clear. "
            "Use https://, or pass allow_insecure_http=True if you really mean it.",
            field="base_url",
        )
    path = url.path.rstrip("/")
    for suffix in ("/api/ai", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return url.copy_with(path=path + "/", query=None, fragment=None)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Whether two URLs share scheme, host and port (default ports made explicit)."""
    return (a.scheme, a.host, _port(a)) == (b.scheme, b.host, _port(b))


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)


class _BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer`` to requests for the API's origin, and to no other."""

    def __init__(self, api_key: str, origin: httpx.URL) -> None:
        self._header = f"Bearer {api_key}"
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if same_origin(request.url, self._origin):
            request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return f"<_BearerAuth for {self._origin.scheme}://{self._origin.netloc.decode()}>"


def attempt_deadline(timeout: httpx.Timeout) -> float | None:
    """Seconds one whole attempt may take: connecting, sending, then the whole answer.

    httpx times each network operation on its own; this bounds them together, so a body
    trickling in a byte at a time cannot hold a request open forever. It is the largest of
    the phase timeouts: a plain ``timeout=30`` bounds the whole attempt at 30 s. ``None``
    (no read timeout): no limit.
    """
    if timeout.read is None:
        return None
    phases = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    return max(phase for phase in phases if phase is not None)


class _BodyTooLargeError(Exception):
    pass


async def consume(response: httpx.Response, take: Callable[[bytes], Awaitable[object]]) -> None:
    """Feed a streamed body to ``take``, chunk by chunk as it arrives.

    An exception from ``take`` stops the transfer and is raised here, once httpx's stream has
    unwound. The stop is a cancellation, delivered inside httpx's innermost ``await``: leaving
    the loop between chunks would close only the outermost of httpx's nested async generators,
    and trio reports the others when they are collected.
    """
    error: Exception | None = None
    with anyio.CancelScope() as scope:
        async for chunk in response.aiter_bytes():
            if error is not None:
                continue  # decoded chunks already buffered: the next read takes the stop
            try:
                await take(chunk)
            except Exception as exc:
                error = exc
                scope.cancel()
    if error is not None:
        raise error


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The (decoded) body of a streamed response, refusing more than ``limit`` bytes.

    Raises:
        _BodyTooLargeError: The body is larger than ``limit`` (nothing more is read).
        httpx.HTTPError: The transfer failed.
    """
    headers = response.headers
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError(f"{declared} bytes declared")
    if declared.isdigit() and "content-encoding" not in headers:
        # Framed by its declared length and not decoded: it cannot grow past it, so it is
        # read whole, without the chunk-by-chunk count and the scope to stop it early.
        return await response.aread()
    chunks: list[bytes] = []
    size = 0

    async def take(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            # Let go of what was read: the error's traceback keeps this frame, and with it
            # the list, for as long as the error is kept (through a retry, say).
            chunks.clear()
            raise _BodyTooLargeError(f"over {limit} bytes")
        chunks.append(chunk)

    await consume(response, take)
    return b"".join(chunks)


def _materialize(response: httpx.Response, body: bytes) -> httpx.Response:
    """A complete copy of a streamed response, for errors that keep it (``.text`` works)."""
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=body, request=response.request
    )


def route_through(transport: httpx.AsyncBaseTransport) -> dict[str, httpx.AsyncBaseTransport]:
    """httpx ``mounts=`` that carry requests on ``transport`` where the environment sets no proxy.

    Passing a transport as httpx's ``transport=`` would turn off the proxies httpx takes from
    the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``). Mounted
    under ``all://`` instead, it is the pattern httpx tries last (its mounts are sorted from
    the most specific, and ``all://`` names no scheme, host or port), so the environment's
    ``http://`` and ``https://`` proxies still win for their schemes, and a host ``NO_PROXY``
    names goes direct, on httpx's own pool. ``ALL_PROXY`` is httpx's ``all://`` mount
    itself: with it set, nothing is mounted, and httpx routes every request as it would.
    """
    if urllib.request.getproxies().get("all"):
        return {}
    return {"all://": transport}


class ApiSession:
    """The client's API session: pool, auth, admission control, bounds, error mapping, retries.

    Args:
        base_url: The API's origin (from `check_base_url`).
        api_key: Sent as a bearer token to that origin only.
        timeout: httpx's per-operation timeouts; the largest also bounds each whole attempt.
        max_concurrency: Requests in flight at once; ``None``: an adaptive bound
            (`InflightLimit`).
        retry: How idempotent requests are retried.
        transport: An httpx transport, used as it is for every request (tests); ``None``:
            the one ``http_backend`` names (`api_transport`), behind
            httpx's client, which keeps the environment's proxies (`route_through`).
        http_backend: ``"httpx"`` or ``"aiohttp"`` (the extra; asyncio only). With a
            ``transport``, it chooses nothing (as httpx's own options do not).
        verify: TLS verification.
        telemetry: Told of retries and refusals (``_otel``).

    Raises:
        InvalidParamsError: An unknown ``http_backend``, or ``"aiohttp"`` (to be used)
            without the extra (field ``http_backend``).
    """

    def __init__(
        self,
        *,
        base_url: httpx.URL,
        api_key: str,
        timeout: httpx.Timeout,
        max_concurrency: int | None,
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        http_backend: str = "httpx",
        verify: bool = True,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.base_url = base_url
        self.telemetry = telemetry
        self.retry = retry
        self.admission = AdmissionControl(max_concurrency=max_concurrency)
        self._deadline = attempt_deadline(timeout)
        self.clock = ServerClock()
        """The server's clock, learned from every answer's ``Date`` header."""
        self.requests = 0
        """API requests sent, every attempt counted."""
        self.retries = 0
        """Attempts that failed and were tried again."""
        self.auth = _BearerAuth(api_key, base_url)
        self._urls: dict[str, httpx.URL] = {}
        # The pool holds the bounded requests plus the event stream, so a request admitted by
        # our limiter never waits for a connection. Result files have a client of their own.
        connections = self.admission.max_bound + 2
        check_backend_name(http_backend)
        mounts: dict[str, httpx.AsyncBaseTransport] = {}
        if transport is None:
            mounts = route_through(
                api_transport(http_backend, connections=connections, verify=verify)
            )
        self.transport = transport or mounts.get("all://")
        """What carries the API's requests where no proxy of the environment does (``None``:
        ``ALL_PROXY`` is set, and httpx's own pools carry them, as httpx routes them)."""
        self.http = httpx.AsyncClient(
            base_url=base_url,
            auth=self.auth,
            timeout=timeout,
            # httpx's own pool and its proxy transports carry what the mount does not (see
            # route_through): as large as the bound, so an admitted request never waits.
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=transport,
            mounts=mounts,
            verify=ssl_context(verify),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    def open(self) -> None:
        """Check, from ``__aenter__``, that the transport can run on the async library running.

        Raises:
            InvalidParamsError: ``http_backend="aiohttp"`` outside asyncio.
        """
        check_backend(self.transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        timeout: httpx.Timeout | None = None,
        on_admitted: Callable[[], Awaitable[object]] | None = None,
        paced: bool = False,
        sample: bool = True,
    ) -> Any:
        """One attempt: send, read at most the body cap, map errors, decode JSON.

        Nothing is retried here. The attempt as a whole, connect to last byte, is bounded by
        the largest of its phase timeouts (see `attempt_deadline`).

        Args:
            method: The HTTP method.
            path: The path below the base URL, without a leading slash.
            json_body: The JSON body, if any.
            params: The query, if any.
            timeout: This request's timeouts; ``None``: the client's.
            on_admitted: Awaited once the request has its slot, just before it leaves (an
                enqueue writes its intent to the ledger there, with the true send time).
            paced: It creates jobs (an enqueue): it waits for the enqueue pacer, and its
                answer (accepted or refused with 429) sets the pace
                (`EnqueueRate`).
            sample: Its latency tells how loaded the path is (for the adaptive bound); not
                for an answer that takes as long as the work (the blocking endpoints).

        Raises:
            APIStatusError: An error status (its body parsed, if it is small JSON).
            APIConnectionError: No (complete) answer; ``request_sent`` and ``status_code``
                say how far it got.
            APIResponseValidationError: A success whose body is too large or not JSON.
            ClientClosedError: The client is closed.
        """
        if self.http.is_closed:
            raise ClientClosedError(_CLOSED)
        what = f"{method} /{path}"
        request = self.http.build_request(
            method,
            self._url(path),
            json=json_body,
            params=params,
            timeout=self.http.timeout if timeout is None else timeout,
        )
        deadline = self._deadline if timeout is None else attempt_deadline(timeout)
        async with self.admission.slot(paced=paced, sample=sample) as slot:
            if on_admitted is not None:
                await on_admitted()
            self.requests += 1
            progress: list[httpx.Response] = []
            with anyio.move_on_after(math.inf if deadline is None else deadline) as scope:
                response, body = await self._exchange(request, what, progress)
            if scope.cancelled_caught:
                status = progress[0].status_code if progress else None
                raise APITimeoutError(
                    f"{what}: no complete answer within {deadline:g} s",
                    request=request,
                    request_sent=True,
                    status_code=status,
                )
            status = response.status_code
            slot.observe(status)
            if status in (429, 503):
                self.telemetry.refused(method, path, status)
        return _decode(response, body, what)

    async def _exchange(
        self, request: httpx.Request, what: str, progress: list[httpx.Response]
    ) -> tuple[httpx.Response, bytes | None]:
        sent = time.time()
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, what) from exc
        except RuntimeError as exc:  # httpx: "the client has been closed"
            if self.http.is_closed:
                raise ClientClosedError(_CLOSED) from exc
            raise
        progress.append(response)
        self.clock.observe_date(response.headers.get("date"), sent=sent, received=time.time())
        try:
            body: bytes | None = await read_capped(response, _json.MAX_BODY_BYTES)
        except _BodyTooLargeError:
            body = None
        except httpx.DecodingError as exc:  # a body that fails its own content-encoding
            raise _invalid(response, b"", what, f"undecodable body ({exc})") from exc
        except httpx.TransportError as exc:
            raise transport_error(exc, what, status_code=response.status_code) from exc
        finally:
            if not response.is_closed:  # read whole, it is closed already
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        return response, body

    def _url(self, path: str) -> httpx.URL | str:
        """The absolute URL of one of the API's fixed paths, merged with the base URL once
        (httpx parses and merges it again for every request); other paths as they are."""
        if path not in _FIXED_PATHS:
            return path
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self.http.build_request("GET", path).url
        return url

    def read_timeout(self, read: float, *, base: httpx.Timeout | None = None) -> httpx.Timeout:
        """``base`` (``None``: the client's timeouts) with another read timeout, for answers
        known to be slow."""
        base = base or self.http.timeout
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    async def send_create(
        self, path: str, body: Mapping[str, Any], *, timeout: httpx.Timeout | None = None
    ) -> Any:
        """A ``POST`` that creates billable work: sent again only when it was refused.

        The retry policy's overall deadline does not apply: it would cut off a request the
        server is still working on (and billing), and ``timeout`` already bounds each attempt.
        """
        return await retrying_call(
            lambda: self.send("POST", path, json_body=body, timeout=timeout, sample=False),
            policy=dataclasses.replace(self.retry, deadline=None),
            retryable=is_refused,
            what=f"POST /{path}",
            on_retry=lambda error, _: self.note_retry("POST", path, error),
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Any:
        """An idempotent request (``GET``/``DELETE``), retried per the policy."""
        return await retrying_call(
            lambda: self.send(method, path, params=params, timeout=timeout),
            policy=self.retry,
            retryable=is_retryable,
            what=f"{method} /{path}",
            on_retry=lambda error, _: self.note_retry(method, path, error),
        )

    def note_retry(self, method: str, path: str, error: BaseException | None) -> None:
        """Count one retried attempt of ``method path``, which failed with ``error``."""
        self.retries += 1
        self.telemetry.retried(method, path, error)

    @asynccontextmanager
    async def stream(self, method: str, path: str) -> AsyncIterator[httpx.Response]:
        """A streaming request (the event stream): not counted against the request bound.

        The caller bounds how long it waits and reads (see the event watcher's stall rule).
        """
        if self.http.is_closed:
            raise ClientClosedError(_CLOSED)
        what = f"{method} /{path}"
        request = self.http.build_request(method, path, headers={"Accept": "text/event-stream"})
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, what) from exc
        try:
            if response.status_code >= 400:
                try:
                    body: bytes | None = await read_capped(response, _json.MAX_BODY_BYTES)
                except (_BodyTooLargeError, httpx.HTTPError):
                    body = None
                _decode(response, body, what)
            yield response
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()


def transport_error(
    exc: httpx.TransportError, what: str, *, status_code: int | None = None
) -> APIConnectionError:
    """Our error for an httpx transport failure, saying whether the request may have landed.

    Args:
        exc: httpx's error.
        what: Method and path, for the message (the host is in ``exc.request``).
        status_code: The status of an answer whose headers had arrived before the failure.
    """
    sent = not isinstance(exc, _NOT_SENT)
    request: httpx.Request | None
    try:
        request = exc.request
    except RuntimeError:  # raised before any request was attached
        request = None
    where = f"{what} on {request.url.host}" if request is not None else what
    after = f" after an HTTP {status_code} answer began" if status_code is not None else ""
    if isinstance(exc, httpx.TimeoutException):
        message = f"{where}: timed out ({type(exc).__name__}){after}"
        return APITimeoutError(message, request=request, request_sent=sent, status_code=status_code)
    detail = str(exc) or type(exc).__name__
    message = f"{where}: {type(exc).__name__}: {detail}{after}"
    return APIConnectionError(message, request=request, request_sent=sent, status_code=status_code)


def _invalid(
    response: httpx.Response, body: bytes, what: str, problem: str
) -> APIResponseValidationError:
    return APIResponseValidationError(
        f"{what}: answered {response.status_code} with {problem}",
        response=_materialize(response, body),
    )


def _decode(response: httpx.Response, body: bytes | None, what: str) -> Any:
    """The JSON body of a successful response, or the mapped error of a failed one."""
    if response.status_code >= 400:
        raise status_error(_materialize(response, body or b""), body_known=body is not None)
    if body is None:
        raise _invalid(response, b"", what, f"a body over {_json.MAX_BODY_BYTES} bytes")
    try:
        return _json.loads(body)
    except _json.BodyError as exc:
        snippet = _snippet(body.decode("utf-8", "replace"))
        problem = f"a body that is not JSON within the client's limits ({exc}): {snippet}"
        raise _invalid(response, body, what, problem) from None


def status_error(response: httpx.Response, *, body_known: bool = True) -> APIStatusError:
    """The ``APIStatusError`` subclass for an error response, with its body parsed.

    Args:
        response: A complete (read) error response.
        body_known: ``False`` when the body was too large to read (it is then ignored).
    """
    body: object = None
    if body_known:
        try:
            body = _json.loads(response.content)
        except _json.BodyError:
            body = None
    code = response.status_code
    request = response.request
    error: APIStatusError
    message = f"{request.method} {request.url.path}: HTTP {code}"
    if code == 429:
        error = RateLimitError(
            message, response=response, body=body, retry_after=parse_retry_after(response.headers)
        )
    elif code in (400, 422):
        error = BadRequestError(message, response=response, body=body)
    elif code in (401, 403):
        error = AuthenticationError(message, response=response, body=body)
    elif code == 404:
        error = NotFoundError(message, response=response, body=body)
    elif code >= 500:
        error = ServerError(message, response=response, body=body)
    else:
        error = APIStatusError(message, response=response, body=body)
    text = error.server_message or (
        None if body is not None or not body_known else _snippet(response.text)
    )
    if text:
        error.args = (f"{message}: {text}",)
        error.message = error.args[0]
    return error


def _snippet(text: str, limit: int = 200) -> str:
    text = text[: limit * 2].strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
