"""Issue 14 at the server: absurd clocks never make an enqueue sent twice, and every job an
enqueue answer names (too few, too many, without ids) is kept. POSTs and jobs are counted at
the server.

The actions here let the emulator act and answer, then rewrite what it said: the ``Date``
header of every answer, the ``enqueued_at`` of every listed row, the enqueue answer's body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Final

import anyio
import pytest

from oxen_queue import (
    AmbiguousEnqueueError,
    APIResponseValidationError,
    AsyncClient,
    Generation,
    OxenError,
)
from oxen_queue.testing import Emulator, EmulatorConfig
from oxen_queue.testing._catalog import MODELS
from oxen_queue.testing._faults import DeliberateCut

from .server import Action, Captured, Exchange, HostileServer
from .support import API_KEY, PROMPT, make_client

pytestmark = pytest.mark.anyio

MODEL: Final = "gpt-image-2"
HOUR: Final = 3600
Rewrite = Callable[[Any], Any]


def _headers(captured: Captured, date: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in captured.headers if k.lower() != b"date"]
    if date is not None:
        headers.append((b"date", date.encode("latin-1")))
    return headers


def _restamp(body: bytes, stamp: Rewrite | None) -> bytes:
    if stamp is None:
        return body
    data = json.loads(body)
    rows = data.get("generations") if isinstance(data, dict) else None
    for row in rows if isinstance(rows, list) else [data]:
        if isinstance(row, dict) and "enqueued_at" in row:
            row["enqueued_at"] = stamp(row["enqueued_at"])
    return json.dumps(data).encode()


def rewritten(date: Callable[[], str | None] | None, stamp: Rewrite | None = None) -> Action:
    """The emulator's answer, with another ``Date`` header and rows' ``enqueued_at``."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        header = date() if date is not None else None
        body = _restamp(captured.body, stamp) if captured.status == 200 else captured.body
        headers = _headers(captured, header) if date is not None else captured.headers
        await ex.start(captured.status, headers, len(body))
        await ex.body(body, more=False)

    return action


def cut_after_creating(date: Callable[[], str | None]) -> Action:
    """The emulator creates the job; its headers go out (with this ``Date``), then the
    connection is cut mid-body."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        await ex.start(captured.status, _headers(captured, date()), len(captured.body))
        await ex.body(captured.body[: len(captured.body) // 2])
        raise DeliberateCut

    return action


def reshaped(change: Callable[[dict[str, Any], Exchange], dict[str, Any]]) -> Action:
    """The emulator creates the jobs; its answer's body goes out changed by ``change``."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        body = json.dumps(change(json.loads(captured.body), ex)).encode()
        await ex.start(captured.status, [(b"content-type", b"application/json")], len(body))
        await ex.body(body, more=False)

    return action


def every_answer(
    server: HostileServer, date: Callable[[], str | None], stamp: Rewrite | None
) -> None:
    """Every answer the client reads carries ``date``, every row ``stamp`` of its stamp."""
    for path in ("/api/ai/queue", "/api/ai/generations", "/api/ai/queue/{id}"):
        server.on("GET", path, rewritten(date, stamp))


def honest_date() -> str:
    return formatdate(usegmt=True)


DATES: Final[dict[str, Callable[[], str | None]]] = {
    "year-9999": lambda: "Fri, 31 Dec 9999 23:59:59 GMT",
    "epoch": lambda: "Thu, 01 Jan 1970 00:00:00 GMT",
    "decades-behind": lambda: "Mon, 01 Jan 1990 00:00:00 GMT",
    "far-future": lambda: "Wed, 01 Jan 2200 00:00:00 GMT",
    "garbage": lambda: "yesterday, around lunch",
    "absent": lambda: None,
    "3h-ahead": lambda: formatdate(time.time() + 3 * HOUR, usegmt=True),
}
STAMPS: Final[dict[str, Rewrite]] = {
    "null": lambda t: None,
    "negative": lambda t: -t,
    "zero": lambda t: 0,
    "year-9999": lambda t: 253_402_300_799,
    "huge": lambda t: 10**30,
    "float": lambda t: t + 0.25,
    "string": lambda t: str(t),
}


