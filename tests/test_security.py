"""The key never shows, never travels to another host, never in clear over the network."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from oxen_queue import AsyncClient, GenerationRecord, OxenError

from .fakes import API, FakeAPI
from .helpers import fake_client

SECRET = "sk-oxen-SECRET-1234567890"


def test_repr_of_client_and_session_hide_the_key() -> None:
    client = AsyncClient(api_key=SECRET, base_url=API)
    assert SECRET not in repr(client)
    assert SECRET not in repr(client._core.session.http.auth)
    assert SECRET not in repr(vars(client))


@pytest.mark.parametrize(
    "url",
    ["http://hub.oxen.ai", "http://192.168.1.10:8000", "ftp://hub.oxen.ai", "hub.oxen.ai"],
)
def test_insecure_or_odd_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        AsyncClient(api_key=SECRET, base_url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:9", "http://[::1]:80"])
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    AsyncClient(api_key=SECRET, base_url=url)


def test_plain_http_elsewhere_needs_an_explicit_opt_in() -> None:
    AsyncClient(api_key=SECRET, base_url="http://oxen.internal", allow_insecure_http=True)


@pytest.mark.anyio
async def test_the_key_goes_only_to_the_api_origin() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"error": {"message": "nope"}})

    transport = httpx.MockTransport(record)
    async with AsyncClient(api_key=SECRET, base_url=API, transport=transport) as client:
        for url in (
            f"{API}/api/ai/models/x",
            "https://files.oxen.test/a.png",
            "http://hub.oxen.test/api/ai/models/x",  # same host, other scheme
            "https://hub.oxen.test:8443/api/ai/models/x",  # same host, other port
            "https://hub.oxen.test.evil.com/api/ai/models/x",
        ):
            await client._core.session.http.get(url)
    assert [r.headers.get("authorization") for r in seen] == [f"Bearer {SECRET}"] + [None] * 4


@pytest.mark.anyio
async def test_redirects_never_carry_the_key_off_origin(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "hub.oxen.test":
            return httpx.Response(302, headers={"location": "https://cdn.oxen.test/x.png"})
        png = b"\x89PNG\r\n\x1a\n" + bytes(64)  # an image, as a download must be
        return httpx.Response(200, content=png, headers={"content-type": "image/png"})

    async with AsyncClient(
        api_key=SECRET, base_url=API, transport=httpx.MockTransport(handler)
    ) as client:
        record = GenerationRecord(
            generation_id="g", status="succeeded", result_url=f"{API}/api/repos/x.png"
        )
        await client.download(record, tmp_path)
    assert seen[0].headers.get("authorization") == f"Bearer {SECRET}"
    assert "authorization" not in seen[1].headers


@pytest.mark.anyio
async def test_no_key_in_debug_logs_or_error_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    api = FakeAPI(key=SECRET, lifecycle=["queued", "failed"], error_message="Insufficient credits")
    flaky = {"n": 0}

    def unavailable_twice(request: httpx.Request) -> httpx.Response | None:
        flaky["n"] += 1
        return httpx.Response(503) if flaky["n"] <= 2 else None

    api.before.append(unavailable_twice)
    errors: list[BaseException] = []
    async with fake_client(api, api_key=SECRET) as client:
        await client.get_model("flux-test")
        calls = (
            client.get_model("nope"),
            client.generate("gpt-image-2", prompt=""),
            client.generate("gpt-image-2", prompt="fails"),
        )
        for call in calls:
            try:
                await call
            except OxenError as exc:
                errors.append(exc)
    async with fake_client(api, api_key="wrong-" + SECRET) as client:
        try:
            await client.get_model("flux-test")
        except OxenError as exc:
            errors.append(exc)
    assert len(errors) == 4
    assert any("retrying" in r.getMessage() for r in caplog.records)
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert SECRET not in text
    assert all(SECRET not in f"{e!s} {e!r} {vars(e)!r}" for e in errors)
