"""``GET /api/events``: the user-scoped Server-Sent Events stream.

What the docs say and this does: the response starts at once (``text/event-stream``); only
events after the connection are sent ("Anything that fires before you connect is lost"); one
``media_generation_completed`` event per succeeded or failed generation of the user, none for
cancellations; ``: keep-alive`` every 15 seconds when idle; unrelated event types may appear.
The faults ``sse_drop_after`` and ``sse_garbage`` act here.
"""

from __future__ import annotations

import uuid
from typing import Final

import anyio

from ._events import SSEEvent, Subscriber
from ._http import Receive, Scope, Send
from ._jobs import User, dump_json
from ._state import EmulatorState

__all__ = ["stream_events"]

_KEEPALIVE: Final = b": keep-alive\n\n"
_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # Tell a buffering proxy (nginx) to pass events through as they come.
    (b"x-accel-buffering", b"no"),
]


async def stream_events(
    scope: Scope, receive: Receive, send: Send, *, state: EmulatorState, user: User
) -> None:
    """Serve one event stream until the client leaves, a fault drops it, or shutdown."""
    del scope
    subscriber = state.subscribe(user)
    try:
        # uvicorn writes the status line and headers as soon as it gets this message, so a
        # client knows it is subscribed when its response starts.
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            await _pump(send, state, subscriber)
            group.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        state.unsubscribe(subscriber)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _pump(send: Send, state: EmulatorState, subscriber: Subscriber) -> None:
    faults = state.faults
    keepalive = state.config.keepalive_interval
    opened = last_write = anyio.current_time()
    while True:
        subscriber.signal.clear()
        if state.closing:
            return
        for event in subscriber.drain():
            chunk = event.encode()
            if event.is_completion and faults.roll(faults.sse_garbage, kind="sse_garbage"):
                state.count_fault("sse_garbage")
                chunk = _garbage(event, faults.pick(4)) + chunk
            # Counted first: a client may act on the event before this task resumes.
            state.count_delivery(event)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            last_write = anyio.current_time()
        now = anyio.current_time()
        drop_after = faults.sse_drop_after
        if drop_after is not None and now - opened >= drop_after:
            state.count_fault("sse_drop")
            return
        if now - last_write >= keepalive:
            await send({"type": "http.response.body", "body": _KEEPALIVE, "more_body": True})
            last_write = now
        timeout = keepalive - (now - last_write)
        if drop_after is not None:
            timeout = min(timeout, opened + drop_after - now)
        with anyio.move_on_after(max(timeout, 0.0)):
            await subscriber.signal.wait()


def _garbage(event: SSEEvent, kind: int) -> bytes:
    """Something a robust client must survive, sent just before a real completion event."""
    if kind == 0:
        # The right event name, data that is not JSON.
        return b"event: media_generation_completed\ndata: {not json\n\n"
    if kind == 1:
        # A data-only event: its type defaults to "message".
        return b'data: {"hello": "world"}\n\n'
    if kind == 2:
        # Fields nobody documented, an event with no data (not dispatched), comments.
        return b": emulator says hi\nid: 42\nretry: 10000\nevent: ping\n\n"
    # A well-formed completion of someone else's generation (another process of the same
    # user, say), with fields the docs do not list.
    payload = dict(event.payload or {})
    payload["generation_id"] = str(uuid.uuid4())
    payload["x_unknown_field"] = {"nested": [1, 2, 3]}
    return SSEEvent("media_generation_completed", dump_json(payload).decode()).encode()
