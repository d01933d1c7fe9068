"""Where a client used without ``async with`` keeps its background work: a task of the loop's own.

A client entered with ``async with`` hosts its background work (the watcher, the enqueue
workers, the deadlines) in a task group of the block: structured, nothing outlives it. A client
that is simply used (``client = AsyncClient()``, then ``await client.generate(...)``, as httpx
and openai clients are) has no block to live in, so its first call starts a task the event loop
owns, with the public API of each library:

- asyncio: a task of the running loop (``loop.create_task``), with a context of its own;
  ``asyncio.run()`` cancels it, with every other task, when its main coroutine returns;
- trio: a system task (``trio.lowlevel.spawn_system_task``), which ``trio.run()`` cancels when
  its main task returns.

Either way no caller's cancellation reaches it (it is no caller's child), ``aclose()`` ends it,
and the end of the event loop ends it too, so a client never closed neither hangs the
interpreter nor leaves its connections open. The task is given an empty context: it must not
carry the first caller's context variables (a web request's, a tracing span) into every later
request of the client.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from ._transport import current_async_library

__all__ = ["spawn_detached"]


def spawn_detached(async_fn: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> object:
    """Start ``async_fn()`` in a task the running event loop owns (see the module docstring).

    ``async_fn`` must let no exception escape but the loop's own cancellation: asyncio would
    log it when the task is collected, and trio would end the whole run with
    ``TrioInternalError``.

    Args:
        async_fn: The task.
        name: The task's name, as debuggers and ``asyncio.all_tasks()`` show it.

    Returns:
        A handle to keep while the task runs (asyncio holds its tasks only weakly).

    Raises:
        RuntimeError: No asyncio or trio event loop is running in this thread.
    """
    library = current_async_library()
    if library == "asyncio":
        import asyncio  # already imported: the loop runs

        loop = asyncio.get_running_loop()
        return loop.create_task(async_fn(), name=name, context=contextvars.Context())
    if library == "trio":
        import trio  # already imported: the run is going

        # A system task starts in a copy of trio.run()'s context, not the caller's.
        trio.lowlevel.spawn_system_task(async_fn, name=name)
        return None
    raise RuntimeError(
        f"an AsyncClient runs on asyncio or trio, not {library or 'outside an event loop'}"
    )
