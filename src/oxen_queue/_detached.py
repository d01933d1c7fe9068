"""Where a client used without ``async with`` keeps its background work."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from ._transport import current_async_library


def spawn_detached(async_fn: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> object:
    """Start ``async_fn()`` in a task the running event loop owns (asyncio: a task of the
    loop; trio: a system task), which no caller's cancellation reaches and the end of the event
    loop cancels. It starts in an empty context: no caller's context variables (a request's, a
    tracing span) are carried into the client's later requests.

    ``async_fn`` must let no exception but the loop's cancellation escape: asyncio would log it,
    and trio would end the run with ``TrioInternalError``. Returns a handle to keep while the
    task runs (asyncio holds its tasks only weakly); ``RuntimeError`` outside asyncio and trio.
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
