"""Ids that become URL path segments: one judge (``oxen_queue._ids``), one path builder
(``_api.id_path``), and every entry point through them (issue 14, "ids become paths").

Property-based first: for any text, every client entry point that puts an id in a path either
refuses it with ``InvalidParamsError`` (naming the field) before any request, or sends requests
whose path carries it as exactly one segment, with the right method, to the API origin only.
Ids from the server (rows, events, enqueue answers) are skipped, never asked about.
"""

from __future__ import annotations

import json
import logging
import string
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oxen_queue import (
    APIResponseValidationError,
    AsyncClient,
    BatchItem,
    Client,
    Generation,
    GenerationRecord,
    InvalidParamsError,
)
from oxen_queue._api import HISTORY, MODELS, QUEUE, QueueEndpoints, id_path
from oxen_queue._http import ApiSession
from oxen_queue._ids import MAX_ID_LENGTH, check_id, plausible_id, segment
from oxen_queue._retry import RetryPolicy
from oxen_queue._watch._events import EventWatcher

from .fakes import API, FakeAPI
from .helpers import WITHIN, StubOwner, eventually, fake_client, fake_options

ALLOWED: Final = frozenset(string.ascii_letters + string.digits + "-_.~")
HOSTILE: Final = [
    "",
    ".",
    "..",
    "...",
    "/",
    "a/b",
    "../models/flux-test",
    "x?y",
    "x#y",
    "?",
    "#",
    "%2e%2e",
    "%2E",
    "a%2Fb",
    "a\r\nb",
    "a\nb",
    "a\x00b",
    " ",
    " a",
    "a b",
    "\\",
    "a;b",
    "é",
    "\u202e",
    "\ufeff",
    "\u2028",
    "x" * (MAX_ID_LENGTH + 1),
]
PLAUSIBLE: Final = ["a", "a..", ".a", "-", "~", "a.b", "x" * MAX_ID_LENGTH]
# Models the client knows without fetching (no GET /api/ai/models/{id} for them), and the
# one the fake describes: an enqueue of either goes further than the model fetch.
NOT_FETCHED: Final = frozenset(
    {"gpt-image-2", "gpt-image-2-edit", "kling-video-v2-6-pro-text-to-video", "flux-test"}
)

ids = st.one_of(
    st.sampled_from(HOSTILE),
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=MAX_ID_LENGTH + 12),
    st.from_regex(rf"[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}", fullmatch=True),
    st.uuids().map(str),
)


def expected_plausible(value: str) -> bool:
    """The rule, written out independently of the code under test."""
    return (
        1 <= len(value) <= MAX_ID_LENGTH
        and all(character in ALLOWED for character in value)
        and set(value) != {"."}
    )


# -- the judge ------------------------------------------------------------------------------


@settings(max_examples=500)
@given(ids)
def test_the_judge_accepts_exactly_the_documented_ids_and_names_the_field_in_one_line(
    value: str,
) -> None:
    assert plausible_id(value) is expected_plausible(value)
    if expected_plausible(value):
        assert check_id(value, field="model") is value
        assert segment(value) == value  # unreserved characters: the encoding changes nothing
        return
    with pytest.raises(InvalidParamsError) as info:
        check_id(value, field="model")
    assert info.value.field == "model"
    message = str(info.value)
    assert message.startswith("model ")
    assert message.isprintable()  # one line: no CR, LF, NUL or other control from the id


@pytest.mark.parametrize("value", [None, 7, b"abc", ["a"], 1.5])
def test_the_judge_refuses_what_is_not_a_string(value: object) -> None:
    assert not plausible_id(value)
    with pytest.raises(InvalidParamsError, match="must be a string") as info:
        check_id(value)
    assert info.value.field == "generation_id"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """Made once: an httpx client costs an SSL context (milliseconds) to make."""
    with httpx.Client(base_url=API + "/") as client:
        yield client


@settings(max_examples=300)
@given(value=ids, collection=st.sampled_from([QUEUE, HISTORY, MODELS]))
def test_a_built_path_is_the_collection_and_the_id_as_one_segment_or_nothing(
    http: httpx.Client, value: str, collection: str
) -> None:
    """``id_path``, merged with the base URL as httpx merges it for every request."""
    try:
        path = id_path(collection, value)
    except InvalidParamsError:
        assert not expected_plausible(value)
        return
    url = http.build_request("GET", path).url
    assert url.raw_path == f"/{collection}/{value}".encode()
    assert url.path.split("/")[1:] == [*collection.split("/"), value]
    assert url.query == b""
    assert url.fragment == ""
    assert url.host == "hub.oxen.test"


