"""A wake-up flag that any thread may raise and one task waits on.

The emulator's state can be driven from the server's event loop (HTTP requests, the
scheduler) and from a test's own thread (``ManualClock.advance``, ``state.advance()``). A task
waiting for "something happened" (an SSE stream, the scheduler) must be woken from either.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import anyio

__all__ = ["Signal"]


class Signal:
    """A flag set from any thread, awaited by tasks of the event loop that created it.

    Create it inside the loop (it captures the loop's thread and a thread-safe way to post
    work to it). Setting it from another thread never blocks.
    """

    __slots__ = ("_event", "_post", "_thread")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._thread = threading.get_ident()
        self._post = _threadsafe_poster()

    def set(self) -> None:
        """Raise the flag, waking the waiting task."""
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        # If the loop has finished (trio's RunFinishedError is a RuntimeError too), nobody is
        # left to wake.
        with contextlib.suppress(RuntimeError):
            self._post(self._event.set)

    def clear(self) -> None:
        """Lower the flag. Call from the loop's thread, before checking for work."""
        if self._event.is_set():
            self._event = anyio.Event()

    def is_set(self) -> bool:
        """Whether the flag is raised."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Wait until the flag is raised."""
        await self._event.wait()


def _threadsafe_poster() -> Callable[[Callable[[], object]], object]:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # Not under asyncio, so under trio (anyio supports only these two).
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    return loop.call_soon_threadsafe
