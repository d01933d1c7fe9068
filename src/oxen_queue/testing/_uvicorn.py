"""uvicorn, adapted: readiness, a prompt stop from another thread, streams closed first.

Imported only when a server starts, so that importing the emulator (or loading the pytest
plugin) does not import uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

import uvicorn

from ._app import EmulatorApp

__all__ = ["EmulatorServer", "make_config"]


def make_config(
    app: EmulatorApp, *, log_level: str | None, access_log: bool, log_config: dict[str, Any] | None
) -> uvicorn.Config:
    """A uvicorn configuration for the emulator (asyncio, h11, lifespan on, no websockets)."""
    return uvicorn.Config(
        app,
        lifespan="on",
        loop="asyncio",
        http="h11",
        ws="none",
        interface="asgi3",
        log_config=log_config,
        log_level=log_level,
        access_log=access_log,
        # The app writes its own Date header, on its own (possibly skewed) clock.
        date_header=False,
        # Event streams are closed before this counts; other slow answers are cut short.
        timeout_graceful_shutdown=2,
    )


class EmulatorServer(uvicorn.Server):
    """A uvicorn server that says when it is ready and stops at once when asked."""

    def __init__(self, config: uvicorn.Config, app: EmulatorApp) -> None:
        super().__init__(config)
        self.app = app
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, then signal readiness (the sockets accept connections)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        """uvicorn's loop, but woken at once by `request_stop` instead of polling."""
        assert self._wake is not None
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown, without its fixed pauses: event streams end first,
        then the connections are asked to close, and the server waits for them (checking
        every few milliseconds, not every 0.1 s) for at most ``timeout_graceful_shutdown``.

        A test suite stops an emulator hundreds of times: uvicorn's own shutdown sleeps
        0.1 s whatever is open, which made each stop take a tenth of a second.
        """
        self.app.state.close_streams()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0)
        state = self.server_state
        # Polling: uvicorn announces neither a connection's end nor a task's.
        # A second Ctrl-C (force_exit) stops the wait, as in uvicorn.
        while (state.connections or state.tasks) and not self.force_exit:
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.005)
        for task in list(state.tasks):
            task.cancel(msg="the emulator stopped")
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()

    def request_stop(self) -> None:
        """Ask the server to stop; callable from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(wake.set)