# -- every entry point -----------------------------------------------------------------------

Call = Callable[[AsyncClient, str], Awaitable[object]]


async def _reattach(client: AsyncClient, value: str) -> object:
    return await client.generation(value)


async def _download(client: AsyncClient, value: str) -> object:
    with tempfile.TemporaryDirectory() as directory:
        return await client.download(value, directory)


async def _generation_cancel(client: AsyncClient, value: str) -> object:
    await Generation(value, owner=client).cancel()
    return None


async def _generation_refresh(client: AsyncClient, value: str) -> object:
    return await Generation(value, owner=client).refresh()


# name: (call, the field named on refusal, the requests a plausible unknown id makes)
ENTRY_POINTS: Final[dict[str, tuple[Call, str, list[tuple[str, str]]]]] = {
    "get_generation": (
        lambda c, i: c.get_generation(i),
        "generation_id",
        [("GET", QUEUE)],
    ),
    "get_generation_details": (
        lambda c, i: c.get_generation_details(i),
        "generation_id",
        [("GET", HISTORY)],
    ),
    "cancel": (lambda c, i: c.cancel(i), "generation_id", [("DELETE", QUEUE)]),
    "generation": (_reattach, "generation_id", [("GET", QUEUE)]),
    "download": (_download, "generation_id", [("GET", QUEUE)]),
    "read": (lambda c, i: c.read(i), "generation_id", [("GET", QUEUE)]),
    "Generation.cancel": (_generation_cancel, "generation_id", [("DELETE", QUEUE)]),
    "Generation.refresh": (_generation_refresh, "generation_id", [("GET", QUEUE)]),
    "get_model": (lambda c, i: c.get_model(i), "model", [("GET", MODELS)]),
    # The model fetch behind validate= (an untyped model's schema) and behind pricing.
    "enqueue": (lambda c, i: c.enqueue(i, prompt="an ox"), "model", [("GET", MODELS)]),
    "estimate_cost": (
        lambda c, i: c.estimate_cost(i, validate=False),
        "model",
        [("GET", MODELS)],
    ),
}


async def _outcomes(values: list[Any]) -> list[tuple[str, Any, BaseException | None, list[Any]]]:
    """Each entry point with each id (a string, or not: the tests' hostile values), on one
    client: (name, id, error, requests it made)."""
    api = FakeAPI()
    results = []
    async with fake_client(api) as client:
        for value in values:
            for name, (call, _, _) in ENTRY_POINTS.items():
                before = len(api.requests)
                error: BaseException | None = None
                try:
                    with anyio.fail_after(5):
                        await call(client, value)
                except Exception as exc:
                    error = exc
                results.append((name, value, error, api.requests[before:]))
    return results


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40)
@given(st.lists(ids, min_size=1, max_size=6))
def test_every_entry_point_refuses_an_implausible_id_unsent_or_sends_it_as_one_segment(
    backend: str, values: list[str]
) -> None:
    assume(not NOT_FETCHED.intersection(values))
    for name, value, error, requests in anyio.run(_outcomes, values, backend=backend):
        _, field, expected = ENTRY_POINTS[name]
        if not expected_plausible(value):
            assert isinstance(error, InvalidParamsError), (name, value, error)
            assert error.field == field, (name, value)
            assert requests == [], (name, value)
            continue
        assert not (isinstance(error, InvalidParamsError) and "cannot" in str(error)), error
        sent = [(r.method, r.url.raw_path) for r in requests]
        assert sent == [(m, f"/{c}/{value}".encode()) for m, c in expected], (name, value)
        for request in requests:
            assert request.url.host == "hub.oxen.test"
            assert request.url.query == b""
            assert request.headers["authorization"] == "Bearer test-key"


not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=20)
@given(st.lists(not_strings, min_size=1, max_size=4))
def test_every_entry_point_refuses_an_id_that_is_not_a_string_unsent(
    backend: str, values: list[object]
) -> None:
    """None, bytes, numbers or lists where an id (or a model) belongs: a documented refusal
    naming the argument, never an ``AttributeError`` from deeper in, and nothing sent."""
    for name, value, error, requests in anyio.run(_outcomes, values, backend=backend):
        assert isinstance(error, InvalidParamsError), (name, value, error)
        assert error.field == ENTRY_POINTS[name][1], (name, value)
        assert requests == [], (name, value)


