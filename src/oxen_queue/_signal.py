"""A one-shot signal, set once and awaited by any number of tasks, small while it waits.

On asyncio a waiter costs one future (``anyio.Event`` wraps an ``asyncio.Event``, whose deque
alone is 624 bytes); on other async libraries it falls back to ``anyio.Event``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._transport import current_async_library

if TYPE_CHECKING:
    import asyncio


class Signal:
    """Set once; `wait` returns once it is set (at once if it already is)."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] | anyio.Event | None = None

    def set(self) -> None:
        """Wake every waiter; later waits return at once."""
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        if isinstance(waiters, list):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        elif waiters is not None:
            waiters.set()

    def wait(self) -> Awaitable[None]:
        """Wait until the signal is set. Cancellation takes this waiter away, and no other.

        On asyncio the awaitable is the waiter's future itself: no coroutine frame around it.
        """
        if self._is_set:
            return anyio.lowlevel.checkpoint()
        waiters = self._waiters
        if waiters is None and current_async_library() != "asyncio":
            waiters = self._waiters = anyio.Event()
        if isinstance(waiters, anyio.Event):
            return waiters.wait()
        import asyncio  # not at the top: a program on trio would load it for nothing

        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if waiters is None:
            self._waiters = [waiter]
        else:
            # A cancelled waiter's future is cancelled with it: drop those here.
            waiters[:] = [w for w in waiters if not w.cancelled()]
            waiters.append(waiter)
        return waiter
