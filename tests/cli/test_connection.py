"""A connection that cannot be made, in the CLI's words whatever the transport: ``cannot
connect to URL: REASON``, never aiohttp's ``ssl:default`` nor httpx's ``All connection
attempts failed``. For real on both transports (a closed port, TLS spoken to a plain-HTTP
server), and from built error chains for what a test cannot provoke offline (a name that
does not resolve, a certificate refused, a timeout)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from oxen_queue import APIConnectionError, APITimeoutError, AsyncClient, RetryPolicy
from oxen_queue._cli._connection import connect_failure
from oxen_queue._transport import AiohttpTransport
from oxen_queue.testing import Emulator

from .support import run

_SOME_ID = "3f2a0000-0000-4000-8000-000000000000"

TRANSPORTS: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
    "httpx": httpx.AsyncHTTPTransport,
    "aiohttp": lambda: AiohttpTransport(connections=4),
}


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _on(transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's clients on ``transport``, one attempt per request."""

    def client(**options: Any) -> AsyncClient:
        options.pop("http_backend", None)  # the transport given here is the one to test
        make = TRANSPORTS[transport]
        return AsyncClient(**options, transport=make(), retry=RetryPolicy.no_wait(attempts=1))

    monkeypatch.setattr("oxen_queue._cli._commands.AsyncClient", client)
    monkeypatch.setenv("OXEN_API_KEY", "k")


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("command", [["models"], ["status", _SOME_ID]], ids=" ".join)
def test_a_refused_connection_is_one_line_of_ours_on_either_transport(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    command: list[str],
) -> None:
    """Nothing listening at an ``http://`` URL: ``error: cannot connect to URL: connection
    refused``, exit 1 (the API could not be reached), whichever transport carries it."""
    _on(transport, monkeypatch)
    url = f"http://127.0.0.1:{_closed_port()}"
    status, stdout, stderr = run([*command, "--base-url", url], capsys)

    assert status == 1
    assert stderr == f"error: cannot connect to {url}: connection refused\n"
    assert stdout == ""


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_tls_spoken_to_a_plain_http_server_is_one_line_of_ours(
    oxen_emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    """``https://`` to a server that speaks plain HTTP: the TLS handshake failed, said once,
    with ssl's reason (not aiohttp's wrapper text)."""
    _on(transport, monkeypatch)
    url = oxen_emulator.base_url.replace("http://", "https://")
    status, _, stderr = run(["models", "--base-url", url], capsys)

    assert status == 1
    assert stderr.startswith(f"error: cannot connect to {url}: the TLS handshake failed (")
    assert stderr.count("\n") == 1
    assert "ssl:default" not in stderr
    assert "_ssl.c" not in stderr  # ssl's reason code, not the whole text of its error


def _failed(url: str, *causes: BaseException, sent: bool = False) -> APIConnectionError:
    """An APIConnectionError for ``url`` whose causes are ``causes``, outermost first."""
    error = APIConnectionError(
        "GET /api/ai/models on host: ConnectError: Cannot connect to host ssl:default",
        request=httpx.Request("GET", f"{url}/api/ai/models"),
        request_sent=sent,
    )
    outer: BaseException = error
    for cause in causes:
        outer.__cause__ = cause
        outer = cause
    return error


def _refused_certificate() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate")
    error.verify_message = "self-signed certificate"
    return error


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            _failed(
                "https://hub.oxen.test",
                httpx.ConnectError("Cannot connect to host hub.oxen.test:443 ssl:default"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            "cannot connect to https://hub.oxen.test: its host name did not resolve "
            "(Name or service not known)",
        ),
        (
            _failed("https://hub.oxen.test:8443", httpx.ConnectError("x"), _refused_certificate()),
            "cannot connect to https://hub.oxen.test:8443: its TLS certificate was not accepted "
            "(self-signed certificate)",
        ),
        (
            _failed(
                "http://[::1]:9",
                OSError("All connection attempts failed"),
                ConnectionRefusedError(111, "Connect call failed"),
            ),
            "cannot connect to http://[::1]:9: connection refused",
        ),
        (
            _failed("http://10.0.0.1", OSError(101, "Network is unreachable")),
            "cannot connect to http://10.0.0.1: network unreachable",
        ),
        (
            _failed("https://hub.oxen.test", httpx.ConnectError("weird")),
            "cannot connect to https://hub.oxen.test: no connection",
        ),
    ],
    ids=["name", "certificate", "refused-ipv6", "unreachable", "no-cause"],
)
def test_a_connection_that_was_not_made_is_said_from_its_causes(
    error: APIConnectionError, line: str
) -> None:
    """The origin from the request, the reason from the innermost cause that tells it; never
    the transport's own text."""
    assert connect_failure(error) == line


def test_a_connect_timeout_is_said_as_one() -> None:
    error = APITimeoutError(
        "GET /x on hub.oxen.test: timed out (ConnectTimeout)",
        request=httpx.Request("GET", "https://hub.oxen.test/x"),
        request_sent=False,
    )
    error.__cause__ = httpx.ConnectTimeout("")
    assert connect_failure(error) == "cannot connect to https://hub.oxen.test: timed out"


def test_a_failure_after_the_request_left_keeps_its_own_message() -> None:
    """``request_sent`` (the server may have seen it) is not a connection that could not be
    made; nor is an error of another kind."""
    sent = _failed("https://hub.oxen.test", ConnectionResetError(104, "reset"), sent=True)
    assert connect_failure(sent) is None
    assert connect_failure(ValueError("x")) is None