@pytest.mark.parametrize("value", ["..", ".", "%2e%2e", "a/b", "x?y", "a\r\nb", "a\x00b"])
def test_the_blocking_client_refuses_the_same_ids_the_same_way(value: str) -> None:
    api = FakeAPI()
    calls: list[Callable[[Client], object]] = [
        lambda c: c.cancel(value),
        lambda c: c.get_generation(value),
        lambda c: c.get_generation_details(value),
        lambda c: c.generation(value),
        lambda c: c.read(value),
        lambda c: c.download(value),
    ]
    with Client(**fake_options(api)) as client:
        for call in calls:
            with pytest.raises(InvalidParamsError) as info:
                call(client)
            assert info.value.field == "generation_id"
        with pytest.raises(InvalidParamsError) as info:
            client.get_model(value)
        assert info.value.field == "model"
    assert api.requests == []


@pytest.mark.anyio
async def test_a_batch_item_resumed_under_an_implausible_id_fails_alone_unsent() -> None:
    """A resumed batch (a manifest's ids): the bad item ends with the refusal, the others run."""
    api = FakeAPI()
    items = [BatchItem(params={}, generation_id=".."), BatchItem(params={"prompt": "ox"})]
    async with fake_client(api) as client:
        with anyio.fail_after(5):
            await client.batch("gpt-image-2", items)
    assert isinstance(items[0].error, InvalidParamsError)
    assert items[0].error.field == "generation_id"
    assert items[1].record is not None and items[1].record.status == "succeeded"
    _only_safe_requests(api)


@pytest.mark.anyio
async def test_an_enqueue_without_a_fetch_sends_its_model_as_given_in_the_body() -> None:
    """The documented decision: a model id in the JSON body (validate=False, no budget: no
    fetch) reaches no path, so the API judges it; the same model with a budget is refused
    before its pricing is fetched."""
    api = FakeAPI()
    async with fake_client(api) as client:
        generation = await client.enqueue("a/b", prompt="ox", validate=False)
        assert generation.id in {job.generation_id for job in api.jobs.values()}
    posts = [r for r in api.requests if r.method == "POST"]
    assert [json.loads(r.content)["model"] for r in posts] == ["a/b"]
    budgeted = FakeAPI()
    async with fake_client(budgeted, max_spend=10) as client:
        with pytest.raises(InvalidParamsError) as info:
            await client.enqueue("a/b", prompt="ox", validate=False)
    assert info.value.field == "model"
    assert budgeted.requests == []


# -- ids from the server ------------------------------------------------------------------


