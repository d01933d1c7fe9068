"""Issue 14: reconciliation believes no clock blindly, and no job a 2xx answer names is lost.

Property-based first (hypothesis, the same examples everywhere): an enqueue whose answer is lost
after its job was made, on a server whose ``Date`` headers and rows' ``enqueued_at`` are drawn
from honest, skewed and absurd values, makes exactly one job, counted at the server; a 2xx
answer of any shape keeps every id it names (pending, in the ledger, in ``recover()``, on the
error). Then the examples the issue names, collisions, a row about another id, and the clock's
own rules.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Final, cast

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue import (
    AmbiguousEnqueueError,
    APIResponseValidationError,
    AsyncClient,
    Generation,
    OxenError,
    PollPolicy,
)
from oxen_queue._api import parse_enqueue_answer
from oxen_queue._clock import EARLIEST, MAX_SKEW, TOLERANCE, ServerClock, Span
from oxen_queue._ids import plausible_id
from oxen_queue._ledger import Ledger, LedgerError, fingerprint, open_ledger

from .fakes import FakeAPI, FakeJob
from .helpers import fake_client

MODEL: Final = "gpt-image-2"
PROMPT: Final = "the lost one"
HOUR: Final = 3600
BACKENDS: Final = ["asyncio", "trio"]
QUIET = PollPolicy(initial=600.0, max_interval=600.0)  # no look at a generation during a test

DATES: Final[dict[str, Callable[[float], str | None]]] = {
    "absent": lambda now: None,
    "garbage": lambda now: "not a date at all",
    "honest": lambda now: formatdate(now, usegmt=True),
    "45s-ahead": lambda now: formatdate(now + 45, usegmt=True),
    "3h-ahead": lambda now: formatdate(now + 3 * HOUR, usegmt=True),
    "3h-behind": lambda now: formatdate(now - 3 * HOUR, usegmt=True),
    "40y-ahead": lambda now: formatdate(now + 40 * 365 * 86400, usegmt=True),
    "40y-behind": lambda now: formatdate(now - 40 * 365 * 86400, usegmt=True),
    "year-9999": lambda now: "Fri, 31 Dec 9999 23:59:59 GMT",
    "epoch": lambda now: "Thu, 01 Jan 1970 00:00:00 GMT",
}
ABSENT: Final = object()
STAMPS: Final[dict[str, Callable[[int], object]]] = {
    "honest": lambda t: t,
    "45s-ahead": lambda t: t + 45,
    "3h-ahead": lambda t: t + 3 * HOUR,
    "5h-behind": lambda t: t - 5 * HOUR,
    "null": lambda t: None,
    "negative": lambda t: -1,
    "zero": lambda t: 0,
    "year-9999": lambda t: 253_402_300_799,
    "huge": lambda t: 10**18,
    "float": lambda t: t + 0.5,
    "numeric-string": lambda t: str(t),
    "text": lambda t: "yesterday",
    "bool": lambda t: True,
    "absent": lambda t: ABSENT,
}
LOST_AFTER_CREATING: Final = ["timeout", "cut", "502", "504"]
REFUSED: Final = ["429", "503", "never-connected"]
LOSSES: Final = [*LOST_AFTER_CREATING, *REFUSED, "timeout-before-creating"]
# Identical requests made by someone outside the ledger before ours (true time), never as far
# before as a stamp kind is skewed (45 s, 3 h, 5 h): a server whose rows are stamped that far
# off and such a request together are the one case no window tells apart (see _reconcile).
FOREIGN_OFFSETS: Final = [-300, -1800, -2 * 86400]


class ClockedAPI:
    """The scripted fake, with every answer's ``Date`` and every row's ``enqueued_at`` drawn
    from a kind (the true times, through :data:`DATES` and :data:`STAMPS`)."""

    def __init__(self, date: str, stamp: str) -> None:
        self.api = FakeAPI(lifecycle=["queued"] * 1000)
        self._date = DATES[date]
        self._stamp = STAMPS[stamp]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = self.api.handle(request)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        date = self._date(time.time())
        if date is not None:
            headers["date"] = date
        content = response.content
        if request.method == "GET" and response.status_code == 200:
            data = response.json()
            rows = data.get("generations") if isinstance(data, dict) else None
            for row in rows if isinstance(rows, list) else [data]:
                if isinstance(row, dict) and "enqueued_at" in row:
                    value = self._stamp(row["enqueued_at"])
                    if value is ABSENT:
                        del row["enqueued_at"]
                    else:
                        row["enqueued_at"] = value
            content = json.dumps(data).encode()
        return httpx.Response(response.status_code, headers=headers, content=content)


def lose_first_post(api: FakeAPI, loss: str) -> None:
    """The first enqueue of :data:`PROMPT` is lost as ``loss`` says; later ones are answered."""

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST" or PROMPT.encode() not in request.content:
            return None
        if sum(PROMPT.encode() in r.content for r in api.requests if r.method == "POST") > 1:
            return None
        if loss == "429":
            return httpx.Response(429, headers={"Retry-After": "0"}, json={})
        if loss == "503":
            return httpx.Response(503, text="unavailable")
        if loss == "never-connected":
            raise httpx.ConnectError("refused", request=request)
        if loss == "timeout-before-creating":
            raise httpx.ReadTimeout("timed out before the server acted", request=request)
        api.create(json.loads(request.content))  # the job now exists
        if loss == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if loss == "cut":
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return httpx.Response(int(loss), text="<html>bad gateway</html>")

    api.before.append(hook)


@dataclass
class Lost:
    """What became of one enqueue of :data:`PROMPT`, counted at the server."""

    posts: int
    made: list[str]  # its jobs (foreign ones excluded)
    adopted: str | None = None
    error: AmbiguousEnqueueError | None = None
    foreign: list[str] = field(default_factory=list)


async def lose_an_answer(
    date: str, stamp: str, loss: str, *, own: int = 0, foreign: tuple[int, ...] = ()
) -> Lost:
    clocked = ClockedAPI(date, stamp)
    api = clocked.api
    foreign_ids: list[str] = []
    async with fake_client(api, transport=clocked.transport(), poll_policy=QUIET) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        for i in range(own):  # this client's earlier jobs: their rows may teach the clock
            await client.enqueue(MODEL, prompt=f"earlier {i}")
        for offset in foreign:
            answer = api.create({"model": MODEL, "prompt": PROMPT})
            generation_id = answer.json()["generations"][0]["generation_id"]
            api.jobs[generation_id].enqueued_at = int(time.time()) + offset
            foreign_ids.append(generation_id)
        lose_first_post(api, loss)
        result = Lost(posts=0, made=[], foreign=foreign_ids)
        try:
            generation = await client.enqueue(MODEL, prompt=PROMPT)
        except AmbiguousEnqueueError as exc:
            result.error = exc
        else:
            result.adopted = generation.id
    result.posts = sum(PROMPT.encode() in r.content for r in api.requests if r.method == "POST")
    result.made = [
        i
        for i, job in api.jobs.items()
        if job.params == {"prompt": PROMPT} and i not in foreign_ids
    ]
    return result


def check_never_twice(outcome: Lost, loss: str) -> None:
    """The invariant: one job at most per enqueue, and what it says of it is true."""
    assert len(outcome.made) <= 1, f"billed twice: {outcome}"
    if loss in LOST_AFTER_CREATING:
        assert outcome.posts == 1, f"sent again though its job existed: {outcome}"
        (made,) = outcome.made
        if outcome.error is None:
            assert outcome.adopted == made, f"adopted another request's job: {outcome}"
        else:
            assert made in outcome.error.candidate_ids, f"its own job not named: {outcome}"
    elif loss in REFUSED:
        assert outcome.posts == 2 and outcome.error is None
        assert [outcome.adopted] == outcome.made
    elif outcome.error is None:  # lost before the job was made: resent, or ambiguous
        assert [outcome.adopted] == outcome.made and outcome.posts == 2
    else:
        assert outcome.made == [] and outcome.posts == 1


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60)
@given(
    date=st.sampled_from(list(DATES)),
    stamp=st.sampled_from(list(STAMPS)),
    loss=st.sampled_from(LOSSES),
    own=st.sampled_from([0, 2]),
    foreign=st.lists(st.sampled_from(FOREIGN_OFFSETS), max_size=2, unique=True).map(tuple),
)
def test_whatever_the_clocks_say_an_enqueue_makes_at_most_one_job(
    backend: str, date: str, stamp: str, loss: str, own: int, foreign: tuple[int, ...]
) -> None:
    """Counted at the server: one job for a lost answer, adopted or named as a candidate."""

    async def run() -> Lost:
        return await lose_an_answer(date, stamp, loss, own=own, foreign=foreign)

    check_never_twice(anyio.run(run, backend=backend), loss)


@pytest.mark.anyio
@pytest.mark.parametrize("date", list(DATES))
async def test_no_date_header_however_absurd_makes_a_lost_answer_sent_twice(date: str) -> None:
    outcome = await lose_an_answer(date, "honest", "cut")
    check_never_twice(outcome, "cut")
    if date in ("absent", "garbage", "honest"):
        assert outcome.adopted is not None  # an honest row in an honest window: adopted


@pytest.mark.anyio
@pytest.mark.parametrize("stamp", list(STAMPS))
async def test_no_enqueued_at_however_absurd_makes_a_lost_answer_sent_twice(stamp: str) -> None:
    outcome = await lose_an_answer("honest", stamp, "timeout")
    check_never_twice(outcome, "timeout")


@pytest.mark.anyio
@pytest.mark.parametrize("stamp", list(STAMPS))
async def test_an_absurd_stamp_on_an_identical_older_row_stops_a_resend(stamp: str) -> None:
    """Lost before its job was made, with an identical row from a minute ago: resent only
    when that row's stamp can be believed (and places it outside the request's reach)."""
    outcome = await lose_an_answer("honest", stamp, "timeout-before-creating", foreign=(-60,))
    check_never_twice(outcome, "timeout-before-creating")
    believable = stamp in ("honest", "45s-ahead", "3h-ahead", "5h-behind")
    if not believable:
        assert outcome.error is not None and outcome.foreign[0] in outcome.error.candidate_ids


@pytest.mark.anyio
async def test_a_server_honestly_three_hours_off_gets_its_job_adopted() -> None:
    """Its Date and its rows agree: the window sits three hours ahead, the job is found."""
    outcome = await lose_an_answer("3h-ahead", "3h-ahead", "cut")
    assert outcome.posts == 1 and outcome.adopted == outcome.made[0]


@pytest.mark.anyio
async def test_rows_three_hours_off_their_date_header_are_ambiguous_never_resent() -> None:
    """A time-zone bug in the rows' clock: the window misses the job, the reach does not."""
    outcome = await lose_an_answer("honest", "3h-ahead", "cut")
    assert outcome.posts == 1 and outcome.error is not None
    assert outcome.error.candidate_ids == tuple(outcome.made)


