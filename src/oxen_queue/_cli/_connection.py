"""A connection that could not be made, in the CLI's words, whatever the transport.

The error ([`APIConnectionError`][oxen_queue.APIConnectionError] with ``request_sent`` false)
carries the transport's own text: aiohttp's ``Cannot connect to host 127.0.0.1:9 ssl:default
[Connect call failed ...]`` (``ssl:default`` even for ``http://``), httpx's ``All connection
attempts failed``. :func:`connect_failure` says instead ``cannot connect to http://127.0.0.1:9:
connection refused``: the origin from the request, the reason from the chain of causes both
transports keep (the socket's ``OSError``, the resolver's ``gaierror``, the TLS layer's
``SSLError``, a timeout). A failure after the request left (``request_sent`` true) is not a
connection that could not be made: its own message stands.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable, Iterator

import httpx

from .._exceptions import APIConnectionError

__all__ = ["connect_failure"]

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def connect_failure(error: BaseException) -> str | None:
    """``cannot connect to ORIGIN: REASON`` for a connection that could not be made, else
    ``None`` (another error, or a request that may have reached the server)."""
    if not isinstance(error, APIConnectionError) or error.request_sent:
        return None
    return f"cannot connect to {_origin(error.request)}: {_reason(error)}"


def _origin(request: httpx.Request | None) -> str:
    if request is None:
        return "the hub"
    url = request.url
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{host}{port}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and its causes, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _tls(error: BaseException) -> str | None:
    # getattr: aiohttp's wrappers are SSLErrors too, without the attributes ssl sets (and
    # their text is the one with ``ssl:default``); the innermost, ssl's own, is looked at first.
    detail = getattr(error, "reason", None) or getattr(error, "strerror", None)
    if isinstance(error, ssl.SSLCertVerificationError):
        message = getattr(error, "verify_message", None) or detail or "not trusted"
        return f"its TLS certificate was not accepted ({message})"
    if isinstance(error, ssl.SSLError):
        return f"the TLS handshake failed ({detail or type(error).__name__})"
    return None


def _name(error: BaseException) -> str | None:
    if isinstance(error, socket.gaierror):
        return f"its host name did not resolve ({error.strerror or error})"
    return None


def _socket(error: BaseException) -> str | None:
    if isinstance(error, OSError) and error.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[error.errno]
    return None


def _timeout(error: BaseException) -> str | None:
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return "timed out"
    return None


# The most telling kind first: a TLS or name failure may travel inside a generic OSError.
_MATCHERS: tuple[Callable[[BaseException], str | None], ...] = (_tls, _name, _socket, _timeout)


def _reason(error: APIConnectionError) -> str:
    causes = list(_chain(error))[::-1]  # innermost first: the socket's, ssl's own
    for matcher in _MATCHERS:
        for cause in causes:
            reason = matcher(cause)
            if reason is not None:
                return reason
    innermost = causes[0]
    if isinstance(innermost, OSError) and innermost.strerror:
        return innermost.strerror
    return "no connection"
