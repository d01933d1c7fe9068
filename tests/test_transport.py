"""The transports that carry the API's requests: httpx's own by default, aiohttp's when asked.

What must hold whichever carries them: a failure is "not sent" only when no connection was
made, so an enqueue whose connection died after the server read it is reconciled, never sent
again; the environment's proxies still apply; a transport the user gives is used as it is.
The error mapping is checked against each real stack (httpx's own on asyncio and trio,
httpx-aiohttp on asyncio) over a loopback server that misbehaves at a chosen point.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Final

import aiohttp
import anyio
import anyio.abc
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oxen_queue._transport
from oxen_queue import (
    APIConnectionError,
    AsyncClient,
    HttpBackend,
    InvalidParamsError,
    RetryPolicy,
)
from oxen_queue._http import ApiSession, transport_error
from oxen_queue._transport import AiohttpTransport, ShardedTransport, map_aiohttp_error
from oxen_queue.testing import Emulator, EmulatorConfig

from .helpers import eventually

pytestmark = pytest.mark.anyio

# Every stack the client can run on: (async library, http_backend).
STACKS: Final[list[tuple[str, HttpBackend]]] = [
    ("asyncio", "httpx"),
    ("asyncio", "aiohttp"),
    ("trio", "httpx"),
]
STACK_IDS: Final = [f"{library}-{backend}" for library, backend in STACKS]
PROXY_VARIABLES: Final = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

Behaviour = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@pytest.fixture(autouse=True)
def _no_proxies_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _serving(behaviour: Behaviour) -> AsyncIterator[str]:
    """A loopback server that runs ``behaviour`` on each connection; yields its URL."""
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as group,
    ):
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio)
        group.start_soon(listener.serve, behaviour)
        yield f"http://127.0.0.1:{port}"
        group.cancel_scope.cancel()


async def _read_head(stream: anyio.abc.SocketStream, limit: int | None = None) -> bytes:
    """The request's head (what a GET sends), or its first ``limit`` bytes."""
    seen = b""
    while b"\r\n\r\n" not in seen and (limit is None or len(seen) < limit):
        try:
            seen += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            break
    return seen if limit is None else seen[:limit]


