"""A hostile server: the real emulator behind a switchboard of per-test misbehaviours.

Everything a test does not override behaves like the API (the emulator answers it). An
override names a method, a path template and what to do instead (an action, from
:mod:`.actions`), in two lines::

    server.on("GET", "/api/ai/queue/{id}", reply(200, deep_json()), times=3)
    server.on("POST", "/api/ai/queue", delayed(1.5))  # the job is created, the answer late

Several actions in one rule are used one per matching request, in order, then the rule is
spent (``times`` overrides how many requests it answers; actions then cycle). Rules are tried
in the order they were added; a request no live rule matches goes to the emulator. An action
is an ``async def (Exchange) -> None``: it answers through the :class:`Exchange`, which can
also let the emulator answer first and hand over what it said.

Every request is logged (:class:`Logged`: origin, method, path, whether it carried an
``Authorization`` header, when it started and ended), so a test can count enqueues, see
which requests overlapped, and check that the key never reached a host or path it should not.

The server runs in a background thread with its own asyncio loop (the emulator's), so it
serves asyncio and trio tests alike. Anything an action holds open ends when the client hangs
up or the server is :meth:`~HostileServer.reset` for the next test.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

import anyio

from oxen_queue.testing import Emulator, EmulatorConfig
from oxen_queue.testing._app import EmulatorApp
from oxen_queue.testing._catalog import MODELS
from oxen_queue.testing._http import Message, Receive, Scope, Send
from oxen_queue.testing._jobs import Job
from oxen_queue.testing._state import EmulatorState

__all__ = ["Action", "Captured", "Exchange", "HostileApp", "HostileServer", "Logged"]

Origin = Literal["api", "files"]
Action = Callable[["Exchange"], Awaitable[None]]

_SLICE: Final = 0.02  # how often a held request looks whether it may end
_ACTIVE: Final = frozenset({"queued", "processing"})


@dataclass(slots=True)
class Logged:
    """One request the server received.

    Attributes:
        origin: ``"api"`` or ``"files"`` (the port it came in on).
        method: The HTTP method.
        path: The path, without the query.
        query: The raw query string.
        authorized: Whether it carried an ``Authorization`` header.
        started: ``time.monotonic()`` when it arrived.
        ended: ``time.monotonic()`` when the server was done with it (``None`` while open).
        overridden: Whether a rule answered it (else the emulator did).
    """

    origin: Origin
    method: str
    path: str
    query: str
    authorized: bool
    started: float
    ended: float | None = None
    overridden: bool = False


@dataclass(slots=True)
class Captured:
    """What the emulator answered, held so an action can replay, delay or replace it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(template)))


@dataclass(slots=True)
class _Rule:
    origin: Origin
    method: str
    pattern: re.Pattern[str]
    actions: Sequence[Action]
    times: int | None
    when: Callable[[str], bool] | None
    used: int = 0

    def take(self, origin: Origin, method: str, path: str) -> Action | None:
        if origin != self.origin or method != self.method or not self.pattern.fullmatch(path):
            return None
        if self.when is not None and not self.when(path):
            return None
        if self.times is not None and self.used >= self.times:
            return None
        action = self.actions[self.used % len(self.actions)]
        self.used += 1
        return action


