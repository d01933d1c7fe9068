"""Web handlers whose caller hangs up: cancel the work, so nobody pays for a result nobody sees.

Starlette (and so FastAPI) does not cancel a request handler whose HTTP client has gone: it
notices only when it next reads the request or writes the response. A handler waiting 5-30 s
for ``client.generate()`` would wait on, and the job would be billed, after the browser tab was
closed. [`cancel_on_disconnect`][oxen_queue.asgi.cancel_on_disconnect] awaits the work and watches
the request meanwhile; on a disconnect it cancels the work (``generate()`` then cancels its job
upstream) and raises [`ClientDisconnectedError`][oxen_queue.asgi.ClientDisconnectedError]:

```python
from fastapi import FastAPI, Request, Response
from oxen_queue.asgi import ClientDisconnectedError, cancel_on_disconnect


@app.post("/images")
async def create_image(prompt: str, request: Request) -> dict[str, str | None]:
    work = client.generate("gpt-image-2", prompt=prompt)
    record = await cancel_on_disconnect(request, work)
    return {"result_url": record.result_url}


@app.exception_handler(ClientDisconnectedError)
async def client_disconnected(request: Request, exc: ClientDisconnectedError) -> Response:
    return Response(status_code=499)  # nobody reads it; it ends the request quietly
```

It works with any object that has an async ``is_disconnected()`` (Starlette's ``Request``, and
so FastAPI's), on asyncio and trio. Starlette is not a dependency of this package.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Protocol, TypeVar

import anyio

from ._durations import seconds
from ._exceptions import OxenError

__all__ = ["ClientDisconnectedError", "DisconnectAware", "cancel_on_disconnect"]

_T = TypeVar("_T")


class DisconnectAware(Protocol):
    """A request that can tell whether its HTTP client has gone: Starlette's ``Request``."""

    async def is_disconnected(self) -> bool:
        """Whether the client has disconnected (without waiting for it to)."""
        ...


class ClientDisconnectedError(OxenError):
    """The HTTP client of a web request hung up, and the work done for it was cancelled.

    Nobody will read the response: map it to a quiet one (499, nginx's "client closed
    request") rather than let it be logged as a server error.
    """


async def cancel_on_disconnect(
    request: DisconnectAware, work: Awaitable[_T], *, poll_interval: float = 0.2
) -> _T:
    """Await ``work``, but cancel it if the HTTP client hangs up first.

    The work runs in the caller's task, next to a watcher in a task group of its own, so a
    disconnect cancels it as any anyio cancellation would; cancelled, ``client.generate()``
    cancels its job upstream. Whatever ends the work reaches the caller as itself, never
    wrapped in an ``ExceptionGroup``: its result, its own exception, or
    [`ClientDisconnectedError`][oxen_queue.asgi.ClientDisconnectedError] when the cancellation
    stopped it.

    Args:
        request: The request (Starlette's or FastAPI's ``Request``, or any object with an
            async ``is_disconnected()``).
        work: What to await, e.g. ``client.generate(...)``. Not started at all when the
            client has already gone.
        poll_interval: Seconds between two checks of the connection. (Polled: Starlette has
            no event to wait on, and reading the request's ASGI ``receive`` here would race
            whatever else reads it.)

    Returns:
        The work's result.

    Raises:
        ClientDisconnectedError: The client hung up; the work was cancelled (or not begun).
        InvalidParamsError: ``poll_interval`` is not a finite number of seconds above zero.
        Exception: Whatever ``work`` or ``request.is_disconnected()`` raised, as it is.
    """
    try:
        seconds(poll_interval, field="poll_interval")
        gone = await request.is_disconnected()
    except BaseException:
        _discard(work)
        raise
    if gone:
        _discard(work)
        raise ClientDisconnectedError("the HTTP client hung up before the work began")
    watch_errors: list[Exception] = []
    finished = False
    error: Exception | None = None
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(
            _cancel_when_disconnected,
            request,
            task_group.cancel_scope,
            poll_interval,
            watch_errors,
        )
        try:
            result = await work
        except Exception as exc:
            # Raised in here it would leave the task group wrapped in an ExceptionGroup, which
            # no `except` clause or exception handler of the caller's matches: raised below.
            error = exc
        finished = True
        task_group.cancel_scope.cancel()  # done: stop watching
    if finished:
        if error is not None:
            raise error
        return result
    if watch_errors:
        raise watch_errors[0]
    raise ClientDisconnectedError("the HTTP client hung up; the work was cancelled")


async def _cancel_when_disconnected(
    request: DisconnectAware,
    scope: anyio.CancelScope,
    poll_interval: float,
    errors: list[Exception],
) -> None:
    try:
        while True:
            await anyio.sleep(poll_interval)
            if await request.is_disconnected():
                break
    except Exception as exc:
        # A request that cannot tell (not a Starlette request?) is a bug to see at once.
        errors.append(exc)
    scope.cancel()


def _discard(work: Awaitable[object]) -> None:
    """Close a coroutine that will never run (else Python warns it was never awaited)."""
    if inspect.iscoroutine(work):
        work.close()
