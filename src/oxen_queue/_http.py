"""The HTTP layer: one connection pool, the key sent only to the API, every failure mapped.

`ApiSession` bounds the requests in flight, each attempt as a whole (httpx times each
network operation alone: a byte a second would hold a request forever) and each body's
size, maps every failure onto the ``OxenError`` tree, and retries what `_retry` says.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
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

DEFAULT_BASE_URL: Final = "https://hub.oxen.ai"
USER_AGENT: Final = f"oxen-queue/{__version__}"
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_CLOSED: Final = "the client is closed: use it inside `async with AsyncClient() as client:`"
_STATUS_ERRORS: Final[dict[int, type[APIStatusError]]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
}
_KEY: Final = re.compile(r"[\x21-\x7e]+\Z")  # visible ASCII: no space or control character


def check_api_key(api_key: str | None) -> str:
    """The API key: ``api_key``, else ``$OXEN_API_KEY``, stripped of surrounding whitespace.

    Accepts visible ASCII (``!`` to ``~``) only: httpx would refuse anything else in a header
    with a message quoting the key. Ours never repeat it.

    Raises:
        InvalidParamsError: No key, not a string, or not visible ASCII (field ``api_key``).
    """
    refuse = functools.partial(InvalidParamsError, field="api_key")
    key = api_key if api_key is not None else os.environ.get("OXEN_API_KEY", "")
    if not isinstance(key, str):
        raise refuse(f"api_key must be a string, not {type(key).__name__}")
    key = key.strip()
    if not key:
        raise refuse(
            "no API key: pass api_key=... or set the OXEN_API_KEY environment variable "
            "(create a key at https://www.oxen.ai under your profile's API keys)"
        )
    if _KEY.match(key) is None:
        where = next(i for i, c in enumerate(key) if not _KEY.match(c))
        raise refuse(
            f"api_key holds a character that is not visible ASCII at position {where + 1} of "
            f"{len(key)} (a space, a control character or a non-ASCII letter; the key is "
            "not shown): copy the key again"
        )
    return key


def check_base_url(base_url: str, *, allow_insecure_http: bool) -> httpx.URL:
    """Parse and vet the API's base URL; one ending in the API's prefix (the OpenAI-compatible
    ``https://hub.oxen.ai/api/ai``) is reduced to its origin, where the event stream lives.

    Raises:
        InvalidParamsError: Plain ``http://`` (the key would travel in clear) but to a loopback
            address (the emulator) or with ``allow_insecure_http``; credentials in the URL
            (they would show wherever it does; never repeated); no http(s) URL with a host.
    """
    refuse = functools.partial(InvalidParamsError, field="base_url")
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise refuse("base_url must be an http(s) URL such as https://hub.oxen.ai") from None
    if url.userinfo:
        raise refuse(
            "base_url must not carry credentials (user:password@): pass the key as api_key"
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise refuse(f"base_url must be an http(s) URL with a host, not {base_url!r}")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise refuse(
            f"refusing plain http:// to {url.host}: the API key would travel in clear. "
            "Use https://, or pass allow_insecure_http=True if you really mean it."
        )
    path = url.path.rstrip("/")
    path = path.removesuffix("/api/ai") if path.endswith("/api/ai") else path.removesuffix("/api")
    return url.copy_with(path=path + "/", query=None, fragment=None)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (a default port made explicit)."""
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


class _BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer`` to requests for the API's origin, and to no other."""

    def __init__(self, api_key: str, origin: httpx.URL) -> None:
        self._header = f"Bearer {api_key}"
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) == _origin(self._origin):
            request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return f"<_BearerAuth for {self._origin.scheme}://{self._origin.netloc.decode()}>"


def attempt_deadline(timeout: httpx.Timeout) -> float | None:
    """Seconds one whole attempt may take, connect to last byte: the largest phase timeout
    (``timeout=30``: 30 s); ``None`` (no read timeout): no limit."""
    if timeout.read is None:
        return None
    phases = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    return max(phase for phase in phases if phase is not None)


class _BodyTooLargeError(Exception):
    pass