async def _reset(stream: anyio.abc.SocketStream) -> None:
    """Close with a TCP reset (RST), not an orderly FIN."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 (anyio)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def _session(base_url: str, http_backend: HttpBackend) -> ApiSession:
    return ApiSession(
        base_url=httpx.URL(base_url + "/"),
        api_key="k",
        timeout=httpx.Timeout(5),
        max_concurrency=4,
        retry=RetryPolicy.no_wait(attempts=1),
        http_backend=http_backend,
    )


async def _get(base_url: str, http_backend: HttpBackend) -> object:
    """One ``GET`` through a session on ``http_backend``: its decoded body, or its error."""
    session = _session(base_url, http_backend)
    session.open()
    try:
        return await session.send("GET", "api/ai/queue/some-id")
    except APIConnectionError as exc:
        return exc
    finally:
        await session.aclose()


# -- "not sent" only when no connection was made, on each real stack -----------------------


async def _hang_up_after_reading(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await _read_head(stream)


async def _close_at_once(stream: anyio.abc.SocketStream) -> None:
    await stream.aclose()


async def _reset_mid_body(stream: anyio.abc.SocketStream) -> None:
    await _read_head(stream)
    await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"generation')
    await _reset(stream)


def _answering(answer: bytes) -> Behaviour:
    async def behaviour(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await _read_head(stream)
            await stream.send(answer)

    return behaviour


MISBEHAVIOURS: Final = {
    "hangs-up-after-reading": _hang_up_after_reading,
    "closes-without-reading": _close_at_once,
    "resets-mid-body": _reset_mid_body,
    "garbles-the-status-line": _answering(b"HTTP/1.1 abc OK\r\n\r\n"),
    "garbles-content-length": _answering(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}"),
    "garbles-a-chunk-size": _answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize(("anyio_backend", "http_backend"), STACKS, ids=STACK_IDS)
async def test_a_refused_connection_is_the_one_failure_reported_as_not_sent(
    http_backend: HttpBackend,
) -> None:
    error = await _get(f"http://127.0.0.1:{_closed_port()}", http_backend)
    assert isinstance(error, APIConnectionError)
    assert error.request_sent is False


@pytest.mark.parametrize(("anyio_backend", "http_backend"), STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("misbehaviour", list(MISBEHAVIOURS))
async def test_a_server_failing_after_the_connection_is_made_may_have_received_it(
    http_backend: HttpBackend, misbehaviour: str
) -> None:
    async with _serving(MISBEHAVIOURS[misbehaviour]) as url:
        error = await _get(url, http_backend)
    assert isinstance(error, APIConnectionError), error
    assert error.request_sent is True


_ANSWER: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\r\n"
    b'{"generation_id": "some-id", "status": "ok"}'
)


@pytest.mark.parametrize("stack", STACKS, ids=STACK_IDS)
@settings(max_examples=25)
@given(
    read=st.integers(min_value=0, max_value=400),
    answered=st.integers(min_value=0, max_value=len(_ANSWER)),
    ending=st.sampled_from(["close", "reset"]),
)
def test_a_connection_failing_at_any_point_is_never_reported_as_not_sent(
    stack: tuple[str, HttpBackend], read: int, answered: int, ending: str
) -> None:
    """The server reads ``read`` bytes of the request, answers ``answered`` bytes of a valid
    answer, then closes or resets: the outcome is the answer, or an error that may have been
    sent; never "not sent", never another kind of error."""
    library, http_backend = stack

    async def behaviour(stream: anyio.abc.SocketStream) -> None:
        await _read_head(stream, limit=read)
        if answered:
            with suppress(anyio.BrokenResourceError, OSError):  # the client may have gone
                await stream.send(_ANSWER[:answered])
        await (_reset(stream) if ending == "reset" else stream.aclose())

    async def run() -> object:
        async with _serving(behaviour) as url:
            return await _get(url, http_backend)

    outcome = anyio.run(run, backend=library)
    if isinstance(outcome, APIConnectionError):
        assert outcome.request_sent is True
    else:
        # A whole answer may still arrive ahead of the reset, or of the close.
        assert answered == len(_ANSWER)
        assert outcome == {"generation_id": "some-id", "status": "ok"}


# -- what map_aiohttp_error decides from aiohttp's own errors -------------------------------


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.ClientPayloadError("body cut short"),
        aiohttp.ClientConnectionError("of unknown cause"),
        httpx.ConnectTimeout("what httpx-aiohttp says, with no cause"),
        httpx.ConnectError("what httpx-aiohttp says, with no cause"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_without_a_cause_known_to_precede_the_connection_it_may_have_been_sent(
    error: Exception,
) -> None:
    mapped = map_aiohttp_error(error)
    assert transport_error(mapped, "POST /api/ai/queue").request_sent is True


def test_a_connect_timeout_from_aiohttp_is_not_sent_and_a_read_timeout_is() -> None:
    connect = map_aiohttp_error(aiohttp.ConnectionTimeoutError("connecting"))
    read = map_aiohttp_error(aiohttp.SocketTimeoutError("reading"))
    assert transport_error(connect, "POST /api/ai/queue").request_sent is False
    assert isinstance(read, httpx.ReadTimeout)
    assert transport_error(read, "POST /api/ai/queue").request_sent is True


# -- an enqueue whose answer is lost, end to end -----------------------------------------------


class _HangUpProxy:
    """A TCP relay to the emulator that hangs up on the client, instead of relaying the answer,
    for the next ``drops`` enqueues: the job exists, the client never hears of it."""

    def __init__(self, upstream_port: int, drops: int) -> None:
        self.upstream_port = upstream_port
        self.drops = drops

    async def relay(self, client: anyio.abc.SocketStream) -> None:
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


@pytest.mark.parametrize(("anyio_backend", "http_backend"), STACKS, ids=STACK_IDS)
async def test_an_enqueue_whose_connection_died_unanswered_is_reconciled_never_resent(
    http_backend: HttpBackend,
) -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        proxy = _HangUpProxy(int(emu.base_url.rsplit(":", 1)[1]), drops=1)
        async with (
            _serving(proxy.relay) as url,
            AsyncClient(
                api_key="k", base_url=url, completion="poll", http_backend=http_backend
            ) as client,
        ):
            record = await (await client.enqueue("gpt-image-2", prompt="an ox, once"))
            stats = client.stats
        server = emu.stats()
    assert record.status == "succeeded"
    assert server["requests"]["POST /api/ai/queue"] == 1
    assert server["jobs_created"] == 1
    assert (stats.reconciled, stats.resent) == (1, 0)


# -- which transport carries the requests ------------------------------------------------------


async def test_the_default_is_httpx_own_transport_on_asyncio_and_trio() -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        async with AsyncClient(api_key="k", base_url=emu.base_url) as client:
            await (await client.enqueue("gpt-image-2", prompt="ox"))
            transport = client._core.session.transport
            assert isinstance(transport, ShardedTransport)
            assert transport.pools >= 1  # it carried them


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_http_backend_aiohttp_carries_the_requests_on_asyncio() -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        async with AsyncClient(api_key="k", base_url=emu.base_url, http_backend="aiohttp") as c:
            record = await (await c.enqueue("gpt-image-2", prompt="ox"))
            assert isinstance(c._core.session.transport, AiohttpTransport)
    assert record.status == "succeeded"


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_http_backend_aiohttp_refuses_to_open_on_trio() -> None:
    client = AsyncClient(api_key="k", base_url="http://127.0.0.1:9", http_backend="aiohttp")
    with pytest.raises(InvalidParamsError, match="asyncio only") as caught:
        async with client:
            pass
    assert caught.value.field == "http_backend"


def test_an_unknown_http_backend_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidParamsError) as caught:
        AsyncClient(api_key="k", http_backend="requests")  # type: ignore[arg-type]
    assert caught.value.field == "http_backend"
    assert caught.value.allowed == ("httpx", "aiohttp")


def test_http_backend_aiohttp_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oxen_queue._transport, "aiohttp_installed", lambda: False)
    with pytest.raises(InvalidParamsError, match=r"pip install 'oxen-queue\[aiohttp\]'") as caught:
        AsyncClient(api_key="k", http_backend="aiohttp")
    assert caught.value.field == "http_backend"


@pytest.mark.slow
def test_the_library_and_its_default_client_never_import_aiohttp() -> None:
    code = (
        "import sys, oxen_queue\n"
        "oxen_queue.AsyncClient(api_key='k')\n"
        "assert not {'aiohttp', 'httpx_aiohttp'} & set(sys.modules), 'aiohttp imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_a_transport_given_by_the_user_is_used_as_it_is() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(404, json={"error": {"message": "no"}})

    transport = httpx.MockTransport(handler)
    async with AsyncClient(
        api_key="k",
        base_url="https://hub.example",
        transport=transport,
        http_backend="aiohttp",  # chooses nothing beside a transport given
        completion="poll",
    ) as client:
        with pytest.raises(Exception, match="404"):
            await client.get_generation("x")
        assert client._core.session.transport is transport
    assert seen == ["/api/ai/queue/x"]


# -- the environment's proxies ---------------------------------------------------------------


@asynccontextmanager
async def _proxy() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A forward proxy that answers 404 itself; yields its URL and the request lines seen."""
    seen: list[bytes] = []

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            seen.append((await _read_head(stream)).split(b"\r\n", 1)[0])
            body = b'{"error": {"message": "proxy says no"}}'
            await stream.send(
                b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )

    async with _serving(answer) as url:
        yield url, seen