def _enqueue_answered_with(generation_id: str) -> FakeAPI:
    """A fake whose enqueue answers ``generation_id`` (the job it made has another)."""
    api = FakeAPI()

    def answer(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path == "/api/ai/queue":
            api.create(json.loads(request.content))
            row = {"generation_id": generation_id, "status": "queued"}
            return httpx.Response(200, json={"generations": [row]})
        return None

    api.before.append(answer)
    return api


def _only_safe_requests(api: FakeAPI) -> None:
    for request in api.requests:
        parts = request.url.raw_path.decode().split("/")[1:]
        assert parts[:2] == ["api", "ai"], request.url
        if len(parts) == 4:  # a collection and one id
            assert plausible_id(parts[3]), request.url
        else:
            assert len(parts) == 3 and (request.method, parts[2]) in {
                ("POST", "queue"),
                ("GET", "queue"),
                ("GET", "generations"),
            }, (request.method, request.url)


@pytest.mark.parametrize("server_id", [".", "..", "a/b", "x?y", "%2e%2e", "a\r\nb", ""])
@pytest.mark.parametrize("completion", ["poll", "shared"])
@pytest.mark.anyio
async def test_an_implausible_id_in_an_enqueue_answer_is_never_asked_about_or_cancelled(
    server_id: str, completion: str
) -> None:
    """``generate()`` whose job id is implausible ends with ``APIResponseValidationError``;
    the id never reaches a URL, not even the cancellation of the abandoned job."""
    api = _enqueue_answered_with(server_id)
    async with fake_client(api, completion=completion, shared_poll_interval=0.01) as client:
        with anyio.fail_after(5), pytest.raises(APIResponseValidationError):
            await client.generate("gpt-image-2", prompt="ox")
        assert client.pending == {}
    assert [r.method for r in api.requests].count("DELETE") == 0
    _only_safe_requests(api)


@pytest.mark.anyio
async def test_abandoned_jobs_with_implausible_ids_are_never_cancelled_upstream() -> None:
    """``ClientCore.cancel_upstream`` (generate()'s abandoned jobs): the plausible one gets
    its DELETE and its row read, the others nothing."""
    api = FakeAPI()
    async with fake_client(api) as client:
        generation = await client.enqueue("gpt-image-2", prompt="ox")
        done = client._core.cancel_upstream([".", "..", "a/b", "x?y", "", generation.id])
        assert done is not None
        with anyio.fail_after(5):
            await done.wait()
        assert client._core.cancel_upstream([".", ".."]) is None  # nothing to do at all
    cancels = [(r.method, r.url.raw_path) for r in api.requests if r.method == "DELETE"]
    assert cancels == [("DELETE", f"/api/ai/queue/{generation.id}".encode())]
    _only_safe_requests(api)


@pytest.mark.anyio
async def test_a_recovered_or_adopted_implausible_id_gets_a_failed_handle_never_a_watch() -> None:
    """``ClientCore.track``, the door to watching: a server id that cannot be a segment."""
    api = FakeAPI()
    async with fake_client(api) as client:
        core = client._core
        generation = core.track("a/b", model=None, params={}, deadline=None, fresh=False)
        assert generation.done()
        with pytest.raises(APIResponseValidationError, match="cannot be watched"):
            generation.result()
        assert "a/b" not in client.pending
    assert api.requests == []


def _session(answer: Callable[[httpx.Request], httpx.Response]) -> ApiSession:
    return ApiSession(
        base_url=httpx.URL(API + "/"),
        api_key="k",
        timeout=httpx.Timeout(5),
        max_concurrency=4,
        retry=RetryPolicy.no_wait(attempts=1),
        transport=httpx.MockTransport(answer),
    )


@settings(max_examples=100)
@given(st.lists(st.tuples(ids, st.sampled_from(["queued", "processing"])), max_size=8))
def test_the_pollers_statuses_hold_only_plausible_ids(rows: list[tuple[str, str]]) -> None:
    body = {"generations": [{"generation_id": i, "status": s} for i, s in rows]}
    session = _session(lambda request: httpx.Response(200, json=body))

    async def run() -> dict[str, str]:
        try:
            return await QueueEndpoints(session).active_statuses(None)
        finally:
            await session.aclose()

    statuses = anyio.run(run)
    assert statuses == {i: s for i, s in rows if expected_plausible(i)}


class _Stream:
    """A QueueAPI whose event stream answers ``body`` once, then nothing more."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        raise AssertionError("not asked: events mode")

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        raise AssertionError("not asked: events mode")

    @asynccontextmanager
    async def event_stream(self) -> AsyncIterator[httpx.Response]:
        yield httpx.Response(
            200,
            request=httpx.Request("GET", f"{API}/api/events"),
            headers={"content-type": "text/event-stream"},
            stream=httpx.ByteStream(self.body),
        )


def _event(generation_id: str) -> bytes:
    payload = {"generation_id": generation_id, "status": "succeeded", "media_type": "image"}
    return f"event: media_generation_completed\ndata: {json.dumps(payload)}\n\n".encode()


@pytest.mark.anyio
async def test_events_with_implausible_ids_are_skipped_and_never_crowd_out_an_early_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An event that overtook its enqueue's answer is kept for its generation; thousands of
    events whose ids no generation can have (more than the keep) do not push it out."""
    early = "00000000-0000-4000-8000-000000000001"
    flood = [_event(bad) for bad in ("a/b", ".", "..", "x?y") for _ in range(1100)]
    watcher = EventWatcher(
        _Stream(_event(early) + b"".join(flood)), backstop=None, fallback=False, connect_wait=5
    )
    caplog.set_level(logging.DEBUG, logger="oxen_queue")
    async with anyio.create_task_group() as task_group:
        watcher.start(task_group)
        with anyio.fail_after(WITHIN):
            await watcher.ready()
        await eventually(lambda: watcher.state == "down")  # the whole body has been read
        generation = Generation(early, owner=StubOwner(), model="gpt-image-2")
        watcher.track(generation, fresh=True)
        task_group.cancel_scope.cancel()
    assert generation.done()
    assert generation.result().status == "succeeded"
    assert any("not a plausible id" in r.getMessage() for r in caplog.records)
