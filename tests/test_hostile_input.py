"""Hostile and malformed input: never a crash of the event reader or a parser, never a hang.

Property-based (hypothesis): arbitrary SSE streams through the real event watcher, arbitrary
JSON bodies through the response parsing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oxen_queue import APIResponseValidationError, GenerationFailedError, GenerationRecord
from oxen_queue._api import QueueEndpoints, parse
from oxen_queue._generation import Generation
from oxen_queue._http import ApiSession
from oxen_queue._retry import RetryPolicy
from oxen_queue._watch._events import EventWatcher

from .fakes import API
from .helpers import WITHIN, StubOwner, eventually

IDS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(4)]


class _StreamOnce:
    """A QueueAPI whose event stream answers ``body`` once."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.opened = 0

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        raise AssertionError("no polling in events mode without reconnects")

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        raise AssertionError("no polling in events mode without reconnects")

    @asynccontextmanager
    async def event_stream(self) -> AsyncIterator[httpx.Response]:
        self.opened += 1
        request = httpx.Request("GET", f"{API}/api/events")
        yield httpx.Response(
            200,
            request=request,
            headers={"content-type": "text/event-stream"},
            stream=httpx.ByteStream(self.body),
        )


def completion(generation_id: str, status: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "generation_id": generation_id,
        "status": status,
        "media_type": "image",
    }
    if status == "succeeded":
        payload |= {"model": "gpt-image-2", "url": f"https://files.test/{generation_id}.png"}
    else:
        payload["error"] = "Insufficient credits"
    return payload


garbage_line = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=40
)
event_block = st.one_of(
    st.builds(
        lambda i, s: (
            f"event: media_generation_completed\ndata: {json.dumps(completion(IDS[i], s))}\n\n"
        ),
        st.integers(0, 3),
        st.sampled_from(["succeeded", "failed"]),
    ),
    st.builds(  # the same payload split over several data: lines (joined with newlines)
        lambda i: (
            "event: media_generation_completed\n"
            + "".join(
                f"data: {part}\n"
                for part in json.dumps(completion(IDS[i], "succeeded"), indent=1).splitlines()
            )
            + "\n"
        ),
        st.integers(0, 3),
    ),
    st.just(": keep-alive\n\n"),
    st.builds(
        lambda t: f"event: deployment_status_changed\ndata: {t}\ndata: more\n\n", garbage_line
    ),
    st.builds(lambda t: f"event: media_generation_completed\ndata: {t}\n\n", garbage_line),
    st.builds(lambda t: f"{t}\n", garbage_line),
    st.just('event: media_generation_completed\ndata: {"generation_id": 7, "status": []}\n\n'),
    st.just(
        'event: media_generation_completed\ndata: {"generation_id": "x", "status": "queued"}\n\n'
    ),
)


def expected_outcomes(blocks: list[str]) -> dict[str, str]:
    """What a correct reader concludes: the first well-formed completion event per id."""
    outcome: dict[str, str] = {}
    for block in blocks:
        if not block.startswith("event: media_generation_completed\ndata: "):
            continue
        lines = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        try:
            payload = json.loads("\n".join(lines))
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("generation_id") in IDS:
            status = payload.get("status")
            if status in ("succeeded", "failed"):
                outcome.setdefault(payload["generation_id"], status)
    return outcome


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_block, max_size=25), st.sampled_from(["\n", "\r\n"]))
def test_any_event_stream_resolves_exactly_what_it_announces(
    blocks: list[str], newline: str
) -> None:
    body = "".join(blocks).replace("\n", newline).encode()
    expected = expected_outcomes(blocks)

    async def run() -> dict[str, str]:
        watcher = EventWatcher(_StreamOnce(body), backstop=None, fallback=False, connect_wait=5)
        async with anyio.create_task_group() as task_group:
            watcher.start(task_group)
            owner = StubOwner()
            generations = [Generation(i, owner=owner, model="gpt-image-2") for i in IDS]
            for generation in generations:
                watcher.track(generation, fresh=True)
            with anyio.fail_after(WITHIN):
                await watcher.ready()
            await eventually(lambda: watcher.state == "down")  # the whole body has been read
            task_group.cancel_scope.cancel()
        seen: dict[str, str] = {}
        for generation in generations:
            if not generation.done():
                continue
            try:
                record = generation.result()
                assert record.result_url == f"https://files.test/{generation.id}.png"
                seen[generation.id] = record.status
            except GenerationFailedError as exc:
                assert exc.error_message == "Insufficient credits"
                seen[generation.id] = "failed"
        return seen

    assert anyio.run(run) == expected


def _session(answer: Callable[[httpx.Request], httpx.Response]) -> ApiSession:
    """A bare session whose every request gets ``answer``, with no retries."""
    return ApiSession(
        base_url=httpx.URL(API + "/"),
        api_key="k",
        timeout=httpx.Timeout(5),
        max_concurrency=4,
        retry=RetryPolicy.no_wait(attempts=1),
        transport=httpx.MockTransport(answer),
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
row_like = st.fixed_dictionaries(
    {},
    optional={
        "generation_id": st.one_of(st.text(max_size=8), st.integers()),
        "status": st.one_of(st.sampled_from(["queued", "succeeded", "exploded"]), st.integers()),
        "enqueued_at": st.one_of(st.integers(), st.text(max_size=4), st.none()),
        "result_url": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, row_like))
def test_any_json_parses_to_a_record_or_a_typed_error(data: object) -> None:
    try:
        record = parse(GenerationRecord, data, what="GET /api/ai/queue/x")
    except APIResponseValidationError as exc:
        assert "unexpected answer" in str(exc)
    else:
        assert isinstance(record.generation_id, str)
        assert isinstance(record.status, str)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "count": json_values,
                "generations": st.lists(st.one_of(row_like, json_values), max_size=5),
            }
        ),
    )
)
def test_any_list_body_gives_statuses_or_a_typed_error_never_a_crash(data: object) -> None:
    session = _session(lambda request: httpx.Response(200, json=data))

    async def run() -> dict[str, str] | None:
        try:
            return await QueueEndpoints(session).active_statuses(None)
        except APIResponseValidationError:
            return None
        finally:
            await session.aclose()

    statuses = anyio.run(run)
    if statuses is not None:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in statuses.items())


@pytest.mark.parametrize(
    "body",
    [b'{"generation_id": "a", "sta', b"<html>502</html>", b"", b"\xff\xfe\x00"],
)
def test_undecodable_bodies_raise_response_validation_errors(body: bytes) -> None:
    session = _session(lambda request: httpx.Response(200, content=body))

    async def run() -> None:
        try:
            await QueueEndpoints(session).get_generation("a")
        finally:
            await session.aclose()

    with pytest.raises(APIResponseValidationError):
        anyio.run(run)
