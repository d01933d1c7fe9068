"""The HTTP layer: one connection pool, the key sent only to the API, errors mapped to ours.

Every request of the client goes through :class:`ApiSession`. It bounds how many requests are
in flight (so 10,000 concurrent ``enqueue()`` calls queue here instead of timing out in
httpx's pool), maps httpx errors and error statuses onto the ``OxenError`` tree, and retries
what :mod:`._retry` says may be retried.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import httpx

from ._admission import AdmissionControl
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._retry import RetryPolicy, is_refused, is_retryable, parse_retry_after, retrying_call
from ._version import __version__

__all__ = [
    "ApiSession",
    "check_base_url",
    "decode",
    "same_origin",
    "status_error",
    "transport_error",
]

logger = logging.getLogger("oxen_queue")

DEFAULT_BASE_URL: Final = "https://hub.oxen.ai"
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def check_base_url(base_url: str, *, allow_insecure_http: bool) -> httpx.URL:
    """Parse and vet the API's base URL.

    A plain ``http://`` URL would send the key in clear, so it is refused unless it points at a
    loopback address (the local emulator) or ``allow_insecure_http`` is set. A base URL given
    with the API's own prefix (``https://hub.oxen.ai/api/ai``, the OpenAI-compatible form) is
    reduced to its origin, since the event stream lives outside ``/api/ai``.
    """
    url = httpx.URL(base_url.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an http(s) URL with a host, not {base_url!r}")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ValueError(
            f"refusing plain http:// to {url.host}: the API key would travel in clear. "
            "Use https://, or pass allow_insecure_http=True if you really mean it."
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
    """Adds ``Authorization: Bearer`` to requests for the API's origin, and to no other.

    Result files live on other hosts (presigned URLs); they must never receive the key.
    """

    def __init__(self, api_key: str, origin: httpx.URL) -> None:
        self._header = f"Bearer {api_key}"
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if same_origin(request.url, self._origin):
            request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return f"<_BearerAuth for {self._origin.scheme}://{self._origin.netloc.decode()}>"


class ApiSession:
    """The client's HTTP session: pool, auth, admission control, error mapping, retries."""

    def __init__(
        self,
        *,
        base_url: httpx.URL,
        api_key: str,
        timeout: httpx.Timeout,
        max_concurrency: int,
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool = True,
    ) -> None:
        self.base_url = base_url
        self.retry = retry
        self.admission = AdmissionControl(max_concurrency=max_concurrency)
        # The pool holds the bounded requests plus the event stream and downloads, so a
        # request admitted by our limiter never waits for a connection.
        limits = httpx.Limits(
            max_connections=max_concurrency + 8, max_keepalive_connections=max_concurrency + 8
        )
        self.http = httpx.AsyncClient(
            base_url=base_url,
            auth=_BearerAuth(api_key, base_url),
            timeout=timeout,
            limits=limits,
            transport=transport,
            verify=verify,
            headers={"User-Agent": f"oxen-queue/{__version__}", "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One attempt: send, map errors, decode JSON. Nothing is retried here.

        Args:
            method: The HTTP method.
            path: The path below the base URL, without a leading slash.
            json_body: The JSON body, if any.
            params: The query, if any.
            timeout: Seconds to wait for the answer, instead of the client's read timeout.
        """
        enqueue = method == "POST" and path == "api/ai/queue"
        async with self.admission.slot(enqueue=enqueue):
            try:
                response = await self.http.request(
                    method,
                    path,
                    json=json_body,
                    params=params,
                    timeout=self.http.timeout if timeout is None else self._longer(timeout),
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, method, path) from exc
            self.admission.observe(response.status_code, enqueue=enqueue)
        return decode(response)

    def _longer(self, read: float) -> httpx.Timeout:
        base = self.http.timeout
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    async def send_create(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> Any:
        """A ``POST`` that creates billable work: sent again only when it was refused.

        The retry policy's overall deadline does not apply: it would cut off a request the
        server is still working on (and billing), and ``timeout`` already bounds each attempt.
        """
        return await retrying_call(
            lambda: self.send("POST", path, json_body=body, timeout=timeout),
            policy=dataclasses.replace(self.retry, deadline=None),
            retryable=is_refused,
            what=f"POST /{path}",
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """An idempotent request (``GET``/``DELETE``), retried per the policy."""
        return await retrying_call(
            lambda: self.send(method, path, params=params),
            policy=retry or self.retry,
            retryable=is_retryable,
            what=f"{method} /{path}",
        )

    @asynccontextmanager
    async def stream(self, method: str, path: str) -> AsyncIterator[httpx.Response]:
        """A streaming request (the event stream): not counted against the request bound."""
        request = self.http.build_request(method, path, headers={"Accept": "text/event-stream"})
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, method, path) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                decode(response)
            yield response
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()


def transport_error(exc: httpx.TransportError, method: str, path: str) -> APIConnectionError:
    """Our error for an httpx transport failure, saying whether the request may have landed."""
    sent = not isinstance(exc, _NOT_SENT)
    if isinstance(exc, httpx.TimeoutException):
        message = f"{method} /{path}: timed out ({type(exc).__name__})"
        return APITimeoutError(message, request=exc.request, request_sent=sent)
    message = f"{method} /{path}: {type(exc).__name__}: {exc}"
    return APIConnectionError(message, request=exc.request, request_sent=sent)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a successful response, or the mapped error of a failed one."""
    if response.status_code >= 400:
        raise status_error(response)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIResponseValidationError(
            f"{response.request.method} {response.request.url.path}: answered "
            f"{response.status_code} with a body that is not JSON: {_snippet(response)}",
            response=response,
        ) from exc


def status_error(response: httpx.Response) -> APIStatusError:
    """The ``APIStatusError`` subclass for an error response, with its body parsed."""
    try:
        body: object = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
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
    text = error.server_message or (None if body is not None else _snippet(response))
    if text:
        error.args = (f"{message}: {text}",)
        error.message = error.args[0]
    return error


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
