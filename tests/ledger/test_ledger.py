"""Each ledger method's semantics, on SQLite and PostgreSQL, under asyncio and trio."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import anyio
import pytest

from oxen_queue._ledger import (
    InFlightError,
    LedgerError,
    fingerprint,
)
from oxen_queue._ledger._schema import LATEST_VERSION
from oxen_queue._ledger._sqlledger import SqlLedger
from oxen_queue._reconcile import Reconciler
from oxen_queue._recover import recover_ids

from .support import MODEL, PARAMS, forged_owner, ledger_for, new_intent

pytestmark = pytest.mark.anyio

FP = fingerprint(MODEL, PARAMS)


async def test_intent_reads_back_as_recorded(ledger: SqlLedger) -> None:
    """record_intent stores the exact request, in flight, owned by this live client."""
    sent = time.time() - 0.5
    intent_id = await ledger.record_intent(
        model=MODEL,
        params={"prompt": "ox ☀", "n": 1.0, "nested": {"b": 2, "a": [1, None]}},
        count=3,
        deadline=sent + 30,
        sent_at=sent,
        sent_at_server=sent - 45,
    )
    intent = await ledger.intent(intent_id)
    assert intent is not None
    assert intent.model == MODEL
    assert intent.params == {"prompt": "ox ☀", "n": 1.0, "nested": {"b": 2, "a": [1, None]}}
    assert isinstance(intent.params["n"], float)
    assert intent.fingerprint == fingerprint(MODEL, intent.params)
    assert (intent.count, intent.sent_at, intent.sent_at_server) == (3, sent, sent - 45)
    assert intent.deadline == sent + 30
    assert (intent.state, intent.how, intent.ids, intent.expired) == ("in_flight", None, (), False)
    assert intent.owner == ledger.owner
    assert intent.owner_alive
    assert await ledger.intent("no-such-intent") is None


async def test_record_intent_refuses_a_count_below_one(ledger: SqlLedger) -> None:
    with pytest.raises(ValueError, match="count"):
        await new_intent(ledger, count=0)


async def test_record_ids_answers_the_intent_in_order(ledger: SqlLedger) -> None:
    intent_id = await new_intent(ledger, count=3)
    assert await ledger.record_ids(intent_id, ["g3", "g1", "g2"]) == []
    intent = await ledger.intent(intent_id)
    assert intent is not None
    assert (intent.state, intent.ids, intent.pending) == (
        "answered",
        ("g3", "g1", "g2"),
        ("g3", "g1", "g2"),
    )
    assert await ledger.record_ids(intent_id, ["g3", "g1", "g2"]) == []  # again: harmless


async def test_record_ids_reports_ids_another_intent_holds(ledger: SqlLedger) -> None:
    first, second = await new_intent(ledger), await new_intent(ledger, count=2)
    await ledger.record_ids(first, ["g1"])
    assert await ledger.record_ids(second, ["g1", "g2"]) == ["g1"]
    intent = await ledger.intent(second)
    assert intent is not None and intent.ids == ("g2",)
    with pytest.raises(LedgerError, match="no intent"):
        await ledger.record_ids("no-such-intent", ["g9"])


async def test_record_outcome_keeps_the_first_terminal_status(ledger: SqlLedger) -> None:
    intent_id = await new_intent(ledger, count=2)
    await ledger.record_ids(intent_id, ["g1", "g2"])
    assert await ledger.record_outcome("g1", "processing")
    intent = await ledger.intent(intent_id)
    assert intent is not None and intent.pending == ("g1", "g2")
    assert await ledger.record_outcome("g1", "succeeded")
    assert not await ledger.record_outcome("g1", "cancelled")
    assert not await ledger.record_outcome("unknown", "failed")
    intent = await ledger.intent(intent_id)
    assert intent is not None and (intent.ids, intent.pending) == (("g1", "g2"), ("g2",))


async def test_mark_lost_only_from_an_unanswered_state(ledger: SqlLedger) -> None:
    lost, answered = await new_intent(ledger), await new_intent(ledger)
    await ledger.mark_lost(lost)
    await ledger.mark_lost(lost)  # twice: harmless
    intent = await ledger.intent(lost)
    assert intent is not None and intent.state == "lost"
    await ledger.record_ids(answered, ["g1"])
    with pytest.raises(LedgerError, match="answered"):
        await ledger.mark_lost(answered)
    with pytest.raises(LedgerError, match="no intent"):
        await ledger.mark_lost("no-such-intent")


async def test_mark_settled_records_how_and_ids(ledger: SqlLedger) -> None:
    resent, ambiguous, answered = [await new_intent(ledger) for _ in range(3)]
    await ledger.mark_settled(resent, "resent")
    await ledger.record_ids(answered, ["g1"])
    assert await ledger.mark_settled(ambiguous, "ambiguous", ["g1", "g2"]) == ["g1"]
    first, second = await ledger.intent(resent), await ledger.intent(ambiguous)
    assert first is not None and (first.state, first.how, first.ids) == ("settled", "resent", ())
    assert second is not None
    assert (second.state, second.how, second.ids) == ("settled", "ambiguous", ("g2",))
    with pytest.raises(LedgerError, match="answered"):
        await ledger.mark_settled(answered, "refused")


async def test_in_flight_lists_unanswered_requests_of_one_fingerprint(ledger: SqlLedger) -> None:
    mine, other, lost, answered = [await new_intent(ledger) for _ in range(4)]
    await new_intent(ledger, params={"prompt": "something else"})
    await ledger.mark_lost(lost)
    await ledger.record_ids(answered, ["g1"])
    found = await ledger.in_flight(FP, exclude_intent=mine)
    assert [i.intent_id for i in found] == [other]
    assert {i.intent_id for i in await ledger.in_flight(FP)} == {mine, other}


async def test_wait_idle_returns_at_once_when_nothing_is_in_flight(ledger: SqlLedger) -> None:
    mine = await new_intent(ledger)
    # A wait that did not return at once would take its timeout: 60 s, far past the guard.
    with anyio.fail_after(20):
        assert await ledger.wait_idle(FP, exclude_intent=mine, timeout=60) == []


async def test_wait_idle_wakes_when_another_request_is_answered(ledger: SqlLedger) -> None:
    mine, other = await new_intent(ledger), await new_intent(ledger)
    finished_at: list[float] = []

    async def wait() -> None:
        assert await ledger.wait_idle(FP, exclude_intent=mine, timeout=10) == []
        finished_at.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        # Ten of its polls (10 ms) with the other request in flight: a wait that ended in
        # them would be wrong (on a slow machine fewer pass, and the check only weakens).
        await anyio.sleep(0.1)
        assert not finished_at
        answered_at = anyio.current_time()
        await ledger.record_ids(other, ["g1"])
    # Woken by the answer, not by its 10 s timeout (a margin of ten times for a slow machine).
    assert finished_at[0] - answered_at < 5.0


async def test_wait_idle_sees_other_processes_by_polling(ledger_url: str) -> None:
    """A change written by another client (its own connection) ends the wait."""
    async with ledger_for(ledger_url) as waiter, ledger_for(ledger_url) as sender:
        mine, other = await new_intent(waiter), await new_intent(sender)
        async with anyio.create_task_group() as tg:

            async def answer() -> None:
                # Most likely while the waiter waits (if not, it finds the answer at once, and
                # the test still passes without proving the polling: never a false failure).
                await anyio.sleep(0.1)
                await sender.mark_lost(other)

            tg.start_soon(answer)
            with anyio.fail_after(5):
                assert await waiter.wait_idle(FP, exclude_intent=mine, timeout=10) == []


async def test_wait_idle_gives_up_at_its_timeout(ledger: SqlLedger) -> None:
    mine, other = await new_intent(ledger), await new_intent(ledger)
    started = anyio.current_time()
    busy = await ledger.wait_idle(FP, exclude_intent=mine, timeout=0.2)
    assert [i.intent_id for i in busy] == [other]
    # At its timeout: not before, and not at the 10 s a wrong unit or a missed one would take.
    assert 0.15 < anyio.current_time() - started < 5


async def test_wait_idle_ignores_requests_of_dead_owners(ledger_url: str) -> None:
    me = ledger_for(ledger_url)
    dead = ledger_for(ledger_url, owner=forged_owner(me.owner, dead=True))
    async with me, dead:
        await new_intent(dead)
        mine = await new_intent(me)
        assert [i.owner_alive for i in await me.in_flight(FP, exclude_intent=mine)] == [False]
        # Waiting on the dead owner's request would take the timeout: 60 s, past the guard.
        with anyio.fail_after(20):
            assert await me.wait_idle(FP, exclude_intent=mine, timeout=60) == []


async def test_claimed_ids_covers_every_intent_of_the_fingerprint(ledger: SqlLedger) -> None:
    first, second = await new_intent(ledger), await new_intent(ledger)
    other = await new_intent(ledger, params={"prompt": "another"})
    await ledger.record_ids(first, ["g1"])
    await ledger.mark_lost(second)
    await ledger.claim(second, ["g2"])
    await ledger.record_ids(other, ["g3"])
    assert await ledger.claimed_ids(FP) == {"g1", "g2"}
    assert await ledger.claimed_ids(FP, since=time.time() + 60) == set()


async def test_claim_takes_unheld_candidates_in_order(ledger: SqlLedger) -> None:
    answered, lost = await new_intent(ledger), await new_intent(ledger, count=2)
    await ledger.record_ids(answered, ["g1"])
    await ledger.mark_lost(lost)
    assert await ledger.claim(lost, ["g1", "g2", "g2"]) == ["g2"]  # partial: stays lost
    intent = await ledger.intent(lost)
    assert intent is not None and (intent.state, intent.how) == ("lost", None)
    assert await ledger.claim(lost, ["g3", "g4"]) == ["g2", "g3"]  # complete: adopted
    intent = await ledger.intent(lost)
    assert intent is not None and (intent.state, intent.how) == ("settled", "adopted")
    assert intent.ids == ("g2", "g3")
    with pytest.raises(LedgerError, match="settled"):
        await ledger.claim(lost, ["g5"])
    with pytest.raises(LedgerError, match="answered"):
        await ledger.claim(answered, ["g5"])


async def test_claim_refuses_while_a_live_request_is_in_flight(ledger: SqlLedger) -> None:
    """Its answer may name a candidate: nothing is taken until it lands."""
    lost, flying = await new_intent(ledger), await new_intent(ledger)
    await ledger.mark_lost(lost)
    with pytest.raises(InFlightError) as caught:
        await ledger.claim(lost, ["g1", "g2"])
    assert [i.intent_id for i in caught.value.intents] == [flying]
    assert await ledger.claimed_ids(FP) == set()
    await ledger.record_ids(flying, ["g1"])
    assert await ledger.claim(lost, ["g1", "g2"]) == ["g2"]


async def test_claim_ignores_requests_of_dead_owners(ledger_url: str) -> None:
    me = ledger_for(ledger_url)
    dead = ledger_for(ledger_url, owner=forged_owner(me.owner, dead=True))
    async with me, dead:
        await new_intent(dead)
        lost = await new_intent(me)
        await me.mark_lost(lost)
        assert await me.claim(lost, ["g1"]) == ["g1"]


async def test_concurrent_claims_take_each_id_once(ledger: SqlLedger) -> None:
    """32 lost requests of one fingerprint race for 20 rows: each row goes to one."""
    intents = [await new_intent(ledger) for _ in range(32)]
    for intent_id in intents:
        await ledger.mark_lost(intent_id)
    candidates = [f"g{i}" for i in range(20)]
    held: dict[str, list[str]] = {}

    async def claim(intent_id: str) -> None:
        held[intent_id] = await ledger.claim(intent_id, candidates)

    async with anyio.create_task_group() as tg:
        for intent_id in intents:
            tg.start_soon(claim, intent_id)
    taken = [g for ids in held.values() for g in ids]
    assert sorted(taken) == sorted(candidates)
    assert await ledger.claimed_ids(FP) == set(candidates)


async def test_stale_intents_need_a_past_deadline_and_a_gone_owner(ledger_url: str) -> None:
    async with ledger_for(ledger_url) as me:
        live_due = await new_intent(me, deadline_in=-1)
        async with ledger_for(ledger_url, owner=forged_owner(me.owner, dead=True)) as dead:
            dead_due = await new_intent(dead, deadline_in=-1)
            dead_later = await new_intent(dead, deadline_in=60)
            dead_lost = await new_intent(dead, deadline_in=-1)
            await dead.mark_lost(dead_lost)
            dead_answered = await new_intent(dead, deadline_in=-1)
            await dead.record_ids(dead_answered, ["g1"])
        stale = {i.intent_id for i in await me.stale_intents()}
        assert stale == {dead_due, dead_lost}
        later = {i.intent_id for i in await me.stale_intents(now=time.time() + 120)}
        assert later == {dead_due, dead_later, dead_lost}
        assert live_due not in later


async def test_a_cleanly_closed_owner_is_gone_at_once(ledger_url: str) -> None:
    async with ledger_for(ledger_url) as me:
        async with ledger_for(ledger_url) as other:
            intent_id = await new_intent(other, deadline_in=-1)
            assert await me.stale_intents() == []
        assert [i.intent_id for i in await me.stale_intents()] == [intent_id]


async def test_take_over_moves_an_orphan_to_one_client(ledger_url: str) -> None:
    async with ledger_for(ledger_url) as me, ledger_for(ledger_url) as rival:
        async with ledger_for(ledger_url, owner=forged_owner(me.owner, dead=True)) as dead:
            due = await new_intent(dead, deadline_in=-1)
            not_due = await new_intent(dead, deadline_in=60)
            answered = await new_intent(dead, deadline_in=60)
            await dead.record_ids(answered, ["g1"])
        live = await new_intent(rival, deadline_in=-1)
        assert await me.take_over(live) is None  # its owner is alive
        assert await me.take_over(not_due) is None  # its request may still be in flight
        taken = await me.take_over(due)
        assert taken is not None
        assert (taken.state, taken.owner, taken.owner_alive) == ("lost", me.owner, True)
        assert await rival.take_over(due) is None  # now owned by a live client
        assert await me.stale_intents() == []
        kept = await rival.take_over(answered)
        assert kept is not None and (kept.state, kept.ids) == ("answered", ("g1",))
        assert await me.take_over("no-such-intent") is None


async def test_concurrent_take_overs_have_one_winner(ledger_url: str) -> None:
    async with ledger_for(ledger_url, owner=None) as probe:
        dead_owner = forged_owner(probe.owner, dead=True)
    async with ledger_for(ledger_url, owner=dead_owner) as dead:
        due = await new_intent(dead, deadline_in=-1)
    judges = [ledger_for(ledger_url) for _ in range(6)]
    wins: list[str] = []
    tries: list[str] = []
    everyone_tried = anyio.Event()

    async def judge(ledger: SqlLedger) -> None:
        # Every judge stays open until all have tried: a winner that closed would leave
        # the intent orphaned again, rightly takeable.
        async with ledger:
            if await ledger.take_over(due) is not None:
                wins.append(ledger.owner.client_id)
            tries.append(ledger.owner.client_id)
            if len(tries) == len(judges):
                everyone_tried.set()
            await everyone_tried.wait()

    async with anyio.create_task_group() as tg:
        for ledger in judges:
            tg.start_soon(judge, ledger)
    assert len(wins) == 1


async def test_unfinished_lists_what_recover_needs(ledger_url: str) -> None:
    async with ledger_for(ledger_url) as me:
        async with ledger_for(ledger_url, owner=forged_owner(me.owner, dead=True)) as dead:
            flying = await new_intent(dead)
            lost = await new_intent(dead)
            await dead.mark_lost(lost)
            pending = await new_intent(dead, count=2)
            await dead.record_ids(pending, ["g1", "g2"])
            await dead.record_outcome("g1", "succeeded")
            done = await new_intent(dead)
            await dead.record_ids(done, ["g3"])
            await dead.record_outcome("g3", "failed")
            resent = await new_intent(dead)
            await dead.mark_settled(resent, "resent")
        mine = await new_intent(me)
        everything = await me.unfinished()
        assert [i.intent_id for i in everything] == [flying, lost, pending, mine]
        assert everything[2].pending == ("g2",)
        orphans = await me.unfinished(orphaned_only=True)
        assert [i.intent_id for i in orphans] == [flying, lost, pending]


class _NoReconciler:
    """A reconciler never asked: nothing in these tests is stale."""

    async def settle(self, *args: Any, **kwargs: Any) -> list[str] | None:
        raise AssertionError("nothing to settle")


async def test_recover_keeps_to_its_wait_however_long_saying_it_takes(ledger_url: str) -> None:
    """A gone client's request due in a minute, and recover() told to wait 0.5 s: it says
    once that it waits, returns once the 0.5 s are over, and says what is left to settle,
    even when a log handler takes longer than the wait to say it (the sleep that followed
    was computed from a second reading of the clock, past the end of the wait: negative,
    which anyio refuses with a ValueError)."""
    said: list[str] = []

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())
            # A slow terminal, a log shipped over the network: past the end of the wait the
            # message states (however long the reads before it took), not a fixed time.
            if len(said) == 1:
                assert isinstance(record.args, tuple)
                time.sleep(cast("float", record.args[-1]) + 0.05)

    handler = Slow()
    logger = logging.getLogger("oxen_queue")
    async with ledger_for(ledger_url) as me:
        async with ledger_for(ledger_url, owner=forged_owner(me.owner, dead=True)) as dead:
            await new_intent(dead, deadline_in=60)
        logger.addHandler(handler)
        try:
            reconciler = cast("Reconciler", _NoReconciler())
            assert await recover_ids(me, reconciler, wait=0.5) == []
        finally:
            logger.removeHandler(handler)
    first, last = said
    assert first.startswith("recover(): 1 request(s) a gone client sent may still reach")
    stated = first.split("waiting up to ")[1].split(" s,")[0]
    assert 0 < float(stated) <= 0.5  # the wait asked for (not "0"), not the minute to the deadline
    assert last.startswith("recover(): 1 request(s) of gone clients are still within")


async def test_prune_forgets_old_finished_intents_only(ledger: SqlLedger) -> None:
    finished, pending, flying = [await new_intent(ledger) for _ in range(3)]
    await ledger.record_ids(finished, ["g1"])
    await ledger.record_outcome("g1", "succeeded")
    await ledger.record_ids(pending, ["g2"])
    assert await ledger.prune(before=time.time() - 60) == 0
    assert await ledger.prune(before=time.time() + 60) == 1
    assert await ledger.intent(finished) is None
    assert await ledger.claimed_ids(FP) == {"g2"}
    assert await ledger.intent(flying) is not None


async def test_reopening_keeps_the_schema_and_the_data(ledger_url: str) -> None:
    async with ledger_for(ledger_url) as first:
        intent_id = await new_intent(first)
    async with ledger_for(ledger_url) as second:
        found = await second.intent(intent_id)
        assert found is not None and not found.owner_alive  # closed


async def test_a_newer_schema_is_refused(ledger_url: str) -> None:
    async with ledger_for(ledger_url) as first:
        store = first._store
        await anyio.to_thread.run_sync(
            lambda: store._auto(
                lambda s: s.run(
                    "INSERT INTO oxen_ledger_schema VALUES (?, {now})",
                    (LATEST_VERSION + 1,),
                )
            )
        )
    with pytest.raises(LedgerError, match="newer"):
        async with ledger_for(ledger_url):
            pass


async def test_lifecycle_errors(ledger_url: str) -> None:
    ledger = ledger_for(ledger_url)
    with pytest.raises(LedgerError, match="not open"):
        await new_intent(ledger)
    async with ledger:
        with pytest.raises(LedgerError, match="twice"):
            await ledger.open()
    await ledger.aclose()  # idempotent
    with pytest.raises(LedgerError, match="not open"):
        await ledger.intent("x")
    assert "closed" in repr(ledger)


async def test_the_lease_is_renewed_while_open(ledger_url: str) -> None:
    """An owner on another host stays alive past its lease only by renewing it."""
    async with ledger_for(ledger_url) as me:
        # A 1 s lease, renewed every third of it by a thread: judged gone wrongly only if that
        # thread went 0.67 s without running.
        other = ledger_for(ledger_url, owner=forged_owner(me.owner, other_host=True), lease_ttl=1.0)
        async with other:
            intent_id = await new_intent(other, deadline_in=-1)
            await anyio.sleep(1.5)  # the behaviour: past its first lease, alive by renewals
            found = await me.intent(intent_id)
            assert found is not None and found.owner_alive
            assert await me.stale_intents() == []
            other._stop.set()  # the lease thread stops: as if the host were cut off

            async def stale() -> list[str]:
                return [i.intent_id for i in await me.stale_intents()]

            with anyio.fail_after(10):  # about a lease (1 s)
                while await stale() != [intent_id]:
                    await anyio.sleep(0.05)  # polling: the ledger announces nothing


async def test_an_intent_taken_over_is_settled_by_its_new_owner_only(ledger_url: str) -> None:
    """A client judged gone (its lease ran out) learns it when it tries to settle."""
    async with ledger_for(ledger_url) as judge:
        cut_off = ledger_for(ledger_url, owner=forged_owner(judge.owner, other_host=True))
        async with cut_off:
            intent_id = await new_intent(cut_off, deadline_in=-1)
            await cut_off.mark_lost(intent_id)
            cut_off._stop.set()  # its lease thread stops: as if the host were cut off
            await judge._run(judge._store._auto, _expire_leases)
            taken = await judge.take_over(intent_id)
            assert taken is not None and taken.owner == judge.owner
            for attempt in (
                cut_off.claim(intent_id, ["g1"]),
                cut_off.mark_settled(intent_id, "resent"),
                cut_off.mark_lost(intent_id),
            ):
                with pytest.raises(LedgerError, match="taken over"):
                    await attempt
            assert await judge.claim(intent_id, ["g1"]) == ["g1"]


def _expire_leases(session: Any) -> int:
    return int(session.run("UPDATE oxen_ledger_clients SET lease_until = 0"))


@pytest.mark.parametrize("kind", ["memory", "sql"])
async def test_a_part_claimed_request_settled_keeps_holding_what_it_claimed(
    ledger: SqlLedger, kind: str
) -> None:
    """Both ledgers alike: the job a claim that fell short took stays held when the request is
    settled (ambiguous), so no later request adopts the job an error named. Before, the
    memory ledger forgot it."""
    from oxen_queue._ledger._memory import MemoryLedger

    chosen: Any = ledger if kind == "sql" else MemoryLedger()
    if kind == "memory":
        await chosen.open()
    intent = await new_intent(chosen, count=2)
    await chosen.mark_lost(intent)
    assert await chosen.claim(intent, ["g1"]) == ["g1"]  # one of two: it stays lost
    assert await chosen.mark_settled(intent, "ambiguous") == []  # as the enqueue settles it
    assert "g1" in await chosen.claimed_ids(fingerprint(MODEL, PARAMS))
    if kind == "memory":
        await chosen.aclose()
