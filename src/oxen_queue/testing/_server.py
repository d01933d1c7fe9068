"""Running the emulator on real sockets: [`Emulator`][oxen_queue.testing.Emulator] (a background
thread) and [`run_server`][oxen_queue.testing.run_server] (blocking, for the command line).

A running emulator listens on two loopback ports: the API, and a second origin for result
files, as the real API's presigned URLs live on another host.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from ._app import EmulatorApp
from ._clock import Clock
from ._config import EmulatorConfig
from ._faults import Faults, install_cut_log_filter
from ._state import EmulatorState

if TYPE_CHECKING:
    from ._uvicorn import EmulatorServer

__all__ = ["Emulator", "run_server"]

logger = logging.getLogger("oxen_queue.testing")


class Emulator:
    """The Oxen API emulator on a real loopback server, in a background thread.

    The server runs uvicorn with its own asyncio loop in a dedicated thread, so it serves sync
    code, asyncio and trio tests alike:

    ```python
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        httpx.post(f"{emu.base_url}/api/ai/queue", ...)

    async with Emulator() as emu:  # start and stop without blocking the event loop
        ...
    ```

    Args:
        config: Timings and limits.
        faults: Fault switches (all off by default); also ``emu.faults`` once made.
        clock: Defaults to real time; a [`ManualClock`][oxen_queue.testing.ManualClock] for
            deterministic tests.
        host: The address to listen on.
        port: The API port; 0 picks a free one.
        files_port: The file origin's port; 0 picks a free one.
        startup_timeout: Seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        *,
        config: EmulatorConfig | None = None,
        faults: Faults | None = None,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        files_port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.state = EmulatorState(config=config, faults=faults, clock=clock)
        self.app = EmulatorApp(self.state, abort_on_cut=True)
        self._host = host
        self._port = port
        self._files_port = files_port
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._server: EmulatorServer | None = None
        self._sockets: list[socket.socket] = []
        self._error: BaseException | None = None
        self._base_url: str | None = None
        self._files_url: str | None = None

    @property
    def config(self) -> EmulatorConfig:
        """The configuration."""
        return self.state.config

    @property
    def faults(self) -> Faults:
        """The fault switches: set attributes at any time."""
        return self.state.faults

    @property
    def clock(self) -> Clock:
        """The clock."""
        return self.state.clock

    @property
    def base_url(self) -> str:
        """The API's origin, e.g. ``http://127.0.0.1:54321`` (once started)."""
        if self._base_url is None:
            raise RuntimeError("the emulator has not been started")
        return self._base_url

    @property
    def files_url(self) -> str:
        """The file origin, where result URLs point (once started)."""
        if self._files_url is None:
            raise RuntimeError("the emulator has not been started")
        return self._files_url

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """The counters as a plain dict (as ``GET /_emulator/stats`` answers)."""
        return self.state.snapshot()

    def reset(self) -> None:
        """Forget jobs, files and counters, and turn every fault off."""
        self.state.reset()
        self.faults.reset()
        self.app.media.clear()

    def start(self) -> None:
        """Start serving; returns once both ports accept connections.

        Raises:
            RuntimeError: Already running, or the server failed to start.
        """
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        from ._uvicorn import EmulatorServer, make_config

        install_cut_log_filter()
        api_socket = _listen(self._host, self._port)
        files_socket = _listen(self._host, self._files_port)
        self._sockets = [api_socket, files_socket]
        host = _url_host(self._host)
        self._base_url = f"http://{host}:{api_socket.getsockname()[1]}"
        self._files_url = f"http://{host}:{files_socket.getsockname()[1]}"
        self.state.files_origin = self._files_url
        self.app.files_port = files_socket.getsockname()[1]
        server = EmulatorServer(
            make_config(self.app, log_level=None, access_log=False, log_config=None), self.app
        )
        self._server = server
        self._error = None
        self._thread = threading.Thread(
            target=self._serve,
            args=(server, list(self._sockets)),
            name=f"oxen-emulator:{api_socket.getsockname()[1]}",
            daemon=True,
        )
        self._thread.start()
        if not server.ready.wait(self._startup_timeout) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError("the emulator failed to start") from error
        logger.debug("emulator serving at %s (files at %s)", self._base_url, self._files_url)

    def stop(self) -> None:
        """Stop serving and wait for the server thread (a no-op if not running)."""
        server, thread = self._server, self._thread
        if server is not None:
            server.request_stop()
        if thread is not None:
            thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        self._server = None
        self._thread = None

    def _serve(self, server: EmulatorServer, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(server.serve(sockets=sockets))
        except BaseException as exc:  # SystemExit from a failed startup, too
            self._error = exc
        finally:
            server.ready.set()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Emulator:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        where = self._base_url if self.running else "stopped"
        return f"<Emulator {where}>"


def run_server(
    host: str = "127.0.0.1",
    *,
    port: int = 8000,
    api_key: str | None = None,
    config: EmulatorConfig | None = None,
    files_port: int = 0,
    faults: Faults | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the emulator until interrupted (Ctrl-C stops it cleanly). Blocks.

    Logs the API and file URLs on start (never the key) through the ``oxen_queue.testing``
    logger, which this configures along with uvicorn's.

    Args:
        host: The address to listen on. Result URLs use it too (``127.0.0.1`` when it is a
            wildcard such as ``0.0.0.0``).
        port: The API port.
        api_key: If set, the only key accepted; otherwise any non-empty key is.
        config: Timings and limits (real-time defaults); ``api_key`` overrides its own.
        files_port: The file origin's port; 0 picks a free one.
        faults: Fault switches (all off by default; also settable over HTTP).
        log_level: uvicorn's log level.
        access_log: Log every request (paths only: keys are never logged).
    """
    from uvicorn.config import LOGGING_CONFIG

    from ._uvicorn import EmulatorServer, make_config

    config = config if config is not None else EmulatorConfig()
    if api_key is not None:
        config = config.replace(api_key=api_key)
    state = EmulatorState(config=config, faults=faults)
    app = EmulatorApp(state, abort_on_cut=True)
    api_socket = _listen(host, port)
    files_socket = _listen(host, files_port)
    sockets = [api_socket, files_socket]
    url_host = _url_host(host)
    base_url = f"http://{url_host}:{api_socket.getsockname()[1]}"
    state.files_origin = f"http://{url_host}:{files_socket.getsockname()[1]}"
    app.files_port = files_socket.getsockname()[1]
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["oxen_queue.testing"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    server = EmulatorServer(
        make_config(app, log_level=log_level, access_log=access_log, log_config=log_config), app
    )
    install_cut_log_filter()
    logger.info(
        "Oxen API emulator at %s (result files at %s); %s",
        base_url,
        state.files_origin,
        "only the configured API key is accepted"
        if config.api_key is not None
        else "any non-empty API key is accepted",
    )
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        # uvicorn re-raises the SIGINT it handled once it has shut down cleanly.
        pass
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0 as socket.create_server leaves it: asyncio sets TCP_NODELAY on
    # an accepted connection only if its proto says TCP, and without it Nagle's algorithm and
    # delayed ACKs hold each response's body back by 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would allow stealing a bound port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard is shown as loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
