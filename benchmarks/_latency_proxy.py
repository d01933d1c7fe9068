"""A TCP proxy on loopback that makes a server look far away: every byte is late by RTT/2.

This machine's kernel has no ``netem``, so distance is emulated in user space, at the byte
level, which keeps HTTP/1.1 keep-alive and HTTP/2 multiplexing exactly as the client made them.

* Each direction of each connection is a timed queue: a chunk read at ``t`` is written at
  ``t + rtt / 2``, in order. Nothing waits for anything but its own due time, so the proxy
  adds no queueing of its own (no head-of-line blocking between connections, no batching
  beyond chunks that fall due together).
* A new connection pays for its handshakes: the client's first bytes reach the server no
  earlier than ``accept + handshake_rtts * rtt + rtt / 2``. ``handshake_rtts`` is 1 for TCP
  alone, 2 for TCP plus TLS 1.3 (the real hub is HTTPS), 3 for TLS 1.2.
* Back-pressure is passed through: a side that cannot keep up pauses reading from the other.

It runs in its own process (``python benchmarks/_latency_proxy.py --upstream PORT --rtt 0.08``
prints ``PORT`` once listening), with uvloop when it is installed. ``--selftest`` measures the
proxy alone against a trivial HTTP server and a trivial keep-alive client, each in a process of
its own, so benchmark figures can be shown not to be proxy-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Final, cast

__all__ = ["ProxyFigure", "measure_proxy", "process_cpu_seconds", "start_proxy"]

_HIGH_WATER: Final = 256 * 1024  # bytes buffered towards a slow side before reading pauses


def _nodelay(transport: asyncio.BaseTransport) -> None:
    # Nagle's algorithm with delayed ACKs would hold small writes back by up to 40 ms and
    # add latency of its own on top of the emulated one.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Pipe:
    """One direction of one connection: chunks go out ``delay`` seconds after they came in.

    Due times only grow (a constant delay, and a floor that only matters at the start), so a
    FIFO queue with a single timer on its head keeps the order and needs one timer at a time.
    """

    __slots__ = ("_loop", "_queue", "_timer", "delay", "dest", "not_before", "source")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, not_before: float) -> None:
        self._loop = loop
        self._queue: deque[tuple[float, bytes | None]] = deque()  # None: end of stream
        self._timer: asyncio.TimerHandle | None = None
        self.delay = delay
        self.not_before = not_before
        self.dest: asyncio.Transport | None = None  # None until the upstream is connected
        self.source: asyncio.Transport | None = None

    def feed(self, data: bytes | None) -> None:
        due = max(self._loop.time() + self.delay, self.not_before)
        self._queue.append((due, data))
        if self._timer is None and len(self._queue) == 1:
            self._schedule()

    def attach(self, dest: asyncio.Transport) -> None:
        self.dest = dest
        if self._queue and self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        if self.dest is None:
            return  # attach() schedules once there is somewhere to write
        due = self._queue[0][0]
        if due <= self._loop.time():
            self._timer = None
            self._flush()
        else:
            self._timer = self._loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        dest = self.dest
        if dest is None:
            return
        now = self._loop.time()
        ready: list[bytes] = []
        ended = False
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            if data is None:
                ended = True
                break
            ready.append(data)
        if ready and not dest.is_closing():
            dest.write(b"".join(ready) if len(ready) > 1 else ready[0])
        if ended:
            # Closed after what came before it (close() flushes the buffer): HTTP needs no
            # half-close, and an aborted side still ends the other one, RTT/2 later.
            queue.clear()
            dest.close()
            return
        if queue:
            self._timer = self._loop.call_at(queue[0][0], self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it reads goes into ``outgoing``."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self.outgoing = outgoing  # what this side reads, towards the other side
        self.incoming = incoming  # what the other side sent, towards this side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        _nodelay(transport)
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.outgoing.source = transport
        self.incoming.attach(transport)

    def data_received(self, data: bytes) -> None:
        self.outgoing.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # EOF too ends up here (eof_received returns None, so the transport closes).
        self.outgoing.feed(None)
        self.incoming.close()  # nowhere left to write what was on its way here

    def pause_writing(self) -> None:
        # Back-pressure: stop reading what we cannot write.
        source = self.incoming.source
        if source is not None:
            source.pause_reading()

    def resume_writing(self) -> None:
        source = self.incoming.source
        if source is not None and not source.is_closing():
            source.resume_reading()


class LatencyProxy:
    """Accepts connections on ``listen`` and relays each to ``upstream`` with added latency.

    Args:
        upstream: ``(host, port)`` of the real server.
        rtt: The round trip to add, in seconds (half on each direction).
        handshake_rtts: Round trips a new connection costs before its first byte flows.
    """

    def __init__(self, upstream: tuple[str, int], *, rtt: float, handshake_rtts: int) -> None:
        self.upstream = upstream
        self.rtt = rtt
        self.handshake_rtts = handshake_rtts
        self.connections = 0

    def accept(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        now = loop.time()
        half = self.rtt / 2
        self.connections += 1
        up = _Pipe(loop, half, now + self.handshake_rtts * self.rtt + half)
        down = _Pipe(loop, half, 0.0)
        client = _Side(outgoing=up, incoming=down)
        server = _Side(outgoing=down, incoming=up)
        task = loop.create_task(self._connect(loop, server, client))
        task.add_done_callback(_ignore)
        return client

    async def _connect(self, loop: asyncio.AbstractEventLoop, server: _Side, client: _Side) -> None:
        try:
            await loop.create_connection(lambda: server, *self.upstream)
        except OSError:
            if client.incoming.dest is not None:
                client.incoming.dest.abort()


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: the proxy must keep up with thousands of chunks per second."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(coro_factory: object) -> None:
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(coro_factory)  # type: ignore[arg-type]
    finally:
        loop.close()


async def _serve_proxy(port: int, upstream: tuple[str, int], rtt: float, handshakes: int) -> None:
    proxy = LatencyProxy(upstream, rtt=rtt, handshake_rtts=handshakes)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(proxy.accept, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def start_proxy(
    upstream_port: int, *, rtt: float, handshake_rtts: int = 2
) -> tuple[subprocess.Popen[str], int]:
    """Start a proxy process in front of ``127.0.0.1:upstream_port``; returns it and its port."""
    command = [
        sys.executable,
        __file__,
        "--upstream",
        str(upstream_port),
        "--rtt",
        str(rtt),
        "--handshake-rtts",
        str(handshake_rtts),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip():
        process.kill()
        raise RuntimeError("the latency proxy did not start")
    return process, int(line)


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by a process (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields 14 and 15 of stat(5), counted after the command name's closing parenthesis.
    return (int(fields[11]) + int(fields[12])) / ticks


# -- the proxy alone: a trivial server and a trivial client --------------------------------

_REQUEST: Final = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_BODY: Final = b'{"ok":true}'
_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _TrivialServer(asyncio.Protocol):
    """Answers every request with the same small response (requests have no body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        count = self.pending.count(b"\r\n\r\n")
        if count and self.transport is not None:
            self.pending = self.pending[self.pending.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(_RESPONSE * count)


async def _serve_trivial() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_TrivialServer, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


class _TrivialClient(asyncio.Protocol):
    """One keep-alive connection sending a request as soon as the previous answer is in."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.running = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        _nodelay(transport)
        self.transport.write(_REQUEST)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        while self.received >= len(_RESPONSE):
            self.received -= len(_RESPONSE)
            self.counter[0] += 1
            if self.running and self.transport is not None:
                self.transport.write(_REQUEST)


async def _load(port: int, connections: int, seconds: float, warmup: float) -> None:
    loop = asyncio.get_running_loop()
    counter = [0]
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _TrivialClient(counter), "127.0.0.1", port)
        clients.append(client)
    await asyncio.sleep(warmup)  # handshakes done, every connection in its steady cycle
    start_count, start, cpu = counter[0], time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    done, elapsed = counter[0] - start_count, time.monotonic() - start
    cpu = time.process_time() - cpu
    for client in clients:
        client.running = False
        if client.transport is not None:
            client.transport.close()
    print(f"{done / elapsed:.1f} {cpu / elapsed:.3f}", flush=True)


@dataclass(frozen=True)
class ProxyFigure:
    """Requests per second one proxy passed, and the share of a core it used for them."""

    rtt: float
    connections: int
    requests_per_second: float
    ceiling: float  # connections / rtt: what a perfect proxy would pass (inf at rtt 0)
    proxy_cpu: float  # CPU seconds per second
    client_cpu: float

    def line(self) -> str:
        ceiling = "CPU-bound" if self.rtt == 0 else f"ideal {self.ceiling:,.0f}/s"
        return (
            f"| {self.rtt * 1000:.0f} ms | {self.connections} | {self.requests_per_second:,.0f}/s "
            f"| {ceiling} | {self.proxy_cpu:.0%} | {self.client_cpu:.0%} |"
        )


def measure_proxy(
    rtts: list[float], connections: list[int], *, seconds: float = 2.0
) -> list[ProxyFigure]:
    """The proxy alone: a trivial server behind it and a trivial keep-alive client in front."""
    me = [sys.executable, __file__]
    server = subprocess.Popen([*me, "--trivial-server"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    figures = []
    try:
        server_port = int(server.stdout.readline())
        for rtt in rtts:
            for count in connections:
                proxy, port = start_proxy(server_port, rtt=rtt, handshake_rtts=1)
                try:
                    cpu = process_cpu_seconds(proxy.pid)
                    warmup = 0.3 + 3 * rtt
                    load = [*me, "--load", str(port), str(count), str(seconds), str(warmup)]
                    started = time.monotonic()
                    output = subprocess.run(load, capture_output=True, text=True, check=True)
                    elapsed = time.monotonic() - started
                    cpu = process_cpu_seconds(proxy.pid) - cpu
                finally:
                    proxy.terminate()
                    proxy.wait(timeout=10)
                rate, client_cpu = (float(x) for x in output.stdout.split())
                figures.append(
                    ProxyFigure(
                        rtt=rtt,
                        connections=count,
                        requests_per_second=rate,
                        ceiling=count / rtt if rtt else float("inf"),
                        # The proxy's CPU over the whole load run, warm-up included (an upper
                        # bound: the warm-up opens the connections).
                        proxy_cpu=cpu / elapsed,
                        client_cpu=client_cpu,
                    )
                )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return figures


def proxy_table(figures: list[ProxyFigure]) -> str:
    lines = [
        "| RTT | keep-alive connections | passed | ceiling | proxy CPU | client CPU |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    lines.extend(figure.line() for figure in figures)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--upstream", type=int, help="the server's port on 127.0.0.1")
    parser.add_argument("--rtt", type=float, default=0.08, help="round trip to add, seconds")
    parser.add_argument(
        "--handshake-rtts",
        type=int,
        default=2,
        help="round trips before a new connection's first byte (1 TCP, 2 with TLS 1.3)",
    )
    parser.add_argument("--selftest", action="store_true", help="measure the proxy alone")
    parser.add_argument("--trivial-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trivial_server:
        _run(_serve_trivial())
    elif args.load:
        port, count, seconds, warmup = args.load
        _run(_load(int(port), int(count), float(seconds), float(warmup)))
    elif args.selftest:
        figures = measure_proxy([0.0, 0.08], [16, 64, 256])
        print(proxy_table(figures))
    elif args.upstream:
        _run(_serve_proxy(args.port, ("127.0.0.1", args.upstream), args.rtt, args.handshake_rtts))
    else:
        parser.error("--upstream, or --selftest")


if __name__ == "__main__":
    main()
