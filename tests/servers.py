"""An ASGI app on a real loopback uvicorn server, in a background thread.

For what ``httpx.ASGITransport`` cannot do: run lifespans, stream responses live, and let a
client hang up mid-request. The server has its own asyncio loop in its own thread, so sync,
asyncio and trio tests can all talk to it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ServerThread"]


class _Server(uvicorn.Server):
    """A uvicorn server that says when its startup is over (successful or not)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_done.set()


class ServerThread:
    """Serve ``app`` on ``127.0.0.1`` (a free port) for the duration of a ``with`` block.

    The lifespan runs at startup, in the server's thread: anything it reads from the
    environment must be set before entering the block. Exiting stops the server and waits
    for it: open requests get ``graceful_shutdown`` seconds, then the lifespan's shutdown runs.

    Args:
        app: The ASGI app, or its import string (``"package.module:app"``).
        startup_timeout: Seconds to wait for the server to listen.
        graceful_shutdown: Seconds open requests may take to finish on exit.
    """

    def __init__(
        self, app: ASGIApp | str, *, startup_timeout: float = 10.0, graceful_shutdown: int = 5
    ) -> None:
        # uvicorn binds the port itself (port 0: a free one), so the listening socket says
        # proto=IPPROTO_TCP and asyncio sets TCP_NODELAY on every connection it accepts; a
        # socket from socket.create_server (proto 0) would not, and Nagle's algorithm with
        # delayed ACKs would hold each response back by ~40 ms.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=graceful_shutdown,
        )
        self._server = _Server(config)
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.base_url = ""

    def _serve(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # SystemExit from a failed bind, too
            self._error = exc
        finally:
            self._server.startup_done.set()

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._serve, name="test-app-server", daemon=True)
        self._thread.start()
        done = self._server.startup_done.wait(self._startup_timeout)
        if not done or not self._server.started:
            self._stop()
            raise RuntimeError("the app server failed to start") from self._error
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
        if self._error is not None:
            raise RuntimeError("the app server crashed") from self._error

    def _stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
