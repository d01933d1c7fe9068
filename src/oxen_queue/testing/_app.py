"""The emulator as an ASGI application: routing, authentication, faults, files, lifespan.

Two origins share one app. The API (``/api/...``, plus the unauthenticated admin routes under
``/_emulator/``) and the file origin that serves results (``/files/...``), told apart by the
port a request came in on (a running server listens on two) or, in-process, by the ``Host``
header (``config.files_origin``).
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final, Literal
from urllib.parse import urlsplit

import anyio

from ._admin import Admin
from ._api import Api
from ._clock import Clock
from ._config import EmulatorConfig
from ._faults import Faults
from ._files import find_file
from ._http import (
    Message,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    envelope_error,
    not_found,
    simple_error,
)
from ._jobs import User
from ._media import MediaCache
from ._sse import stream_events
from ._state import EmulatorState

__all__ = ["EmulatorApp", "create_app"]

Handler = Callable[[Request, User, Mapping[str, str]], Awaitable[Response]]
AdminHandler = Callable[[Request], Awaitable[Response]]
RouteKind = Literal["enqueue", "read", "plain", "events", "admin"]

_BAD_GATEWAY_HTML: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_GATEWAY_TIMEOUT_HTML: Final = (
    b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    kind: RouteKind
    handler: Handler | None = None
    admin: AdminHandler | None = None


def _route(
    method: str,
    template: str,
    kind: RouteKind,
    handler: Handler | None = None,
    admin: AdminHandler | None = None,
) -> _Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return _Route(method, template, re.compile(regex), kind, handler, admin)


class EmulatorApp:
    """The Oxen API emulator as an ASGI 3 application.

    Make one with [`create_app`][oxen_queue.testing.create_app]. Attributes: ``state`` (jobs and
    counters), ``faults``, ``config``.
    """

    def __init__(
        self,
        state: EmulatorState,
        *,
        files_port: int | None = None,
        abort_on_cut: bool = False,
    ) -> None:
        self.state = state
        self.media = MediaCache()
        # Set by the server that hosts the app: files are then told apart by port.
        self.files_port = files_port
        self.abort_on_cut = abort_on_cut
        self._buckets: dict[str, tuple[float, float]] = {}  # user id -> (tokens, when)
        api = Api(state, self.media)
        admin = Admin(state, self.media)
        self._routes = [
            _route("POST", "/api/ai/queue", "enqueue", api.enqueue),
            _route("GET", "/api/ai/queue", "read", api.list_queue),
            _route("GET", "/api/ai/queue/{generation_id}", "read", api.show_queue_item),
            _route("DELETE", "/api/ai/queue/{generation_id}", "plain", api.cancel),
            _route("GET", "/api/ai/generations", "read", api.list_generations),
            _route("GET", "/api/ai/generations/{generation_id}", "read", api.show_generation),
            _route("GET", "/api/events", "events"),
            _route("GET", "/api/ai/models", "plain", api.list_models),
            _route("GET", "/api/ai/models/{id}", "plain", api.show_model),
            _route("POST", "/api/ai/images/generate", "plain", api.generate_images),
            _route("POST", "/api/ai/images/edit", "plain", api.edit_images),
            _route("POST", "/api/ai/videos/generate", "plain", api.generate_videos),
            _route("GET", "/_emulator/stats", "admin", admin=admin.stats),
            _route("GET", "/_emulator/faults", "admin", admin=admin.get_faults),
            _route("POST", "/_emulator/faults", "admin", admin=admin.set_faults),
            _route("POST", "/_emulator/reset", "admin", admin=admin.reset),
            _route("GET", "/_emulator/clock", "admin", admin=admin.clock),
            _route("POST", "/_emulator/clock", "admin", admin=admin.clock),
        ]

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's configuration."""
        return self.state.config

    @property
    def faults(self) -> Faults:
        """The fault switches (mutable)."""
        return self.state.faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        send = self._dated(send)
        request = Request(scope, receive)
        if self._is_file_request(request):
            await self._serve_file(request, send)
        else:
            await self._serve_api(request, send)

    def _dated(self, send: Send) -> Send:
        """``send``, adding a ``Date`` header on the server's clock to every answer.

        The server's clock may run apart from the client's (``EmulatorConfig.clock_offset``);
        a real server states its time in ``Date``, and so does the emulator.
        """
        offset = self.state.config.clock_offset

        async def send_dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                date = formatdate(time.time() + offset, usegmt=True).encode()
                message = {**message, "headers": [*message.get("headers", ()), (b"date", date)]}
            await send(message)

        return send_dated

    # --- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # A server with a lifespan runs the scheduler, so events go out on time; without
        # one (httpx.ASGITransport), each request applies due transitions itself.
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with anyio.create_task_group() as group:
            group.start_soon(self.state.run_scheduler)
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            self.state.close_streams()
            group.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    # --- the API ---------------------------------------------------------------------------

    async def _serve_api(self, request: Request, send: Send) -> None:
        state = self.state
        state.advance()
        route, path = self._match(request)
        if route is None:
            state.count_request(request.method, "<unmatched>")
            await not_found().send(send)
            return
        if route.admin is not None:
            # Not counted: the counters describe API traffic, not the test's own probing.
            await (await route.admin(request)).send(send)
            return
        state.count_request(route.method, route.template)
        user = self._authenticate(request)
        if user is not None and route.kind == "events":
            await self._serve_events(request, send, user)
            return
        if user is None:
            response = envelope_error(
                401,
                "unauthenticated",
                "Unauthenticated",
                "Send a valid API key: Authorization: Bearer <key>",
                headers=[("www-authenticate", "Bearer")],
            )
        else:
            assert route.handler is not None
            response = await self._with_faults(route, route.handler, request, user, path)
        await self._delay(slow=True)
        await response.send(send, abort_on_cut=self.abort_on_cut)

    def _match(self, request: Request) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            if route.method != request.method:
                continue
            match = route.pattern.fullmatch(request.path)
            if match is not None:
                return route, match.groupdict()
        return None, {}

    def _authenticate(self, request: Request) -> User | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        expected = self.state.config.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            return None
        return self.state.user_for_key(key)

    async def _with_faults(
        self,
        route: _Route,
        handler: Handler,
        request: Request,
        user: User,
        path: Mapping[str, str],
    ) -> Response:
        faults = self.faults
        if route.kind == "enqueue":
            wait = self._rate_limit_wait(user, faults.enqueue_rate_limit)
            if wait is not None:
                self.state.count_fault("enqueue_rate_limit")
                return _rate_limited(faults, wait)
            if self._roll("enqueue_429", faults.enqueue_429):
                return _rate_limited(faults)
            if self._roll("enqueue_503", faults.enqueue_503):
                return envelope_error(503, "unknown_error", "Service unavailable")
            response = await handler(request, user, path)
            if response.status == 200:
                if self._roll("enqueue_504_after_create", faults.enqueue_504_after_create):
                    return Response(504, _GATEWAY_TIMEOUT_HTML, "text/html")
                if self._roll("enqueue_cut", faults.enqueue_cut):
                    response.cut_at = len(response.body) // 2
            return response
        if route.kind == "read":
            if self._roll("read_500", faults.read_500):
                return envelope_error(500, "unknown_error", "Internal server error")
            if self._roll("read_429", faults.read_429):
                return _rate_limited(faults)
            if self._roll("read_html", faults.read_html):
                return Response(502, _BAD_GATEWAY_HTML, "text/html")
            response = await handler(request, user, path)
            if self._roll("read_cut", faults.read_cut):
                response.cut_at = len(response.body) // 2
            elif response.status == 200 and self._roll("read_malformed", faults.read_malformed):
                response.body = response.body[: max(1, len(response.body) // 2)]
            return response
        return await handler(request, user, path)

    def _rate_limit_wait(self, user: User, rate: float | None) -> float | None:
        """Take a token from ``user``'s bucket; ``None`` if one was there, else the seconds
        until the next one. The bucket holds one second's worth and refills continuously."""
        if rate is None:
            self._buckets.pop(user.user_id, None)
            return None
        now = self.state.clock.now()
        tokens, then = self._buckets.get(user.user_id, (rate, now))
        tokens = min(rate, tokens + (now - then) * rate)
        if tokens >= 1:
            self._buckets[user.user_id] = (tokens - 1, now)
            return None
        self._buckets[user.user_id] = (tokens, now)
        return (1 - tokens) / rate

    def _roll(self, kind: str, rate: float) -> bool:
        if self.faults.roll(rate, kind=kind):
            self.state.count_fault(kind)
            return True
        return False

    async def _delay(self, *, slow: bool) -> None:
        faults = self.faults
        seconds = faults.latency
        if seconds > 0:
            self.state.count_fault("latency")
        if slow and self._roll("slow", faults.slow_rate):
            seconds += faults.slow_seconds
        deadline = anyio.current_time() + seconds
        # In slices, so a server shutting down is not held up by a long delay.
        while seconds > 0 and not self.state.closing:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            await anyio.sleep(min(remaining, 0.1))

    async def _serve_events(self, request: Request, send: Send, user: User) -> None:
        await self._delay(slow=False)
        status = self.faults.events_status
        if status is not None:
            self.state.count_fault("events_status")
            if status == 404:
                response = not_found()
            else:
                response = envelope_error(status, "unknown_error", "Event stream unavailable")
            await response.send(send)
            return
        await stream_events(request.scope, request.receive, send, state=self.state, user=user)

    # --- the file origin -------------------------------------------------------------------

    def _is_file_request(self, request: Request) -> bool:
        if self.files_port is not None:
            return request.server_port == self.files_port
        return request.host == (urlsplit(self.state.files_origin).hostname or "").lower()

    async def _serve_file(self, request: Request, send: Send) -> None:
        # Presigned URLs need no Authorization; count requests that send one anyway (a
        # client must not leak its API key to another origin).
        state = self.state
        state.count_file_request(with_auth="authorization" in request.headers)
        response = await self._file_response(request)
        await response.send(send)

    async def _file_response(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _xml_error(405, "MethodNotAllowed", "The specified method is not allowed")
        raw_path = request.scope.get("raw_path") or request.path.encode()
        status, artifact = find_file(self.state, raw_path.decode("latin-1"), request.query)
        if status == 404:
            return _xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if artifact is None:
            return _xml_error(403, "AccessDenied", "Request has expired or its signature is wrong.")
        data = await self.media.get(artifact)
        return Response(
            200,
            data,
            artifact.output.content_type,
            headers=[("cache-control", "private, max-age=3600")],
            head=request.method == "HEAD",
        )


def _rate_limited(faults: Faults, seconds: float | None = None) -> Response:
    # The only documented 429 is "Rate limit exceeded" (chat examples page), body unknown.
    headers = faults.retry_after_headers(seconds)
    return simple_error(429, "Rate limit exceeded", headers=headers)


def _xml_error(status: int, code: str, message: str) -> Response:
    # What an object store answers for a presigned URL.
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(status, body.encode(), "application/xml")


def create_app(
    *,
    config: EmulatorConfig | None = None,
    faults: Faults | None = None,
    clock: Clock | None = None,
) -> EmulatorApp:
    """The emulator as an ASGI app, for ``httpx.ASGITransport`` or any ASGI server.

    Result URLs point to ``config.files_origin`` (``http://files.oxen.test`` by default),
    which the same app serves when the request's ``Host`` is that origin's:

    ```python
    app = create_app(config=EmulatorConfig(time_scale=0.01))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
        ...
    app.state.stats.jobs_created
    ```

    ``httpx.ASGITransport`` runs no lifespan: each request applies the transitions that fell
    due, so polling works; it also buffers whole responses, so ``/api/events`` (which never
    ends) needs a real server: use [`Emulator`][oxen_queue.testing.Emulator].

    Args:
        config: Timings and limits.
        faults: Fault switches (all off by default).
        clock: Defaults to real time; a [`ManualClock`][oxen_queue.testing.ManualClock] for
            deterministic tests.
    """
    state = EmulatorState(config=config, faults=faults, clock=clock)
    return EmulatorApp(state)