@pytest.mark.parametrize(("anyio_backend", "http_backend"), STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
async def test_a_proxy_from_the_environment_carries_the_requests(
    monkeypatch: pytest.MonkeyPatch, http_backend: HttpBackend, variable: str
) -> None:
    async with _proxy() as (proxy, seen):
        monkeypatch.setenv(variable, proxy)
        async with AsyncClient(
            api_key="k",
            base_url="http://localhost:9",
            completion="poll",
            retry=RetryPolicy(attempts=1),
            http_backend=http_backend,
        ) as client:
            with pytest.raises(Exception, match="proxy says no"):
                await client.get_generation("x")
    assert seen == [b"GET http://localhost:9/api/ai/queue/x HTTP/1.1"]


@pytest.mark.parametrize(("anyio_backend", "http_backend"), STACKS, ids=STACK_IDS)
async def test_a_host_no_proxy_names_is_reached_directly(
    monkeypatch: pytest.MonkeyPatch, http_backend: HttpBackend
) -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        async with _proxy() as (proxy, seen):
            monkeypatch.setenv("HTTP_PROXY", proxy)
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            async with AsyncClient(
                api_key="k", base_url=emu.base_url, completion="poll", http_backend=http_backend
            ) as client:
                models = await client.list_models()
    assert models
    assert seen == []


# -- httpx's own, one connection per pool ------------------------------------------------------


async def test_sharded_pools_are_made_as_needed_and_one_freed_last_is_used_first() -> None:
    held = anyio.Event()
    answered = 0
    headers = {"Authorization": "Bearer k"}
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        transport = ShardedTransport(connections=8)
        async with httpx.AsyncClient(
            transport=transport, base_url=emu.base_url, headers=headers
        ) as http:
            for _ in range(5):  # one at a time: one pool, its connection reused
                (await http.get("/api/ai/models")).raise_for_status()
            assert transport.pools == 1

            async def hold() -> None:
                nonlocal answered
                async with http.stream("GET", "/api/ai/models") as response:
                    response.raise_for_status()
                    answered += 1
                    await held.wait()

            async with anyio.create_task_group() as group:
                for _ in range(6):
                    group.start_soon(hold)
                await eventually(lambda: answered >= 6)
                assert transport.pools == 6  # one per request in flight
                held.set()
            for _ in range(5):
                (await http.get("/api/ai/models")).raise_for_status()
            assert transport.pools == 6  # none made while one is free


async def test_past_its_connections_requests_share_the_pools_and_all_complete() -> None:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        transport = ShardedTransport(connections=2)
        async with httpx.AsyncClient(
            transport=transport, base_url=emu.base_url, headers={"Authorization": "Bearer k"}
        ) as http:
            codes: list[int] = []

            async def get() -> None:
                codes.append((await http.get("/api/ai/models")).status_code)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    for _ in range(10):
                        group.start_soon(get)
    assert codes == [200] * 10
    assert transport.pools == 2


async def test_a_request_that_fails_frees_its_pool() -> None:
    transport = ShardedTransport(connections=1)
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):  # each would wait forever for a pool the one before kept
            with anyio.fail_after(10), pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{_closed_port()}/")
    assert transport.pools == 1
