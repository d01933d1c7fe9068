"""Just enough raw ASGI: a request reader, a response writer and the API's error bodies.

The emulator speaks ASGI directly rather than through a framework: it needs to route by
listening port, cut connections mid-body and stream events byte for byte, and importing it
must stay cheap (the pytest plugin lives beside it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from ._faults import DeliberateCut
from ._jobs import dump_json

__all__ = [
    "BodyTooLargeError",
    "Message",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "envelope_error",
    "invalid_params",
    "json_response",
    "not_found",
    "raw_json_response",
    "simple_error",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_BODY: Final = 16 * 1024 * 1024


class BodyTooLargeError(Exception):
    """The request body is larger than the emulator accepts."""


@dataclass(slots=True)
class Request:
    """An HTTP request, read from an ASGI scope."""

    scope: Scope
    receive: Receive
    method: str = field(init=False)
    path: str = field(init=False)
    query: dict[str, str] = field(init=False)
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.method = str(self.scope["method"]).upper()
        self.path = str(self.scope["path"])
        raw_query = self.scope.get("query_string", b"")
        # A repeated parameter keeps its last value, as Phoenix's params do.
        self.query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self.scope.get("headers", [])
        }

    @property
    def host(self) -> str:
        """The ``Host`` header's host name, lower-cased, without the port."""
        host = self.headers.get("host", "").lower()
        if host.startswith("["):
            return host.split("]", 1)[0] + "]"
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def server_port(self) -> int | None:
        """The local port the request came in on (``None`` in-process)."""
        server = self.scope.get("server")
        return int(server[1]) if server and server[1] is not None else None

    async def body(self) -> bytes:
        """The whole request body.

        Raises:
            BodyTooLargeError: Over 16 MiB.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                raise BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def json(self) -> Any:
        """The body parsed as JSON (see `parse_json`).

        Raises:
            ValueError: Not JSON, or nested too deeply.
            BodyTooLargeError: Over 16 MiB.
        """
        return parse_json(await self.body())


def parse_json(raw: bytes) -> Any:
    """A request body parsed as JSON: the emulator's one reader of what clients send.

    Raises:
        ValueError: Not JSON (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are both
            ``ValueError``), or nested deeper than Python's recursion limit (a body of
            100,000 ``[``, which ``json`` refuses with ``RecursionError``).
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


@dataclass(slots=True)
class Response:
    """A complete HTTP response.

    Attributes:
        status: The status code.
        body: The body.
        content_type: The ``Content-Type``.
        headers: More headers, lower-case names.
        cut_at: If set, send the full ``Content-Length`` but only this many bytes of the body,
            then abort (see `send`).
        head: Send the headers only (a ``HEAD`` request).
    """

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    cut_at: int | None = None
    head: bool = False

    async def send(self, send: Send, *, abort_on_cut: bool = True) -> None:
        """Write the response.

        A cut response sends its start and part of its body, then raises
        `DeliberateCut` so the server aborts the connection (uvicorn closes the socket:
        the client sees a body shorter than its ``Content-Length``). With
        ``abort_on_cut=False`` (in-process, where there is no connection) the response ends
        there instead, truncated.
        """
        headers = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode()),
        ]
        headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        if self.head:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if self.cut_at is None:
            await send({"type": "http.response.body", "body": self.body, "more_body": False})
            return
        partial = self.body[: self.cut_at]
        if not abort_on_cut:
            await send({"type": "http.response.body", "body": partial, "more_body": False})
            return
        await send({"type": "http.response.body", "body": partial, "more_body": True})
        raise DeliberateCut


def json_response(
    data: Any, status: int = 200, *, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON response."""
    return Response(status, dump_json(data), headers=headers or [])


def raw_json_response(body: bytes, status: int = 200) -> Response:
    """A JSON response whose body is already encoded."""
    return Response(status, body)


def simple_error(
    status: int, message: str, *, headers: list[tuple[str, str]] | None = None
) -> Response:
    """The API's simple error body: ``{"error": {"message": ...}}``."""
    return json_response({"error": {"message": message}}, status, headers=headers)


def envelope_error(
    status: int,
    error_type: str,
    title: str,
    detail: str | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """The API's error envelope.

    ``{"error": {"type", "title", "detail"}, "status": "error", "status_message": <type>}``;
    ``detail`` is left out when ``None`` (the documented 404 has none).
    """
    error: dict[str, str] = {"type": error_type, "title": title}
    if detail is not None:
        error["detail"] = detail
    body = {"error": error, "status": "error", "status_message": error_type}
    return json_response(body, status, headers=headers)


def not_found() -> Response:
    """The documented 404 of ``/api/ai/queue/{id}`` (and of any unknown resource)."""
    return envelope_error(404, "resource_not_found", "The requested resource could not be found")


def invalid_params(detail: str) -> Response:
    """A 400 in the envelope form, ``type`` ``invalid_params``."""
    return envelope_error(400, "invalid_params", "Invalid request parameters", detail)