@pytest.mark.anyio
async def test_this_clients_own_rows_verify_a_clock_its_date_header_gets_wrong() -> None:
    """The same time-zone bug, after two jobs of this client: their stamps, read in the look
    itself, teach the rows' clock, so the job is adopted."""
    outcome = await lose_an_answer("honest", "3h-ahead", "cut", own=2)
    assert outcome.posts == 1 and outcome.adopted == outcome.made[0]


@pytest.mark.anyio
@pytest.mark.parametrize("foreign", [-300, -2 * 86400])
async def test_a_verified_clock_resends_past_an_identical_request_made_minutes_before(
    foreign: int,
) -> None:
    """Two earlier jobs of this client verify the clock: an identical row five minutes (or two
    days) older is another request's, and the request that made nothing is sent again."""
    outcome = await lose_an_answer("honest", "honest", "timeout-before-creating", own=2,
                                   foreign=(foreign,))  # fmt: skip
    assert outcome.error is None and outcome.posts == 2 and outcome.made == [outcome.adopted]


@pytest.mark.anyio
async def test_date_headers_alone_never_resend_past_an_identical_request_of_the_day() -> None:
    """Without this client's own rows, an identical row five minutes old may be this request's
    on a rows' clock the Date header does not show: ambiguous, never sent again."""
    outcome = await lose_an_answer("honest", "honest", "timeout-before-creating", foreign=(-300,))
    assert outcome.posts == 1 and outcome.error is not None
    assert outcome.error.candidate_ids == tuple(outcome.foreign)


