"""What a hostile server can do instead of answering properly (see :mod:`.server`).

* :func:`reply`: these bytes (or a streamed body), this status and these headers.
* :func:`mangle`: the emulator acts (an enqueue creates its job), then its body is replaced.
* :func:`cut`: the emulator acts, then half its body is sent and the connection aborted.
* :func:`delayed`: the emulator acts, its answer is held back for a while.
* :func:`hang`: no headers, ever (until the client leaves or the test ends).
* :func:`trickle`: a body at N bytes per second (the emulator's, or given).
* :func:`redirect`: a ``Location``, to anywhere.
* :func:`sse`: an event stream scripted step by step, then silence, keep-alives, the end, or
  the emulator's own live events (subscribed from the start, so none are lost meanwhile).
* :func:`oldest_first_history`: ``GET /api/ai/generations`` listed oldest first.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import anyio
import anyio.lowlevel

from oxen_queue.testing._faults import DeliberateCut
from oxen_queue.testing._http import Message

from .bodies import StreamedBody
from .server import Action, Captured, Exchange

__all__ = [
    "cut",
    "delayed",
    "hang",
    "keepalives",
    "mangle",
    "oldest_first_history",
    "redirect",
    "reply",
    "sse",
    "trickle",
]

Body = bytes | StreamedBody
Then = Literal["emulator", "silent", "close"]

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]


def _content_type(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", value.encode("latin-1"))]


async def _send_body(ex: Exchange, body: Body) -> None:
    if isinstance(body, bytes):
        await ex.body(body, more=False)
        return
    for chunk in body():
        if ex.over():
            return
        await ex.body(chunk)
    await ex.body(b"", more=False)


def reply(
    status: int = 200,
    body: Body = b"",
    *,
    content_type: str = "application/json",
    headers: Iterable[tuple[str, str]] = (),
) -> Action:
    """Answer ``body`` (bytes, with a ``Content-Length``; or streamed, chunked) and ``status``."""
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def action(ex: Exchange) -> None:
        length = len(body) if isinstance(body, bytes) else None
        await ex.start(status, _content_type(content_type) + extra, length)
        await _send_body(ex, body)

    return action


def mangle(body: Body, *, status: int | None = None) -> Action:
    """Let the emulator act (an enqueue creates its job), then answer ``body`` instead of its."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        length = len(body) if isinstance(body, bytes) else None
        await ex.start(status or captured.status, _content_type("application/json"), length)
        await _send_body(ex, body)

    return action


def cut(fraction: float = 0.5) -> Action:
    """Let the emulator act, then send part of its body and abort the connection."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        await ex.start(captured.status, captured.headers, len(captured.body))
        await ex.body(captured.body[: int(len(captured.body) * fraction)])
        raise DeliberateCut

    return action


def delayed(seconds: float) -> Action:
    """Let the emulator act at once (an enqueue creates its job), answer ``seconds`` later."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        async with ex.watching():
            await ex.hold(seconds)
        if not ex.over():
            await ex.start(captured.status, captured.headers, len(captured.body))
            await ex.body(captured.body, more=False)

    return action


def hang(*, emulator_first: bool = False) -> Action:
    """Never send headers (until the client leaves or the test ends).

    Args:
        emulator_first: Let the emulator act first (an enqueue creates its job).
    """

    async def action(ex: Exchange) -> None:
        if emulator_first:
            await ex.emulator()
        async with ex.watching():
            await ex.hold()

    return action


def trickle(
    rate: float,
    *,
    body: bytes | None = None,
    step: int = 1,
    for_at_most: float = math.inf,
    then: Literal["flush", "cut"] = "flush",
) -> Action:
    """Send a body at ``rate`` bytes per second, ``step`` bytes at a time.

    Args:
        rate: Bytes per second.
        body: The body; default: the emulator's own answer (it acts first).
        step: Bytes per write.
        for_at_most: Seconds of trickling; then the rest is flushed at once, or the connection
            cut (so a test of a client that never gives up still ends).
        then: ``"flush"`` or ``"cut"``, after ``for_at_most``.
    """

    async def action(ex: Exchange) -> None:
        if body is None:
            captured = await ex.emulator()
        else:
            captured = Captured(200, _content_type("application/octet-stream"), body)
        data = captured.body
        async with ex.watching():
            await ex.start(captured.status, captured.headers, len(data))
            stop = anyio.current_time() + for_at_most
            sent = 0
            while sent < len(data) and not ex.over() and anyio.current_time() < stop:
                await ex.body(data[sent : sent + step])
                sent += step
                if sent < len(data):  # no pause after the last byte: the answer is complete
                    await ex.hold(step / rate)
            if ex.over():
                return
            if sent >= len(data):
                await ex.body(b"", more=False)  # complete the response: keep-alive goes on
                return
            if then == "cut":
                raise DeliberateCut
            await ex.body(data[sent:], more=False)

    return action