def check_one_job(server: HostileServer, outcome: Generation | OxenError) -> str:
    """One POST, one job; the outcome is that job, or an ambiguity naming it. Its id."""
    assert server.count("POST", "/api/ai/queue") == 1, "sent twice"
    (job,) = server.jobs
    if isinstance(outcome, Generation):
        assert outcome.id == job
    else:
        assert isinstance(outcome, AmbiguousEnqueueError), outcome
        assert job in outcome.candidate_ids
    return job


async def enqueue_once(client: AsyncClient, **params: Any) -> Generation | OxenError:
    client._core.enqueuer.reconciler._settle_delay = 0.0  # the second look at once
    with anyio.fail_after(20):
        try:
            return await client.enqueue(MODEL, prompt=PROMPT, **params)
        except OxenError as exc:
            return exc


@pytest.mark.parametrize("date", list(DATES))
async def test_a_cut_enqueue_behind_absurd_date_headers_is_never_sent_twice(
    server: HostileServer, date: str
) -> None:
    every_answer(server, DATES[date], None)
    server.on("POST", "/api/ai/queue", cut_after_creating(DATES[date]), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
    job = check_one_job(server, outcome)
    if date in ("absent", "garbage", "year-9999", "far-future"):
        # No evidence, or none believed: the window is our own clock's, and the rows are true.
        assert isinstance(outcome, Generation) and outcome.id == job


@pytest.mark.parametrize("stamp", list(STAMPS))
async def test_a_cut_enqueue_whose_rows_carry_absurd_stamps_is_ambiguous_never_resent(
    server: HostileServer, stamp: str
) -> None:
    every_answer(server, honest_date, STAMPS[stamp])
    server.on("POST", "/api/ai/queue", cut_after_creating(honest_date), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
    check_one_job(server, outcome)
    assert isinstance(outcome, AmbiguousEnqueueError)  # the look could not place its row
    assert "cannot be believed" in str(outcome)


async def test_an_enqueue_lost_on_a_server_whose_rows_are_absurd_is_resent_when_nothing_matches(
    server: HostileServer,
) -> None:
    """Absurd stamps on other requests' rows blind nobody: the request made nothing (it
    never reached the emulator), no row has its parameters, so it is sent again."""
    server.add_jobs(API_KEY, 3)  # other prompts, stamped absurdly like every row
    every_answer(server, DATES["year-9999"], STAMPS["null"])
    server.on("POST", "/api/ai/queue", cut_before_creating(), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
    assert isinstance(outcome, Generation)
    assert server.count("POST", "/api/ai/queue") == 2
    assert [j for j in server.jobs.values() if j.prompt == PROMPT] == [server.jobs[outcome.id]]


def cut_before_creating() -> Action:
    """The request is read, nothing is made, the connection is cut: a lost answer."""

    async def action(ex: Exchange) -> None:
        await ex.receive()
        raise DeliberateCut

    return action


async def test_a_server_honestly_three_hours_off_has_its_cut_enqueues_adopted() -> None:
    """Its Date headers and its rows agree, three hours ahead of us: each job is found."""
    config = EmulatorConfig(clock_offset=3 * HOUR, time_scale=0.05, unrelated_event_rate=0.0)
    with Emulator(config=config) as emulator:
        emulator.faults.enqueue_cut = 1.0
        async with AsyncClient(api_key=API_KEY, base_url=emulator.base_url) as client:
            with anyio.fail_after(20):
                made = [await client.enqueue(MODEL, prompt=f"{PROMPT} {i}") for i in range(3)]
            assert (client.stats.reconciled, client.stats.resent) == (3, 0)
        assert {g.id for g in made} == set(emulator.state.jobs)
        assert emulator.stats()["jobs_created"] == 3


async def test_rows_three_hours_off_the_date_header_make_a_cut_enqueue_ambiguous(
    server: HostileServer,
) -> None:
    every_answer(server, honest_date, lambda t: t + 3 * HOUR)
    server.on("POST", "/api/ai/queue", cut_after_creating(honest_date), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
    check_one_job(server, outcome)
    assert isinstance(outcome, AmbiguousEnqueueError) and "either clock" in str(outcome)


# -- answers that name too few, too many, or no ids --------------------------------------


async def test_a_short_answer_keeps_the_named_job_and_adopts_the_other(
    server: HostileServer,
) -> None:
    def first_only(data: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return {"generations": data["generations"][:1]}

    server.on("POST", "/api/ai/queue", reshaped(first_only), times=1)
    async with make_client(server) as client:
        with anyio.fail_after(20):
            made = await client.enqueue_many(MODEL, 2, prompt=PROMPT)
            records = [await g for g in made]
        assert client.stats.reconciled == 1
    assert server.count("POST", "/api/ai/queue") == 1
    assert {g.id for g in made} == set(server.jobs)
    assert [r.status for r in records] == ["succeeded", "succeeded"]


async def test_a_long_answer_keeps_every_job_it_names_and_says_so(server: HostileServer) -> None:
    def with_another(data: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        state = ex.app.state
        (extra,) = state.enqueue(state.user_for_key(API_KEY), MODELS[MODEL], {"prompt": PROMPT})
        return {"generations": [*data["generations"], {"generation_id": extra.generation_id}]}

    server.on("POST", "/api/ai/queue", reshaped(with_another), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
        assert isinstance(outcome, APIResponseValidationError)
        assert set(outcome.generation_ids) == set(server.jobs) and len(server.jobs) == 2
        with anyio.fail_after(20):
            # Reattached: each may have finished, and left client.pending, already.
            records = [await client.generation(i) for i in outcome.generation_ids]
    assert [r.status for r in records] == ["succeeded", "succeeded"]
    assert server.count("POST", "/api/ai/queue") == 1


async def test_an_answer_whose_rows_name_no_id_adopts_the_job(server: HostileServer) -> None:
    def without_ids(data: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return {"generations": [{"status": "queued"} for _ in data["generations"]]}

    server.on("POST", "/api/ai/queue", reshaped(without_ids), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
    assert isinstance(outcome, Generation) and [outcome.id] == list(server.jobs)
    assert server.count("POST", "/api/ai/queue") == 1


async def test_an_id_that_cannot_be_watched_is_named_and_never_requested(
    server: HostileServer,
) -> None:
    def escaping(data: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return {"generations": [{"generation_id": "../../models/x"}]}

    server.on("POST", "/api/ai/queue", reshaped(escaping), times=1)
    async with make_client(server) as client:
        outcome = await enqueue_once(client)
        assert isinstance(outcome, APIResponseValidationError)
        assert outcome.generation_ids == ("../../models/x",)
    assert [(r.method, r.path) for r in server.log] == [("POST", "/api/ai/queue")]


# -- a row about another id --------------------------------------------------------------


async def test_a_row_for_one_generation_carrying_another_settles_neither(
    server: HostileServer,
) -> None:
    mine, theirs = server.add_jobs(API_KEY, 2)
    wrong = reshaped(lambda data, ex: {**data, "generation_id": theirs.generation_id})
    server.on("GET", f"/api/ai/queue/{mine.generation_id}", wrong, times=4)
    async with make_client(server, completion="poll") as client:
        with pytest.raises(APIResponseValidationError, match="is about"):
            await client.get_generation(mine.generation_id)
        with anyio.fail_after(20):
            record = await client.generation(mine.generation_id)
    assert record.generation_id == mine.generation_id and record.status == "succeeded"
    assert server.count("GET", f"/api/ai/queue/{mine.generation_id}") >= 5  # 4 wrong, then its own
