"""Web handlers whose caller hangs up: cancel the work, so nobody pays for a result nobody sees.

Starlette (and so FastAPI) notices a disconnected client only when the handler next reads the
request or writes the response, so a handler awaiting ``client.generate()`` would wait on, and
the job be billed, after the browser tab closed. Instead (mapping
[`ClientDisconnectedError`][oxen_queue.asgi.ClientDisconnectedError] to a quiet 499):

```python
record = await cancel_on_disconnect(request, client.generate("gpt-image-2", prompt=prompt))
```
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


class ClientDisconnectedError(OxenError):
    """The HTTP client of a web request hung up, and the work done for it was cancelled: map
    it to a quiet response (499, nginx's "client closed request"), not a logged server error."""


async def cancel_on_disconnect(
    request: DisconnectAware, work: Awaitable[_T], *, poll_interval: float = 0.2
) -> _T:
    """Await ``work``, but cancel it if the HTTP client hangs up first (on asyncio or trio).

    The work runs in the caller's task (a cancelled ``client.generate()`` cancels its job
    upstream); what ends it reaches the caller as itself, never in an ``ExceptionGroup``.

    Args:
        request: Starlette's ``Request``, or any object with an async ``is_disconnected()``.
        work: What to await, e.g. ``client.generate(...)``; never started if the client has
            already gone.
        poll_interval: Seconds between two checks of the connection (Starlette has no event
            to wait on, and reading the ASGI ``receive`` here would race the app's reads).

    Returns:
        The work's result.

    Raises:
        ClientDisconnectedError: The client hung up; the work was cancelled (or not begun).
        InvalidParamsError: ``poll_interval`` is not a finite number of seconds above zero.
        Exception: Whatever ``work`` or ``request.is_disconnected()`` raised, as it is.
    """
    try:
        seconds(poll_interval, field="poll_interval")
        if await request.is_disconnected():
            raise ClientDisconnectedError("the HTTP client hung up before the work began")
    except BaseException:
        if inspect.iscoroutine(work):  # else Python warns it was never awaited
            work.close()
        raise
    result: list[_T] = []
    error: Exception | None = None
    watch_error: Exception | None = None

    async def watch() -> None:
        nonlocal watch_error
        try:
            while True:
                await anyio.sleep(poll_interval)
                if await request.is_disconnected():
                    break
        except Exception as exc:  # a request that cannot tell is a bug to see at once
            watch_error = exc
        task_group.cancel_scope.cancel()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(watch)
        try:
            result.append(await work)
        except Exception as exc:  # raised in here, it would reach the caller in an ExceptionGroup
            error = exc
        task_group.cancel_scope.cancel()  # done: stop watching
    if error is not None:
        raise error
    if result:
        return result[0]
    if watch_error is not None:
        raise watch_error
    raise ClientDisconnectedError("the HTTP client hung up; the work was cancelled")