class Exchange:
    """One request being answered by an action: the ASGI triple, plus what actions need."""

    def __init__(self, app: HostileApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self._receive = receive
        self._send = send
        self.epoch = app.epoch
        self.disconnected = False
        self.headers: dict[str, str] = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        self.query: dict[str, str] = {}
        for part in bytes(scope.get("query_string", b"")).decode("latin-1").split("&"):
            name, _, value = part.partition("=")
            if name:
                self.query[name] = value

    def over(self) -> bool:
        """Whether to stop: the client hung up, or the server moved on to the next test."""
        return self.disconnected or self.app.epoch != self.epoch or self.app.state.closing

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        await self._send(message)

    async def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), length: int | None = None
    ) -> None:
        """Send the status line and headers (with ``Content-Length`` when ``length`` is set)."""
        all_headers = list(headers)
        if length is not None:
            all_headers.append((b"content-length", str(length).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": all_headers})

    async def body(self, chunk: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": chunk, "more_body": more})

    async def emulator(self) -> Captured:
        """Let the emulator answer, and capture that answer instead of sending it."""
        captured = Captured(200, [], b"")
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured.status = int(message["status"])
                captured.headers = [
                    (bytes(k), bytes(v))
                    for k, v in message.get("headers", [])
                    if bytes(k).lower() != b"content-length"
                ]
            else:
                parts.append(bytes(message.get("body", b"")))

        await self.app.emulate(self.scope, self.receive, capture)
        captured.body = b"".join(parts)
        return captured

    async def hold(self, seconds: float = math.inf) -> None:
        """Wait ``seconds``, or until :meth:`over` (inside :meth:`watching` to see hang-ups)."""
        deadline = anyio.current_time() + seconds
        while not self.over():
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            await anyio.sleep(min(remaining, _SLICE))  # the behaviour: a slow answer

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Notice the client hanging up while the block runs (it reads the request stream, so
        no one else may meanwhile: not for actions that hand over to the emulator)."""

        async def watch() -> None:
            while not self.disconnected:
                await self.receive()

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                yield
            finally:
                group.cancel_scope.cancel()


class HostileApp(EmulatorApp):
    """The emulator's ASGI app with a switchboard in front: see the module docstring."""

    def __init__(self, state: EmulatorState) -> None:
        super().__init__(state, abort_on_cut=True)
        self.epoch = 0
        self.log: list[Logged] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def add_rule(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        """Forget the rules and the log, and end every request an action holds open."""
        with self._lock:
            self._rules.clear()
            self.log.clear()
            self.epoch += 1

    def _take(self, origin: Origin, method: str, path: str) -> Action | None:
        with self._lock:
            for rule in self._rules:
                action = rule.take(origin, method, path)
                if action is not None:
                    return action
        return None

    async def emulate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The emulator itself, without the switchboard."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        server = scope.get("server")
        port = server[1] if server else None
        origin: Origin = "files" if port is not None and port == self.files_port else "api"
        method = str(scope["method"]).upper()
        path = str(scope["path"])
        entry = Logged(
            origin=origin,
            method=method,
            path=path,
            query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            authorized=any(name.lower() == b"authorization" for name, _ in scope["headers"]),
            started=time.monotonic(),
        )
        self.log.append(entry)
        action = self._take(origin, method, path)
        try:
            if action is None:
                await super().__call__(scope, receive, send)
            else:
                entry.overridden = True
                await action(Exchange(self, scope, receive, send))
        finally:
            entry.ended = time.monotonic()


class HostileServer:
    """The hostile server on loopback (two ports, as the emulator: the API and the files).

    Args:
        config: The emulator's configuration.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.emulator = Emulator(config=config)
        self.app = HostileApp(self.emulator.state)
        self.emulator.app = self.app  # served instead of the plain emulator app

    @property
    def base_url(self) -> str:
        """The API origin."""
        return self.emulator.base_url

    @property
    def files_url(self) -> str:
        """The file origin (where result URLs point)."""
        return self.emulator.files_url

    @property
    def state(self) -> EmulatorState:
        """The emulator's state: its jobs, counters and clock."""
        return self.emulator.state

    @property
    def jobs(self) -> Mapping[str, Job]:
        """Every job the emulator created since the last reset, by id."""
        return self.emulator.state.jobs

    @property
    def log(self) -> list[Logged]:
        """Every request since the last reset, in arrival order."""
        return list(self.app.log)

    def on(
        self,
        method: str,
        path: str,
        *actions: Action,
        times: int | None = None,
        origin: Origin = "api",
        when: Callable[[str], bool] | None = None,
    ) -> None:
        """Answer matching requests with ``actions`` (see the module docstring).

        Args:
            method: The HTTP method.
            path: A path, with ``{name}`` for any one segment (``/api/ai/queue/{id}``).
            actions: What to do, one per request in order.
            times: How many requests the rule answers; default: forever for one action, one
                request per action for several.
            origin: ``"api"``, or ``"files"`` for the result-file origin.
            when: Also required of the request's path (read when the request arrives).
        """
        if not actions:
            raise ValueError("a rule needs at least one action")
        count = times if times is not None or len(actions) == 1 else len(actions)
        self.app.add_rule(_Rule(origin, method.upper(), _pattern(path), actions, count, when))

    def requests(
        self, method: str | None = None, path: str | None = None, *, origin: Origin | None = None
    ) -> list[Logged]:
        """The logged requests matching every given filter (``path`` as in :meth:`on`)."""
        pattern = None if path is None else _pattern(path)
        return [
            entry
            for entry in self.app.log
            if (method is None or entry.method == method.upper())
            and (pattern is None or pattern.fullmatch(entry.path))
            and (origin is None or entry.origin == origin)
        ]

    def count(self, method: str, path: str, *, origin: Origin | None = None) -> int:
        """How many requests matched (see :meth:`requests`)."""
        return len(self.requests(method, path, origin=origin))

    def active_jobs(self) -> list[Job]:
        """Jobs still ``queued`` or ``processing``."""
        with self.state.lock:
            return [job for job in self.state.jobs.values() if job.status in _ACTIVE]

    def add_jobs(self, api_key: str, count: int, *, model: str = "gpt-image-2") -> list[Job]:
        """Create ``count`` jobs for ``api_key``'s user directly (no request), prompts distinct."""
        user = self.state.user_for_key(api_key)
        spec = MODELS[model]
        jobs: list[Job] = []
        for i in range(count):
            jobs.extend(self.state.enqueue(user, spec, {"prompt": f"made elsewhere {i}"}))
        return jobs

    def reset(self) -> None:
        """Ready for the next test: no rules, an empty log, a fresh emulator, nothing held."""
        self.app.clear()
        self.emulator.reset()
        self.state.time_scale = self.emulator.config.time_scale

    def start(self) -> None:
        self.emulator.start()

    def stop(self) -> None:
        self.app.clear()
        self.emulator.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