@pytest.mark.anyio
async def test_an_identical_request_a_minute_older_is_not_adopted_on_date_evidence() -> None:
    """The job made, a twin a minute older from outside the ledger: the window, from the look's
    own Date headers, takes the job and leaves the twin (none needed before the look)."""
    outcome = await lose_an_answer("honest", "honest", "cut", foreign=(-60,))
    assert outcome.posts == 1 and outcome.adopted == outcome.made[0]


@pytest.mark.anyio
async def test_with_nothing_matching_a_lost_request_is_resent_whatever_the_clocks() -> None:
    """A history without a row of the request's model and parameters can always be seen."""
    outcome = await lose_an_answer("year-9999", "null", "timeout-before-creating", own=2)
    assert outcome.error is None and outcome.posts == 2 and outcome.made == [outcome.adopted]


# -- every job a 2xx answer names --------------------------------------------------------

IMPLAUSIBLE: Final = ["../x", "", "a b", "x" * 129, "..", "q?x=1", "é"]
entry_kind = st.one_of(
    st.uuids().map(lambda u: ("id", str(u))),
    st.just(("repeat", "")),
    st.sampled_from(IMPLAUSIBLE).map(lambda i: ("implausible", i)),
    st.sampled_from([5, None, [], {}, 1.5, True]).map(lambda v: ("non-string", v)),
    st.just(("no-id", None)),
    st.sampled_from(["abc", 7, None, []]).map(lambda v: ("not-a-row", v)),
)


def answer_rows(kinds: list[tuple[str, Any]]) -> list[object]:
    rows: list[object] = []
    named: list[str] = []
    for kind, value in kinds:
        if kind == "id" or kind == "implausible":
            named.append(value)
            rows.append({"generation_id": value, "status": "queued"})
        elif kind == "repeat":
            if named:
                rows.append({"generation_id": named[-1], "status": "queued"})
        elif kind == "non-string":
            rows.append({"generation_id": value, "status": "queued"})
        elif kind == "no-id":
            rows.append({"status": "queued"})
        else:
            rows.append(value)
    return rows


