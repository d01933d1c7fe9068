"""The default transports: aiohttp's pool on asyncio, small httpcore pools on trio.

What must hold whichever carries the requests: a failure is "not sent" only when no
connection was made, so an enqueue whose connection died after the server read it is
reconciled, never sent again; proxies from the environment still apply; a transport the user
gives is used as it is.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import anyio.abc
import httpx
import pytest

from oxen_queue import APIConnectionError, AsyncClient, RetryPolicy
from oxen_queue._http import transport_error
from oxen_queue._transport import DefaultTransport, ShardedTransport, map_aiohttp_error
from oxen_queue.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio


# -- the error mapping, cause by cause --------------------------------------------------------


def _from_httpx_aiohttp(cause: BaseException) -> httpx.TransportError:
    """What httpx-aiohttp raises for ``cause``: every connection error a ConnectTimeout."""
    mapped: httpx.TransportError = (
        httpx.ReadError("x") if isinstance(cause, aiohttp.ClientPayloadError) else
        httpx.ConnectTimeout("x")
    )  # fmt: skip
    mapped.__cause__ = cause
    return mapped


@pytest.mark.parametrize(
    ("cause", "sent"),
    [
        (aiohttp.ConnectionTimeoutError("connecting"), False),
        (aiohttp.ServerDisconnectedError(), True),  # hung up after reading the request
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ServerDisconnectedError("reset mid-answer"), True),
        (aiohttp.SocketTimeoutError("reading"), True),
        (aiohttp.ServerTimeoutError("some timeout"), True),
        (aiohttp.ClientPayloadError("body cut short"), True),
        (aiohttp.ClientConnectionError("unknown"), True),  # not known to be unsent: may be
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_only_a_connection_never_made_counts_as_not_sent(cause: BaseException, sent: bool) -> None:
    mapped = map_aiohttp_error(_from_httpx_aiohttp(cause))
    assert transport_error(mapped, "POST /api/ai/queue").request_sent is sent


def test_a_refused_connection_counts_as_not_sent() -> None:
    with socket.socket() as sock:  # a real ClientConnectorError needs a real connection key
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def connect() -> BaseException:
        async with aiohttp.ClientSession() as session:
            try:
                await session.get(f"http://127.0.0.1:{port}/")
            except aiohttp.ClientConnectorError as exc:
                return exc
        raise AssertionError("connected to a closed port")

    cause = anyio.run(connect)
    mapped = map_aiohttp_error(_from_httpx_aiohttp(cause))
    assert isinstance(mapped, httpx.ConnectError)
    assert transport_error(mapped, "POST /api/ai/queue").request_sent is False


# -- a server that hangs up after reading the request ----------------------------------------


class _HangUpProxy:
    """A TCP relay to the emulator that hangs up on the client, instead of relaying the answer,
    for the next ``drops`` enqueues: the job exists, the client never hears of it."""

    def __init__(self, upstream_port: int, drops: int) -> None:
        self.upstream_port = upstream_port
        self.drops = drops
        self.port = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio)
            task_status.started()
            await listener.serve(self._relay)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.upstream_port) as upstream:
            hang_up = anyio.Event()

            async def requests() -> None:
                async for chunk in client:
                    if chunk.startswith(b"POST /api/ai/queue ") and self.drops:
                        self.drops -= 1
                        hang_up.set()
                    await upstream.send(chunk)

            async def answers() -> None:
                async for chunk in upstream:
                    if hang_up.is_set():
                        return  # the emulator answered (its job exists): hang up instead
                    await client.send(chunk)

            async with anyio.create_task_group() as group:
                group.start_soon(requests)
                await answers()
                group.cancel_scope.cancel()


@asynccontextmanager
async def _hanging_up(drops: int) -> AsyncIterator[tuple[Emulator, str]]:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        port = int(emu.base_url.rsplit(":", 1)[1])
        proxy = _HangUpProxy(port, drops)
        async with anyio.create_task_group() as group:
            await group.start(proxy.serve)
            yield emu, f"http://127.0.0.1:{proxy.port}"
            group.cancel_scope.cancel()


async def test_an_enqueue_whose_connection_died_unanswered_is_reconciled_never_resent() -> None:
    async with (
        _hanging_up(drops=1) as (emu, url),
        AsyncClient(api_key="k", base_url=url, completion="poll") as client,
    ):
        generation = await client.enqueue("gpt-image-2", prompt="an ox, once")
        record = await generation
        stats = client.stats
    assert record.status == "succeeded"
    server = emu.stats()
    assert server["requests"]["POST /api/ai/queue"] == 1
    assert server["jobs_created"] == 1
    assert (stats.reconciled, stats.resent) == (1, 0)


async def test_a_port_nobody_listens_on_is_a_connection_error_not_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncClient(
        api_key="k",
        base_url=f"http://127.0.0.1:{port}",
        completion="poll",
        retry=RetryPolicy(attempts=1),
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.get_generation("some-id")
    assert caught.value.request_sent is False


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",  # a garbled status line
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ],
    ids=["status-line", "content-length", "chunk-size"],
)
async def test_a_garbled_answer_is_a_connection_error_that_may_have_been_sent(
    answer: bytes,
) -> None:
    """aiohttp raises its own ClientResponseError for these, which httpx-aiohttp lets through:
    mapped, it is one of ours, as on httpx's own pools."""

    async def garble(client: anyio.abc.SocketStream) -> None:
        async with client:
            await client.receive()
            await client.send(answer)

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as group,
    ):
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio)
        group.start_soon(listener.serve, garble)
        async with AsyncClient(
            api_key="k",
            base_url=f"http://127.0.0.1:{port}",
            completion="poll",
            retry=RetryPolicy(attempts=1),
        ) as client:
            with pytest.raises(APIConnectionError) as caught:
                await client.get_generation("some-id")
        group.cancel_scope.cancel()
    assert caught.value.request_sent is True