async def consume(response: httpx.Response, take: Callable[[bytes], Awaitable[object]]) -> None:
    """Feed a streamed body to ``take``, chunk by chunk; an error of ``take`` stops it by a
    cancellation inside httpx's innermost ``await`` (leaving the loop would close only the
    outermost of httpx's nested async generators, and trio reports the rest)."""
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
    """The (decoded) body of a streamed response; `_BodyTooLargeError` past ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError(f"{declared} bytes declared")
    if declared.isdigit() and "content-encoding" not in response.headers:
        return await response.aread()  # framed by its length, not decoded: it cannot grow
    body = bytearray()

    async def take(chunk: bytes) -> None:
        body.extend(chunk)
        if len(body) > limit:
            body.clear()  # the error's traceback keeps this frame through a retry, say
            raise _BodyTooLargeError(f"over {limit} bytes")

    await consume(response, take)
    return bytes(body)


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

    As ``transport=`` it would turn off the environment's proxies; under ``all://``, the pattern
    httpx tries last, the proxies still win and a ``NO_PROXY`` host goes direct on httpx's pool.
    ``ALL_PROXY`` is httpx's own ``all://`` mount: with it, nothing is mounted.
    """
    if urllib.request.getproxies().get("all"):
        return {}
    return {"all://": transport}


class ApiSession:
    """The client's API session: pool, auth, admission control, bounds, error mapping, retries.

    ``api_key`` goes to ``base_url``'s origin only; the largest of ``timeout`` bounds each
    whole attempt. A ``transport`` carries every request as it is (tests); ``None``: the one
    ``http_backend`` names (`route_through`). ``telemetry`` hears of retries and refusals.

    Raises:
        InvalidParamsError: An unknown ``http_backend``, or ``"aiohttp"`` without the extra.
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
        self.clock = ServerClock()  # learned from every answer's Date header
        self.requests = 0  # every attempt counted
        self.retries = 0  # attempts that failed and were tried again
        self.auth = _BearerAuth(api_key, base_url)
        # The bounded requests plus the event stream: an admitted request never waits.
        connections = self.admission.max_bound + 2
        check_backend_name(http_backend)
        mounts: dict[str, httpx.AsyncBaseTransport] = {}
        if transport is None:
            mounts = route_through(
                api_transport(http_backend, connections=connections, verify=verify)
            )
        # None: ALL_PROXY is set, and httpx's own pools carry them as it routes them.
        self.transport = transport or mounts.get("all://")
        self.http = httpx.AsyncClient(
            base_url=base_url,
            auth=self.auth,
            timeout=timeout,
            # For what the mount does not carry (route_through).
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=transport,
            mounts=mounts,
            verify=ssl_context(verify),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        # The fixed paths merged with the base URL once (httpx would for every request).
        self._urls = {path: self.http.build_request("GET", path).url for path in _api.PATHS}

    def open(self) -> None:
        """Refuse (``InvalidParamsError``) ``http_backend="aiohttp"`` outside asyncio."""
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
        """One attempt at ``path`` (below the base URL), not retried, bounded whole: its JSON.
        ``on_admitted`` is awaited once the request holds its slot, just before it leaves (an
        enqueue writes its intent to the ledger there); ``paced``, ``sample``: see ``slot()``.

        Raises:
            APIStatusError: An error status (its body parsed, if small JSON).
            APIConnectionError: No (complete) answer; ``request_sent``, ``status_code``: how far.
            APIResponseValidationError: A success whose body is too large or not JSON.
            ClientClosedError: The client is closed.
        """
        if self.http.is_closed:
            raise ClientClosedError(_CLOSED)
        what = f"{method} /{path}"
        request = self.http.build_request(
            method,
            self._urls.get(path, path),
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
                message = f"{what}: no complete answer within {deadline:g} s"
                status = progress[0].status_code if progress else None
                raise APITimeoutError(
                    message, request=request, request_sent=True, status_code=status
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

    async def send_create(
        self, path: str, body: Mapping[str, Any], *, timeout: httpx.Timeout | None = None
    ) -> Any:
        """A ``POST`` that creates billable work: sent again only when it was refused, with no
        overall deadline (it would cut off work being billed; ``timeout`` bounds each try)."""
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
        """A streaming request (the event stream), not bounded: the caller bounds its reads."""
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
    """Our error for httpx's, saying whether the request may have landed; ``status_code``: that
    of an answer begun before it."""
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
    """The ``APIStatusError`` subclass for a read error response, with its body parsed
    (ignored when not ``body_known``: too large to read)."""
    try:
        body = _json.loads(response.content) if body_known else None
    except _json.BodyError:
        body = None
    code = response.status_code
    message = f"{response.request.method} {response.request.url.path}: HTTP {code}"
    error: APIStatusError
    if code == 429:
        retry_after = parse_retry_after(response.headers)
        error = RateLimitError(message, response=response, body=body, retry_after=retry_after)
    else:
        kind = _STATUS_ERRORS.get(code, ServerError if code >= 500 else APIStatusError)
        error = kind(message, response=response, body=body)
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