def answer_with(api: FakeAPI, rows: list[object], *, hidden: bool) -> None:
    """The enqueue is answered ``rows``; the jobs with a plausible id in them exist, and with
    ``hidden``, one more per entry that names no usable id."""

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST":
            return None
        body = json.loads(request.content)
        model = body.pop("model")
        body.pop("num_generations", None)
        for row in rows:
            named = row.get("generation_id") if isinstance(row, dict) else None
            if plausible_id(named):
                assert isinstance(named, str)
                api.jobs[named] = FakeJob(named, model, dict(body), list(api.lifecycle))
            elif hidden and not isinstance(named, str):
                unnamed = str(uuid.uuid4())
                api.jobs[unnamed] = FakeJob(unnamed, model, dict(body), list(api.lifecycle))
        return httpx.Response(200, json={"generations": rows})

    api.before.append(hook)


@dataclass
class Answered:
    named: list[str]
    unwatchable: list[str]
    unidentified: int
    ids: list[str] | None = None
    error: OxenError | None = None
    pending: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    refused: bool = False
    recovered: set[str] = field(default_factory=set)
    paths: list[str] = field(default_factory=list)


async def answer_an_enqueue(
    kinds: list[tuple[str, Any]], count: int, *, hidden: bool, ledger: str | None
) -> Answered:
    rows = answer_rows(kinds)
    answer = parse_enqueue_answer({"generations": rows}, count)
    outcome = Answered(list(answer.ids), list(answer.unwatchable), answer.unidentified)
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_with(api, rows, hidden=hidden)
    options: dict[str, Any] = {"poll_policy": QUIET, "ledger": ledger}
    params: dict[str, Any] = {"prompt": "answered"}
    async with fake_client(api, **options) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        try:
            made = await client.enqueue_many(MODEL, count, **params)
        except (APIResponseValidationError, AmbiguousEnqueueError) as exc:
            outcome.error = exc
        else:
            outcome.ids = [g.id for g in made]
        outcome.pending = set(client.pending)
        the_ledger = client._core.enqueuer.ledger
        outcome.held = await the_ledger.claimed_ids(fingerprint(MODEL, params))
        unfinished = await the_ledger.unfinished()
        outcome.refused = any(intent.how == "refused" for intent in unfinished)
        if ledger is None:
            outcome.recovered = {g.id for g in await client.recover(wait=0)}
    if ledger is not None:  # a process after this one picks the jobs up
        async with fake_client(api, **options) as successor:
            outcome.recovered = {g.id for g in await successor.recover(wait=0)}
    outcome.paths = [r.url.path for r in api.requests if r.url.path.startswith("/api/ai/queue/")]
    return outcome


def check_every_named_job_kept(outcome: Answered, count: int) -> None:
    named = set(outcome.named)
    assert named <= outcome.pending, "a job the answer named is not watched"
    assert named <= outcome.held, "a job the answer named is not in the ledger"
    assert named <= outcome.recovered, "a job the answer named is not found by recover()"
    assert not outcome.refused, "the ledger calls an answered request refused"
    assert not set(outcome.unwatchable) & outcome.recovered
    assert all(path.rsplit("/", 1)[1] in named for path in outcome.paths), "an id in a URL"
    if outcome.error is not None:
        assert named <= set(getattr(outcome.error, "generation_ids", ())), outcome.error
        assert set(outcome.unwatchable) <= set(getattr(outcome.error, "generation_ids", ()))
    else:
        assert outcome.ids is not None and len(outcome.ids) == count
        assert named <= set(outcome.ids) and not outcome.unwatchable
        # Each entry naming no id stands for a job: complete only if each one was found.
        assert outcome.unidentified <= count - len(named)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=30)
@given(
    kinds=st.lists(entry_kind, max_size=6),
    count=st.integers(1, 4),
    hidden=st.booleans(),
)
def test_every_id_a_2xx_answer_names_is_watched_recorded_and_recoverable(
    backend: str, kinds: list[tuple[str, Any]], count: int, hidden: bool
) -> None:
    async def run() -> Answered:
        return await answer_an_enqueue(kinds, count, hidden=hidden, ledger=None)

    check_every_named_job_kept(anyio.run(run, backend=backend), count)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12)