# -- which transport ---------------------------------------------------------------------------


async def test_the_default_is_aiohttp_on_asyncio_and_small_httpx_pools_on_trio(
    anyio_backend: str,
) -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        async with AsyncClient(api_key="k", base_url=emu.base_url) as client:
            await (await client.enqueue("gpt-image-2", prompt="ox"))
            transport = client._core.session.http._transport
    assert isinstance(transport, DefaultTransport)
    assert transport.name == ("aiohttp" if anyio_backend == "asyncio" else "sharded")


async def test_sharded_pools_are_made_as_needed_and_each_holds_at_most_its_share() -> None:
    held = anyio.Event()
    answered: list[int] = []
    headers = {"Authorization": "Bearer k"}
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        transport = ShardedTransport(connections=40, per_pool=16)
        async with httpx.AsyncClient(
            transport=transport, base_url=emu.base_url, headers=headers
        ) as http:
            for _ in range(5):  # one at a time: one pool
                (await http.get("/api/ai/models")).raise_for_status()
            assert transport._busy == [0]

            async def hold() -> None:
                async with http.stream("GET", "/api/ai/models") as response:
                    answered.append(response.status_code)
                    await held.wait()

            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(hold)
                while len(answered) < 20:
                    await anyio.sleep(0.01)
                assert transport._busy == [16, 4]  # a second pool, made when the first was full
                held.set()
            assert transport._busy == [0, 0]
    assert answered == [200] * 20


async def test_a_transport_given_by_the_user_is_used_as_it_is() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(404, json={"error": {"message": "no"}})

    transport = httpx.MockTransport(handler)
    async with AsyncClient(
        api_key="k", base_url="https://hub.example", transport=transport, completion="poll"
    ) as client:
        with pytest.raises(Exception, match="404"):
            await client.get_generation("x")
        assert client._core.session.http._transport is transport
    assert seen == ["/api/ai/queue/x"]


async def test_proxies_from_the_environment_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Made in httpx's own hook, the default transport leaves httpx's proxy routing as it was."""
    received = anyio.Event()
    request_line = b""

    async def proxy(stream: anyio.abc.SocketStream) -> None:
        nonlocal request_line
        async with stream:
            request_line = (await stream.receive()).split(b"\r\n", 1)[0]
            body = b'{"error": {"message": "proxy says no"}}'
            await stream.send(
                b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            received.set()

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as group,
    ):
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
        group.start_soon(listener.serve, proxy)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with AsyncClient(
            api_key="k",
            base_url="http://localhost:9",
            completion="poll",
            retry=RetryPolicy(attempts=1),
        ) as client:
            with pytest.raises(Exception, match="404"):
                await client.get_generation("x")
        await received.wait()
        group.cancel_scope.cancel()
    assert request_line == b"GET http://localhost:9/api/ai/queue/x HTTP/1.1"
