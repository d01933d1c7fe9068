"""The emulator on a real loopback server: lifecycle, the event stream, the file origin."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock

from ..helpers import TLS
from ._support import (
    OTHER_KEY,
    PROMPT,
    SSEParser,
    auth,
    event_lines,
    next_completion,
    wait_for_status,
)

pytestmark = pytest.mark.anyio

FAST = EmulatorConfig(time_scale=0.02, unrelated_event_rate=0.0, seed=1)
SUCCESS_KEYS = {"generation_id", "status", "media_type", "model", "url"}
FAILURE_KEYS = {"generation_id", "status", "media_type", "error"}


def _client(emu: Emulator, key: str = "test-key-alice") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=emu.base_url, headers=auth(key), timeout=5.0, verify=TLS)


async def _enqueue(client: httpx.AsyncClient, **body: object) -> str:
    body.setdefault("model", "gpt-image-2")
    body.setdefault("prompt", PROMPT)
    response = await client.post("/api/ai/queue", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["generations"][0]["generation_id"])


async def test_an_emulator_serves_a_whole_lifecycle_on_either_backend() -> None:
    async with Emulator(config=FAST) as emu, _client(emu) as client:
        assert emu.running
        gid = await _enqueue(client)
        row = await wait_for_status(client, gid, {"succeeded"})
        async with httpx.AsyncClient() as anonymous:
            file = await anonymous.get(row["result_url"])
        assert file.status_code == 200 and file.headers["content-type"] == "image/png"
        completed = emu.stats()["completion_times"][gid]
        assert completed == pytest.approx(time.time(), abs=5.0)
    assert not emu.running


def test_an_emulator_works_from_sync_code_and_frees_its_ports() -> None:
    with Emulator(config=FAST) as emu:
        response = httpx.get(f"{emu.base_url}/api/ai/models", headers=auth())
        assert response.status_code == 200
        base_url = emu.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/api/ai/models", headers=auth())
    with pytest.raises(RuntimeError, match="not been started"):
        _ = Emulator().base_url


def test_starting_twice_is_refused() -> None:
    with Emulator() as emu, pytest.raises(RuntimeError, match="already running"):
        emu.start()


async def test_result_files_live_on_another_port_without_auth() -> None:
    async with Emulator(config=FAST) as emu, _client(emu) as client:
        row = await wait_for_status(client, await _enqueue(client), {"succeeded"})
        url = urlsplit(row["result_url"])
        assert f"{url.scheme}://{url.netloc}" == emu.files_url != emu.base_url
        async with httpx.AsyncClient() as anonymous:
            assert (await anonymous.get(row["result_url"])).status_code == 200
            # Each origin serves only its own routes.
            assert (await anonymous.get(f"{emu.files_url}/api/ai/models")).status_code == 404
            on_api = f"{emu.base_url}{url.path}?{url.query}"
            assert (await anonymous.get(on_api)).status_code == 404
        assert emu.stats()["file_requests"] == {
            "with_authorization": 0,
            "without_authorization": 2,
        }


async def test_the_stream_starts_at_once_even_with_nothing_to_say() -> None:
    async with Emulator(config=FAST) as emu, _client(emu) as client:
        with anyio.fail_after(2.0):
            async with client.stream("GET", "/api/events") as stream:
                # Not reading the body: the headers alone must arrive.
                assert stream.status_code == 200
                assert stream.headers["content-type"] == "text/event-stream"
        assert (await client.get("/api/events", headers={"Authorization": ""})).status_code == 401


async def test_completion_events_carry_exactly_the_documented_keys() -> None:
    async with (
        Emulator(config=FAST) as emu,
        _client(emu) as client,
        event_lines(client) as lines,
    ):
        good = await _enqueue(client)
        bad = await _enqueue(client, resolution="999x999")
        with anyio.fail_after(5.0):
            first, second = await next_completion(lines), await next_completion(lines)
        events = {event["generation_id"]: event for event in (first, second)}
        success, failure = events[good], events[bad]
        assert set(success) == SUCCESS_KEYS
        assert (success["status"], success["media_type"]) == ("succeeded", "image")
        assert success["model"] == "gpt-image-2"
        row = (await client.get(f"/api/ai/queue/{good}")).json()
        assert success["url"] == row["result_url"]
        assert set(failure) == FAILURE_KEYS
        assert failure["status"] == "failed"
        assert failure["error"].startswith("Getting model response error: 422 - resolution")


async def test_events_are_one_line_of_compact_json() -> None:
    async with (
        Emulator(config=FAST) as emu,
        _client(emu) as client,
        event_lines(client) as lines,
    ):
        await _enqueue(client)
        with anyio.fail_after(5.0):
            seen = [await lines.receive() for _ in range(3)]
    assert seen[0] == "event: media_generation_completed"
    assert seen[1].startswith('data: {"generation_id":"')
    assert json.loads(seen[1].removeprefix("data: "))["status"] == "succeeded"
    assert seen[2] == ""


async def test_events_that_fire_before_connecting_are_lost() -> None:
    async with Emulator(config=FAST) as emu, _client(emu) as client:
        early = await _enqueue(client)
        await wait_for_status(client, early, {"succeeded"})
        async with event_lines(client) as lines:
            later = await _enqueue(client)
            with anyio.fail_after(5.0):
                event = await next_completion(lines)
        assert event["generation_id"] == later
        assert emu.stats()["events"]["published"] == 2
        assert emu.stats()["events"]["delivered"] == 1


async def test_a_cancelled_generation_sends_no_event() -> None:
    async with Emulator(config=FAST) as emu, _client(emu) as client:
        async with event_lines(client) as lines:
            cancelled = await _enqueue(client)
            assert (await client.delete(f"/api/ai/queue/{cancelled}")).status_code == 200
            finished = await _enqueue(client)
            with anyio.fail_after(5.0):
                event = await next_completion(lines)
        assert event["generation_id"] == finished
        assert emu.stats()["events"]["published"] == 1


async def test_streams_see_only_their_users_events() -> None:
    async with (
        Emulator(config=FAST) as emu,
        _client(emu) as alice,
        _client(emu, OTHER_KEY) as bob,
        event_lines(alice) as alice_lines,
        event_lines(bob),
    ):
        gid = await _enqueue(alice)
        with anyio.fail_after(5.0):
            event = await next_completion(alice_lines)
        assert event["generation_id"] == gid
        # A moment in which a wrong delivery to bob would be counted (on a slow machine it
        # may not have been yet, and the check only weakens: never a false failure).
        await anyio.sleep(0.05)
        stats = emu.stats()
        assert stats["sse_open"] == 2
        assert stats["events"] == {"published": 1, "delivered": 1, "dropped": 0, "unrelated": 0}


async def test_an_idle_stream_sends_keep_alive_comments() -> None:
    config = FAST.replace(keepalive_interval=0.05)
    async with (
        Emulator(config=config) as emu,
        _client(emu) as client,
        event_lines(client) as lines,
    ):
        with anyio.fail_after(2.0):
            assert [await lines.receive() for _ in range(4)] == [": keep-alive", ""] * 2


async def test_unrelated_events_are_interleaved_some_over_several_data_lines() -> None:
    config = FAST.replace(unrelated_event_rate=1.0)
    async with (
        Emulator(config=config) as emu,
        _client(emu) as client,
        event_lines(client) as lines,
    ):
        ids = {await _enqueue(client) for _ in range(6)}
        parser, events, raw = SSEParser(), [], []
        with anyio.fail_after(5.0):
            async for line in lines:
                raw.append(line)
                event = parser.feed(line)
                if event is not None:
                    events.append(event)
                if sum(name == "media_generation_completed" for name, _ in events) == 6:
                    break
    names = [name for name, _ in events]
    assert names == ["deployment_status_changed", "media_generation_completed"] * 6
    assert {json.loads(data)["generation_id"] for name, data in events if "media" in name} == ids
    for _, data in events:
        assert isinstance(json.loads(data), dict)  # multi-line data joins into JSON
    assert any(data.count("\n") > 1 for _, data in events), "no multi-line event drawn"
    assert sum(line.startswith("data: ") for line in raw) > len(events)


async def test_a_manual_clock_moved_from_the_test_drives_events() -> None:
    clock = ManualClock()
    async with Emulator(config=FAST, clock=clock) as emu, _client(emu) as client:
        async with event_lines(client) as lines:
            gid = await _enqueue(client)
            await anyio.sleep(0.05)  # real time passes (a moment: the check only weakens)
            assert emu.state.jobs[gid].status == "queued"  # time stands still
            clock.advance(1.0)  # no request follows: the server's scheduler applies it
            with anyio.fail_after(5.0):
                event = await next_completion(lines)
        assert event["generation_id"] == gid


async def test_stopping_ends_open_streams_promptly() -> None:
    emu = Emulator(config=FAST)
    await anyio.to_thread.run_sync(emu.start)
    async with _client(emu) as client, event_lines(client) as lines:
        started = time.perf_counter()
        await anyio.to_thread.run_sync(emu.stop)
        assert time.perf_counter() - started < 1.5
        with anyio.fail_after(2.0):
            assert [line async for line in lines] == []  # the server ended it