@given(kinds=st.lists(entry_kind, max_size=6), count=st.integers(1, 4))
def test_every_id_a_2xx_answer_names_is_in_a_sqlite_ledger_and_its_successors_recover(
    backend: str,
    kinds: list[tuple[str, Any]],
    count: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    url = f"sqlite://{tmp_path_factory.mktemp('ledger')}/ledger.db"

    async def run() -> Answered:
        return await answer_an_enqueue(kinds, count, hidden=False, ledger=url)

    check_every_named_job_kept(anyio.run(run, backend=backend), count)


@pytest.mark.anyio
async def test_a_short_answer_keeps_the_named_job_and_adopts_the_unnamed_one() -> None:
    """Two asked, one named: the other exists, and is found as a lost answer's would be."""
    named, unnamed = str(uuid.uuid4()), str(uuid.uuid4())
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_with(api, [{"generation_id": named, "status": "queued"}], hidden=False)
    async with fake_client(api, poll_policy=QUIET) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        api.jobs[unnamed] = FakeJob(unnamed, MODEL, {"prompt": "two"}, ["queued"] * 1000)
        made = await client.enqueue_many(MODEL, 2, prompt="two")
        assert [g.id for g in made] == [named, unnamed]
        assert set(client.pending) == {named, unnamed}
    assert api.calls["POST /api/ai/queue"] == 1


@pytest.mark.anyio
async def test_a_short_answer_the_ledger_cannot_follow_names_the_jobs_it_made() -> None:
    """The ledger refuses the intent for the unnamed job: ambiguous, the named one kept."""
    named = str(uuid.uuid4())
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_with(api, [{"generation_id": named, "status": "queued"}], hidden=False)
    async with fake_client(api, poll_policy=QUIET) as client:
        ledger = client._core.enqueuer.ledger
        record_intent = ledger.record_intent
        calls = 0

        async def refuse_the_second(**kwargs: Any) -> str:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise LedgerError("disk full")
            return await record_intent(**kwargs)

        ledger.record_intent = refuse_the_second  # type: ignore[method-assign]
        with pytest.raises(AmbiguousEnqueueError, match="disk full") as info:
            await client.enqueue_many(MODEL, 2, prompt="two")
        assert set(client.pending) == {named}
    assert info.value.generation_ids == (named,)
    assert api.calls["POST /api/ai/queue"] == 1


@pytest.mark.anyio
async def test_a_long_answer_keeps_every_job_and_says_so() -> None:
    ids = [str(uuid.uuid4()) for _ in range(2)]
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_with(api, [{"generation_id": i, "status": "queued"} for i in ids], hidden=False)
    async with fake_client(api, poll_policy=QUIET) as client:
        with pytest.raises(APIResponseValidationError, match="2 entries for 1") as info:
            await client.enqueue(MODEL, prompt="one")
        assert set(client.pending) == set(ids)
    assert info.value.generation_ids == tuple(ids)
    assert api.calls["POST /api/ai/queue"] == 1


@pytest.mark.anyio
async def test_an_id_that_cannot_be_watched_is_named_and_never_put_in_a_url() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_with(api, [{"generation_id": "../../models", "status": "queued"}], hidden=False)
    async with fake_client(api, poll_policy=QUIET) as client:
        with pytest.raises(APIResponseValidationError, match="cannot be watched") as info:
            await client.enqueue(MODEL, prompt="one")
        assert dict(client.pending) == {}
    assert info.value.generation_ids == ("../../models",)
    assert [r.url.path for r in api.requests] == ["/api/ai/queue"]


# -- colliding ids -----------------------------------------------------------------------


def answer_always(api: FakeAPI, generation_id: str) -> None:
    """Every enqueue is answered with the same id (its job, made once, exists already)."""
    api.jobs[generation_id] = FakeJob(generation_id, MODEL, {}, ["queued"] * 1000)

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST":
            return None
        return httpx.Response(200, json={"generations": [{"generation_id": generation_id}]})

    api.before.append(hook)


@pytest.mark.anyio
async def test_two_concurrent_enqueues_answered_with_one_id_never_share_a_handle() -> None:
    shared = str(uuid.uuid4())
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_always(api, shared)
    results: list[Generation | OxenError] = []

    async def one(prompt: str) -> None:
        try:
            results.append(await client.enqueue(MODEL, prompt=prompt))
        except OxenError as exc:
            results.append(exc)

    async with fake_client(api, poll_policy=QUIET) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        async with anyio.create_task_group() as group:
            group.start_soon(one, "first")
            group.start_soon(one, "second")
        handles = [r for r in results if isinstance(r, Generation)]
        errors = [r for r in results if isinstance(r, OxenError)]
        assert [h.id for h in handles] == [shared] and client.pending[shared] is handles[0]
        (error,) = errors
        assert isinstance(error, AmbiguousEnqueueError | APIResponseValidationError)
        assert repr(shared) in str(error) and "already held" in str(error)
    assert api.calls["POST /api/ai/queue"] == 2  # each sent once, neither again


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["enqueued", "reattached"])
async def test_an_answer_naming_an_id_the_client_holds_is_an_error_naming_it(how: str) -> None:
    held = str(uuid.uuid4())
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_always(api, held)
    async with fake_client(api, poll_policy=QUIET) as client:
        client._core.enqueuer.reconciler._settle_delay = 0.0
        first = (
            await client.enqueue(MODEL, prompt="first")
            if how == "enqueued"
            else client.generation(held)
        )
        with pytest.raises(OxenError, match="already held") as info:
            await client.enqueue(MODEL, prompt="second")
        assert repr(held) in str(info.value)
        assert dict(client.pending) == {held: first}