def redirect(location: str | Callable[[Exchange], str], status: int = 302) -> Action:
    """Redirect to ``location`` (anything: another scheme, the same URL, the API origin)."""

    async def action(ex: Exchange) -> None:
        target = location(ex) if callable(location) else location
        await ex.start(status, [(b"location", target.encode("latin-1"))], 0)
        await ex.body(b"", more=False)

    return action


@dataclass(frozen=True, slots=True)
class keepalives:
    """After the script: a ``: keep-alive`` comment every ``interval`` seconds, nothing else."""

    interval: float


Step = bytes | float | StreamedBody


def sse(*steps: Step, then: Then | keepalives = "emulator") -> Action:
    """An event stream: headers at once, then ``steps`` in order, then ``then``.

    Args:
        steps: Bytes to send as they are, seconds to wait, or a streamed body to send chunk by
            chunk (one huge line, say).
        then: ``"emulator"``: the emulator's live events for this user (subscribed before the
            script runs, so events that fire meanwhile are sent after it); ``"silent"``:
            nothing more, the stream held open; ``"close"``: the end of the stream; or
            :class:`keepalives`.
    """

    async def script(ex: Exchange) -> None:
        for item in steps:
            if ex.over():
                return
            if isinstance(item, bytes):
                await ex.body(item)
            elif isinstance(item, float | int):
                await ex.hold(float(item))
            else:
                for chunk in item():
                    if ex.over():
                        return
                    await ex.body(chunk)

    async def action(ex: Exchange) -> None:
        if then == "emulator":
            await _sse_then_emulator(ex, script)
            return
        async with ex.watching():
            await ex.start(200, _SSE_HEADERS)
            await script(ex)
            if isinstance(then, keepalives):
                while not ex.over():
                    await ex.hold(then.interval)
                    if not ex.over():
                        await ex.body(b": keep-alive\n\n")
            elif then == "silent":
                await ex.hold()
            if not ex.over():
                await ex.body(b"", more=False)

    return action


async def _sse_then_emulator(ex: Exchange, script: Callable[[Exchange], Awaitable[None]]) -> None:
    # The emulator's stream subscribes as soon as it runs: run it now, keep what it writes
    # while the script plays, then pass everything on. It alone reads the request stream.
    send_chunks, receive_chunks = anyio.create_memory_object_stream[Message](math.inf)

    async def emulator() -> None:
        async def capture(message: Message) -> None:
            if message["type"] == "http.response.body":
                await send_chunks.send(message)

        with send_chunks:
            await ex.app.emulate(ex.scope, ex.receive, capture)

    async with anyio.create_task_group() as group:
        group.start_soon(emulator)
        # Let it subscribe before the client can see the stream open.
        await anyio.lowlevel.checkpoint()
        await ex.start(200, _SSE_HEADERS)
        await script(ex)
        with receive_chunks:
            async for message in receive_chunks:
                await ex.send(message)
                if ex.app.epoch != ex.epoch:
                    break
        group.cancel_scope.cancel()


def oldest_first_history() -> Action:
    """``GET /api/ai/generations`` as the emulator answers it, but listed oldest first."""

    async def action(ex: Exchange) -> None:
        state = ex.app.state
        key = ex.headers.get("authorization", "").partition(" ")[2].strip()
        user = state.user_for_key(key)
        page = int(ex.query.get("page") or 1)
        size = int(ex.query.get("page_size") or 50)
        jobs = state.find(user, model=ex.query.get("model") or None)
        window = jobs[(page - 1) * size : page * size]
        rows = state.encode(window, history=True)
        pages = (len(jobs) + size - 1) // size
        body = b'{"generations":[%s],"count":%d,"page_number":%d,"page_size":%d,' % (
            rows,
            len(window),
            page,
            size,
        )
        body += b'"total_pages":%d,"total_entries":%d,"total_cost":null}' % (pages, len(jobs))
        await ex.start(200, _content_type("application/json"), len(body))
        await ex.body(body, more=False)

    return action