@pytest.mark.anyio
async def test_an_id_another_client_of_the_shared_ledger_holds_is_not_taken_twice(
    tmp_path: Path,
) -> None:
    """The ledger, not this client's memory, knows the id: still an error naming it, and the
    job stays the first client's alone."""
    held = str(uuid.uuid4())
    api = FakeAPI(lifecycle=["queued"] * 1000)
    answer_always(api, held)
    options: dict[str, Any] = {"poll_policy": QUIET, "ledger": f"sqlite://{tmp_path}/l.db"}
    async with fake_client(api, **options) as first, fake_client(api, **options) as second:
        second._core.enqueuer.reconciler._settle_delay = 0.0
        mine = await first.enqueue(MODEL, prompt="same")
        with pytest.raises(OxenError, match="already held") as info:
            await second.enqueue(MODEL, prompt="same")
        assert repr(held) in str(info.value)
        assert "could not start" not in str(info.value)  # its own job was looked for
        assert dict(first.pending) == {held: mine} and dict(second.pending) == {}
        claimed = await second._core.enqueuer.ledger.claimed_ids(
            fingerprint(MODEL, {"prompt": "same"})
        )
    assert claimed == {held}
    assert api.calls["POST /api/ai/queue"] == 2


# -- a row about another id --------------------------------------------------------------


def created(api: FakeAPI, prompt: str) -> str:
    answer = api.create({"model": MODEL, "prompt": prompt})
    return str(answer.json()["generations"][0]["generation_id"])


@pytest.mark.anyio
async def test_a_row_fetched_for_one_id_that_carries_another_settles_neither() -> None:
    api = FakeAPI(lifecycle=["queued", "succeeded"])
    wrong_reads = 3

    def other_row(request: httpx.Request) -> httpx.Response | None:
        nonlocal wrong_reads
        if request.method == "GET" and request.url.path == f"/api/ai/queue/{mine}" and wrong_reads:
            wrong_reads -= 1
            row = {"generation_id": theirs, "status": "failed", "error_message": "not yours"}
            return httpx.Response(200, json=row)
        return None

    api.before.append(other_row)
    theirs = created(api, "theirs")
    mine = created(api, "mine")
    async with fake_client(api) as client:
        with pytest.raises(APIResponseValidationError, match="is about"):
            await client.get_generation(mine)
        with anyio.fail_after(5):
            record = await client.generation(mine)  # two more wrong rows, then its own
    assert record.generation_id == mine and record.status == "succeeded"
    assert wrong_reads == 0


@pytest.mark.anyio
async def test_a_history_row_fetched_for_one_id_that_carries_another_is_refused() -> None:
    api = FakeAPI()

    def envelope(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.startswith("/api/ai/generations/"):
            row = {"generation_id": "someone-else", "status": "succeeded"}
            return httpx.Response(200, json={"status": "success", "generation": row})
        return None

    api.before.append(envelope)
    async with fake_client(api) as client:
        with pytest.raises(APIResponseValidationError, match="someone-else"):
            await client.get_generation_details("mine")


# -- the clock's rules -------------------------------------------------------------------


def test_an_absurd_date_header_is_no_evidence_and_makes_the_reach_endless() -> None:
    clock = ServerClock()
    now = time.time()
    clock.observe_date("Fri, 31 Dec 9999 23:59:59 GMT", sent=now, received=now)
    assert not clock.known and clock.doubtful
    window = clock.window(Span(now, now + 1))
    assert window.reach_low == -math.inf and window.reach_high == math.inf
    assert window.holds(int(now))  # our own clock, give or take the fallback


def test_a_garbled_date_header_is_ignored_without_casting_doubt() -> None:
    clock = ServerClock()
    now = time.time()
    clock.observe_date("not a date at all", sent=now, received=now)
    assert not clock.known and not clock.doubtful


def test_a_date_header_hours_off_places_the_window_and_reaches_a_day_round_it() -> None:
    clock = ServerClock()
    now = time.time()
    for i in range(3):
        clock.observe_date(formatdate(now + 3 * HOUR + i), sent=now + i, received=now + i)
    window = clock.window(Span(now + 3, now + 4))
    assert window.holds(int(now + 3 * HOUR + 3)) and not window.holds(int(now + 3))
    assert window.reaches(int(now + 3)) and window.reaches(int(now - 20 * HOUR))
    assert not window.reaches(int(now - MAX_SKEW - 60))


def test_two_agreeing_stamps_of_our_own_jobs_verify_a_narrow_reach() -> None:
    clock = ServerClock()
    now = time.time()
    clock.observe_date(formatdate(now), sent=now, received=now)
    for i in (0, 5):  # the rows are stamped three hours ahead of the Date header
        clock.observe_row_stamp(int(now + 3 * HOUR + i), sent=now + i, received=now + i + 0.2)
    assert clock.verified
    window = clock.window(Span(now + 10, now + 11))
    assert window.holds(int(now + 3 * HOUR + 10))
    assert window.reach_high - window.high == TOLERANCE == window.low - window.reach_low
    assert not window.reaches(int(now + 10))


@pytest.mark.parametrize("stamp", [None, -1, 0, 253_402_300_799, 1.5e9, "1700000000", True])
def test_an_absurd_stamp_of_our_own_job_is_no_evidence_and_casts_doubt(stamp: object) -> None:
    clock = ServerClock()
    now = time.time()
    clock.observe_row_stamp(int(now), sent=now, received=now)
    clock.observe_row_stamp(int(now) + 1, sent=now + 1, received=now + 1)
    clock.observe_row_stamp(stamp, sent=now + 2, received=now + 2)
    assert clock.doubtful and not clock.verified
    assert clock.window(Span(now, now + 3)).reach_low == -math.inf


date_samples = st.lists(
    st.tuples(
        st.sampled_from(list(DATES)),
        st.floats(min_value=-5.0, max_value=5.0),  # our clock's steps between answers
    ),
    max_size=8,
)
stamp_samples = st.lists(st.sampled_from(list(STAMPS)), max_size=4)


@settings(max_examples=200)
@given(dates=date_samples, stamps=stamp_samples)
def test_any_evidence_gives_a_window_inside_its_reach_and_a_reach_round_our_clock(
    dates: list[tuple[str, float]], stamps: list[str]
) -> None:
    clock = ServerClock()
    now = time.time()
    for kind, step in dates:
        clock.observe_date(DATES[kind](now), sent=now + step, received=now + step + 0.1)
    for kind in stamps:
        clock.observe_row_stamp(STAMPS[kind](int(now)), sent=now, received=now + 0.1)
    window = clock.window(Span(now, now + 2))
    assert window.reach_low <= window.low <= window.high <= window.reach_high
    assert window.low >= EARLIEST - MAX_SKEW - 60 or window.reach_low == -math.inf
    if not clock.verified:  # the rows may be on our clock after all
        assert window.reaches(int(now)) and window.reaches(int(now + 2))


@given(kinds=st.lists(entry_kind, max_size=8), count=st.integers(1, 4))
def test_an_enqueue_answer_gives_up_every_id_it_names(
    kinds: list[tuple[str, Any]], count: int
) -> None:
    rows = answer_rows(kinds)
    answer = parse_enqueue_answer({"generations": rows}, count)
    strings = [r.get("generation_id") for r in rows if isinstance(r, dict)]
    strings = [s for s in strings if isinstance(s, str)]
    assert list(answer.ids) == list(dict.fromkeys(s for s in strings if plausible_id(s)))
    assert list(answer.unwatchable) == list(
        dict.fromkeys(s for s in strings if not plausible_id(s))
    )
    documented = len(rows) == count == len(answer.ids) and not answer.unidentified
    assert (answer.problems == ()) == documented


def test_an_enqueue_answer_without_a_generations_list_names_nothing_and_says_so() -> None:
    bodies: list[object] = [{}, [], None, {"generations": "x"}, {"generations": {"a": 1}}]
    for data in bodies:
        answer = parse_enqueue_answer(data, 1)
        assert answer.ids == () and answer.problems


# -- a sibling whose answer is cut while a look is judged --------------------------------------


async def settle_through(
    client: AsyncClient, ledger: object, intent: str, *, count: int, created: bool
) -> list[str] | None:
    """Settle a lost request for ``{"prompt": "same"}`` with the client's reconciler reading
    ``ledger`` (the client's own, wrapped to change a sibling's state at a precise read)."""
    reconciler = client._core.enqueuer.reconciler
    reconciler._ledger = cast("Ledger", ledger)
    reconciler._settle_delay = 0.0
    with anyio.fail_after(10):
        return await reconciler.settle(
            intent,
            model=MODEL,
            params={"prompt": "same"},
            count=count,
            span=Span(time.time() - 1, time.time() + 1),
            created=created,
        )


class _SiblingCutMidLook:
    """The ledger as a reconciliation sees it while a sibling (an identical request of another
    client) is sent after the reconciliation's wait, makes its job before the look reads the
    rows, and has its answer cut just after: at the first read of the ledger that follows."""

    def __init__(self, ledger: Any, api: FakeAPI) -> None:
        self._ledger = ledger
        self._api = api
        self.sibling: str | None = None
        self._cut = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def wait_idle(self, *args: Any, **kwargs: Any) -> None:
        await self._ledger.wait_idle(*args, **kwargs)
        if self.sibling is None:  # sent now: in flight, its job made
            self.sibling = await self._ledger.record_intent(
                model=MODEL, params={"prompt": "same"}, count=1, deadline=time.time() + 60
            )
            created(self._api, "same")

    async def _first_read_then_cut(self, name: str, *args: Any, **kwargs: Any) -> Any:
        found = await getattr(self._ledger, name)(*args, **kwargs)
        if not self._cut and self.sibling is not None:
            self._cut = True
            await self._ledger.mark_lost(self.sibling)
        return found

    async def lost(self, *args: Any, **kwargs: Any) -> Any:
        return await self._first_read_then_cut("lost", *args, **kwargs)

    async def in_flight(self, *args: Any, **kwargs: Any) -> Any:
        return await self._first_read_then_cut("in_flight", *args, **kwargs)


@pytest.mark.anyio
async def test_a_sibling_cut_between_the_ledgers_reads_is_awaited_not_ambiguous() -> None:
    """Before: the lost ones were read before the check for requests in flight, so a sibling
    whose answer was cut between the two was neither: its job was one too many, and the
    enqueue ambiguous. Each request now gets one of the two jobs."""
    api = FakeAPI(lifecycle=["queued"] * 1000)
    mine = created(api, "same")
    async with fake_client(api, poll_policy=QUIET) as client:
        ledger = client._core.enqueuer.ledger
        intent = await ledger.record_intent(
            model=MODEL, params={"prompt": "same"}, count=1, deadline=time.time() + 60
        )
        await ledger.mark_lost(intent)
        sibling = _SiblingCutMidLook(ledger, api)
        found = await settle_through(client, sibling, intent, count=1, created=True)
    assert sibling.sibling is not None and sibling._cut
    assert len(found or []) == 1 and set(found or []) <= set(api.jobs)
    assert len(api.jobs) == 2 and mine in api.jobs


# -- a sibling claiming first, a sibling whose owner is gone ----------------------------------


class _SiblingClaimsFirst:
    """The ledger as a reconciliation sees it while a sibling (a lost identical request of
    another client, which made nothing) claims from the same rows just before its claim."""

    def __init__(self, ledger: Any, sibling: str) -> None:
        self._ledger = ledger
        self._sibling = sibling
        self.sibling_took: list[str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def claim(self, intent_id: str, candidate_ids: list[str]) -> list[str]:
        if self.sibling_took is None:
            self.sibling_took = await self._ledger.claim(self._sibling, candidate_ids)
        return cast("list[str]", await self._ledger.claim(intent_id, candidate_ids))


@pytest.mark.anyio
async def test_a_partial_claim_is_never_followed_by_nothing_was_made() -> None:
    """A request of two whose sibling took one of its jobs just before its own claim holds the
    other. Before: the next looks dropped the job it held with the others held, found nothing,
    and concluded that nothing was made, so its caller sent it again and the held job was
    nobody's. Now the job it holds stays a candidate of the look: one of two, ambiguous, and
    named."""
    api = FakeAPI(lifecycle=["queued"] * 1000)
    made = [created(api, "same"), created(api, "same")]  # the request's two jobs
    async with fake_client(api, poll_policy=QUIET) as client:
        ledger = client._core.enqueuer.ledger
        intents = []
        for count in (2, 1):  # this request, then its sibling (which made nothing)
            intent = await ledger.record_intent(
                model=MODEL, params={"prompt": "same"}, count=count, deadline=time.time() + 60
            )
            await ledger.mark_lost(intent)
            intents.append(intent)
        mine, sibling = intents
        wrapper = _SiblingClaimsFirst(ledger, sibling)
        try:
            found = await settle_through(client, wrapper, mine, count=2, created=False)
        except AmbiguousEnqueueError as exc:
            error = exc
        else:
            pytest.fail(f"settled as {found!r} holding {await ledger.intent(mine)}")
    assert wrapper.sibling_took is not None and len(wrapper.sibling_took) == 1
    (kept,) = set(made) - set(wrapper.sibling_took)
    assert list(error.candidate_ids) == [kept]
    assert len(api.jobs) == 2


@pytest.mark.anyio
async def test_identical_requests_of_a_crashed_client_are_each_recovered(tmp_path: Path) -> None:
    """A crashed client's two identical requests, each with its job made and no answer:
    recover() settles them one after the other. Before: settling the first, the second (in
    flight, its owner gone) was neither busy nor lost, so its job was one too many ("made
    by a client outside the ledger") and both ended ambiguous, their jobs recovered by
    nobody. A gone owner's request in flight now awaits its rows as a lost one does."""
    url = f"sqlite://{tmp_path}/ledger.db"
    api = FakeAPI(lifecycle=["queued"] * 1000)
    crashed = open_ledger(url)
    assert crashed is not None
    async with crashed:
        sent = time.time() - 1
        for _ in range(2):
            await crashed.record_intent(
                model=MODEL,
                params={"prompt": "same"},
                count=1,
                deadline=time.time() + 0.2,
                sent_at=sent,
            )
        made = {created(api, "same"), created(api, "same")}
    await anyio.sleep(0.3)  # past the deadlines: the requests can no longer land
    async with fake_client(api, poll_policy=QUIET, ledger=url) as successor:
        successor._core.enqueuer.reconciler._settle_delay = 0.0
        with anyio.fail_after(10):
            recovered = {g.id for g in await successor.recover(wait=0)}
    assert recovered == made
    assert len(api.jobs) == 2
