"""Reconciling a request whose answer was lost: which rows on the server are its jobs?

The API has no idempotency key, so a job is recognised by its model and exact parameters
(rows carry exactly the submitted ones), made within the request's window on the *server's*
clock (`_clock`). What tells two identical requests apart is the enqueue ledger
(`_ledger`), shared by every client that may enqueue with the same key:

a. wait until no other request with the same fingerprint is in flight, in any process
   sharing the ledger (its answer would name some of the same rows), unless its owner is gone
   (its answer can never be recorded);
b. look at the active rows, then the history back to the window, and judge every row that
   nothing else already holds (this client's jobs, ids any other request of the ledger holds;
   the ids this request holds, from a claim that fell short, stay candidates);
c. claim the candidates, atomically (two claimers never get the same row), when they can be
   told apart: as many as this request and the other ones with the same fingerprint
   await (lost, or in flight with their owner gone). More than that means rows made by
   clients outside the ledger (the Oxen web UI, another key's scripts): the outcome is
   **ambiguous** and
   [`AmbiguousEnqueueError`][oxen_queue.AmbiguousEnqueueError] names the candidates. Too few on two
   looks a moment apart: ambiguous as well.
d. No candidate on two looks a moment apart, each of which *could see*: the request created
   nothing, and the caller may send it again (unless a 2xx answer had begun, which proves a
   job exists: ambiguous).

**How a row is judged** (`Reconciler._judge`). A row of another model, or with other
parameters, is another request's. A row of this model and these parameters is:

* a *candidate*, when its ``enqueued_at`` can be believed (``_clock.row_stamp``: an integer
  server second, not before 2020, not a day past our clock) and lies in the window, and its
  id is plausible (``_ids.plausible_id``: it may be watched);
* *nearby*, when its stamp can be believed and lies outside the window but within the
  window's *reach* (where the request's rows could be if the clock estimate were wrong);
* *blind*, when its stamp cannot be believed (null, negative, a float, a string, year 9999),
  or its id is not plausible, or the entry is not a row at all: the look cannot place it;
* another request's, when its stamp can be believed and lies beyond the reach.

**What a look concludes.**

* Adopt: the candidates are exactly what is awaited, and no row is blind. (Nearby rows do not
  stop this: the window is the best estimate, and a row farther off is most likely an earlier
  identical request. The one case this gets wrong, a server whose rows are stamped hours off
  its own ``Date`` header and an identical request made just that many hours earlier, takes
  that request's job: it is never a second job.)
* Ambiguous, after a second look: blind rows (the look did not see them), candidates too few,
  or none but nearby rows. Candidates too many: ambiguous at once.
* "Nothing was made", the only verdict that lets the caller send the request again: no
  candidate, no nearby and no blind row, and the rows were read back to the start of the
  reach (or to the end of the history), on two looks in a row. A look that met a row of this
  model and these parameters that it cannot place, or the history it could not read far
  enough back, did not see: it never concludes that nothing was made. So an absurd
  ``enqueued_at`` (``None``, ``-1``, year 9999, ``"abc"``), an absurd ``Date`` header (which
  makes the reach endless, see ``_clock``), or a clock hours off in one of them can make an
  enqueue ambiguous; none of them can make it sent twice.

A history that holds no row of this model and these parameters can always be seen: nothing of
the request's is there, whatever the clocks say.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._api import row_params
from ._clock import row_stamp
from ._exceptions import AmbiguousEnqueueError
from ._ids import plausible_id
from ._ledger import InFlightError, Ledger, fingerprint
from ._params import QUEUE_FIELDS

if TYPE_CHECKING:
    from ._api import QueueEndpoints
    from ._clock import ServerClock, Span, Window

__all__ = ["Reconciler"]

logger = logging.getLogger("oxen_queue")

_HISTORY_PAGE: Final = 1000  # the largest page_size /api/ai/generations allows
_MAX_HISTORY_PAGES: Final = 20  # 20,000 rows: a lost answer's job is among the newest
_SENT_TIMES: Final = 4096  # own requests whose rows can still teach the clock
_LOOKS: Final = 2  # looks a moment apart before a verdict of "ambiguous" or "nothing made"


class _Matcher:
    """Whether a row carries exactly a request's parameters (computed once per reconciliation).

    Rows carry exactly the parameters that were submitted ("present only if they were
    submitted"): equal sets, not a superset, so another request's job never matches.
    """

    __slots__ = ("_model_params", "_queue_params")

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._model_params = _canonical({k: v for k, v in params.items() if k not in QUEUE_FIELDS})
        self._queue_params = [(k, _canonical(v)) for k, v in params.items() if k in QUEUE_FIELDS]

    def __call__(self, row: Mapping[str, Any]) -> bool:
        if _canonical(row_params(row)) != self._model_params:
            return False
        return all(_canonical(row.get(k)) == v for k, v in self._queue_params)


class _History:
    """One model's history, read page by page, newest first whatever order the server uses.

    The order is not documented, so it is read from the first page and reversed at most once
    (the newest rows are then on the last page). At most `_MAX_HISTORY_PAGES` are read.
    """

    def __init__(self, api: QueueEndpoints, model: str) -> None:
        self._api = api
        self._model = model
        self.entries: list[object] = []
        self.pages = 0
        self._next: int | None = 1  # the next page to read; None once all are read
        self._step = 1
        self._reversed = False
        self._forward_only = False  # oldest first, with no page count to start from the end
        self._oldest = math.inf  # the oldest believable stamp on pages read newest first

    def reached(self, bound: float) -> bool:
        """Whether every row stamped at or after ``bound`` has been read."""
        return self._next is None or self._oldest < bound

    async def read_until(self, bound: float) -> bool:
        """Read on until `reached`; ``False`` if the page limit came first."""
        while not self.reached(bound):
            if self.pages >= _MAX_HISTORY_PAGES:
                return False
            await self._read()
        return True

    async def _read(self) -> None:
        page = self._next
        assert page is not None
        found = await self._api.history_slice(model=self._model, page=page, page_size=_HISTORY_PAGE)
        self.pages += 1
        self.entries.extend(found.rows)
        if not found.rows:  # past the end
            self._next = None
            return
        now = time.time()
        stamps = [
            stamp
            for row in found.rows
            if isinstance(row, Mapping)
            and (stamp := row_stamp(row.get("enqueued_at"), now=now)) is not None
        ]
        last = found.total_pages
        if page == 1 and len(stamps) > 1 and stamps[0] < stamps[-1]:  # oldest first
            if last is not None and last > 1:
                self._next, self._step, self._reversed = last, -1, True
                return  # page 1 holds the oldest rows: they bound nothing
            self._forward_only = True
        if stamps and not self._forward_only:
            self._oldest = min(self._oldest, *stamps)
        following = page + self._step
        over = last is not None and following > last
        if over or following < 1 or (self._reversed and following == 1):
            self._next = None
        else:
            self._next = following


class _Look:
    """What one look at the server found for a request, judged (see the module docstring)."""

    def __init__(self, history: _History, window: Window) -> None:
        self.history = history
        self.window = window
        self.candidates: dict[str, int] = {}  # id -> stamp
        self.nearby: dict[str, None] = {}
        self.blind: dict[str, None] = {}
        self.anonymous = 0  # entries that may be the job and name no id
        self.judged = 0  # entries judged so far (history entries are judged as read)

    def drop(self, held: set[str]) -> None:
        """Forget the rows any request of the ledger already holds."""
        for found in (self.candidates, self.nearby, self.blind):
            for generation_id in held.intersection(found):
                del found[generation_id]

    def free(self) -> list[str]:
        """The candidates, oldest first."""
        return sorted(self.candidates, key=lambda i: (self.candidates[i], i))

    def named(self) -> list[str]:
        """Every id that may be the request's: candidates, nearby and blind."""
        return list(dict.fromkeys([*self.free(), *self.nearby, *self.blind]))


class Reconciler:
    """Finds and claims the jobs of requests whose answers were lost.

    Args:
        api: The endpoints.
        ledger: The enqueue ledger (shared, or this process's memory).
        clock: The server's clock, as estimated from its answers.
        owns: Whether this process already holds an id (reattached generations included).
        settle_delay: Seconds between the two looks that conclude a verdict.
    """

    def __init__(
        self,
        api: QueueEndpoints,
        *,
        ledger: Ledger,
        clock: ServerClock,
        owns: Callable[[str], bool],
        settle_delay: float = 1.0,
    ) -> None:
        self._api = api
        self._ledger = ledger
        self._clock = clock
        self._owns = owns
        self._settle_delay = settle_delay
        self._sent: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def note_sent(self, ids: list[str], *, sent: float, received: float) -> None:
        """Remember when our own jobs were made: their rows' stamps teach the clock (once)."""
        for generation_id in ids:
            self._sent[generation_id] = (sent, received)
        while len(self._sent) > _SENT_TIMES:
            self._sent.popitem(last=False)

    async def settle(
        self,
        intent_id: str,
        *,
        model: str,
        params: Mapping[str, Any],
        count: int,
        span: Span,
        created: bool,
    ) -> list[str] | None:
        """The ids a request without an answer created, claimed for it in the ledger.

        Args:
            intent_id: The request's intent (``lost``, or taken over).
            model: Its model.
            params: Its exact parameters.
            count: How many generations it asked for.
            span: When it was in flight (its window is worked out afresh for each look, as
                the clock learns).
            created: Whether a job certainly exists (a 2xx answer began): then it is never
                concluded that nothing was made.

        Returns:
            The claimed ids, or ``None`` when it certainly created nothing.

        Raises:
            AmbiguousEnqueueError: The jobs can be neither told apart nor ruled out.
            OxenError: The rows could not be read.
        """
        key = fingerprint(model, params)
        match = _Matcher(params)
        empty = unsure = 0
        # The ids this request holds already (a claim that fell short: a sibling took some of
        # the candidates first; or one made before its owner was gone, for a taken-over
        # intent). They stay candidates of every look: dropped with the others held, a look
        # found too few or none, and "nothing was made" had the request sent again while
        # they were held, nobody's.
        known = await self._ledger.intent(intent_id)
        mine = set() if known is None else set(known.ids)
        while True:
            # a. Requests with this fingerprint still in flight would claim the same rows.
            await self._ledger.wait_idle(key, exclude_intent=intent_id, timeout=None)
            # b. The order of these reads makes them one consistent picture. A request whose
            # job is among the rows was in flight when they were read; by the check that
            # follows, it is still in flight (look again, if its owner is alive; if gone, its
            # answer can never be recorded, and it awaits its rows as a lost one does), or it
            # left flight: answered (its ids are held by the last read) or lost (counted by
            # the read of the lost ones, made after the check: read before it, a sibling
            # whose answer was cut between the two reads was neither awaited nor busy, and
            # its job made the look ambiguous). A sibling claiming or taken over meanwhile is
            # counted among the lost ones and its ids among the held ones (it is
            # over-awaited, never missed).
            look = await self._look(model, params, match, span)
            window = look.window
            flying = await self._ledger.in_flight(key, exclude_intent=intent_id)
            if any(intent.owner_alive for intent in flying):
                continue
            lost = await self._ledger.lost(key, exclude_intent=intent_id)
            others = {i.intent_id: i for i in [*flying, *lost]}.values()
            look.drop(await self._ledger.claimed_ids(key) - mine)
            if not (look.candidates or look.nearby or look.blind or look.anonymous):
                # Nothing here: before concluding, read back to the start of the reach (rows
                # there are older, so no request of the ledger's started meanwhile made one).
                if not await self._extend(look, model, match, window):
                    why = (
                        "the history could not be read back far enough to rule a job out "
                        f"(the window rests on {window.basis})"
                    )
                    raise self._ambiguous(model, params, [], why)
                look.drop(await self._ledger.claimed_ids(key) - mine)
            unseen = self._unseen(look, window, count)
            if unseen is not None:
                empty = 0
                unsure += 1
                if unsure < _LOOKS:
                    await anyio.sleep(self._settle_delay)
                    continue
                raise self._ambiguous(model, params, look.named(), unseen)
            free = look.free()
            if not free:
                empty += 1
                if empty < _LOOKS:
                    await anyio.sleep(self._settle_delay)
                    continue
                if created:
                    raise self._ambiguous(model, params, [], "a 2xx answer began, no job found")
                return None
            awaited = count + sum(max(0, i.count - len(i.ids)) for i in others)
            if len(free) > awaited:
                raise self._ambiguous(
                    model,
                    params,
                    look.named(),
                    f"{len(free)} matching jobs and only {awaited} awaited by requests the "
                    "ledger knows: others were made by a client outside it",
                )
            try:
                claimed = await self._ledger.claim(intent_id, free)
            except InFlightError:
                continue  # a request with the same fingerprint started meanwhile: wait, look
            if len(claimed) >= count:
                logger.debug("enqueue of %s: adopted %s after a lost answer", model, claimed)
                return claimed[:count]
            mine.update(claimed)

    @staticmethod
    def _unseen(look: _Look, window: Window, count: int) -> str | None:
        """Why a look cannot reach a verdict (a second look may), or ``None`` if it can."""
        blind = len(look.blind) + look.anonymous
        if blind:
            return (
                f"{blind} row(s) of this model and these parameters whose id or enqueued_at "
                "cannot be believed; the look could not place them"
            )
        if look.candidates and len(look.candidates) < count:
            return f"{len(look.candidates)} of {count} jobs could be found"
        if not look.candidates and look.nearby:
            return (
                f"{len(look.nearby)} matching job(s) made near the request, outside the window "
                f"{window.low}..{window.high} (resting on {window.basis}): either clock may "
                "be wrong"
            )
        return None

    def _ambiguous(
        self, model: str, params: Mapping[str, Any], candidates: list[str], why: str
    ) -> AmbiguousEnqueueError:
        return AmbiguousEnqueueError(
            f"enqueue of {model}: the answer was lost and its jobs cannot be settled ({why}); "
            "it was not sent again",
            model=model,
            params=params,
            candidate_ids=candidates,
        )

    async def _look(
        self, model: str, params: Mapping[str, Any], match: _Matcher, span: Span
    ) -> _Look:
        """The rows the request may have made: the active ones, then history back to the
        window's start (the job may have finished already, behind any number of newer ones).

        The window is worked out once the active rows are in: their answer's ``Date`` header,
        and the rows of this client's own jobs among them, have taught the clock by then.
        """
        active = await self._api.active_rows(model)
        for entry in active:
            self._learn(entry)
        window = self._clock.window(span)
        history = _History(self._api, model)
        look = _Look(history, window)
        now = time.time()
        for entry in active:
            self._judge(entry, model, match, window, look, now)
        if not await history.read_until(window.low):
            raise AmbiguousEnqueueError(
                f"enqueue of {model}: the history holds more than {_MAX_HISTORY_PAGES} pages "
                "newer than the request; the job could not be looked up",
                model=model,
                params=params,
            )
        self._judge_history(look, model, match, window)
        return look

    async def _extend(self, look: _Look, model: str, match: _Matcher, window: Window) -> bool:
        """Read the history on back to the start of the reach; whether it could be."""
        complete = await look.history.read_until(window.reach_low)
        self._judge_history(look, model, match, window)
        return complete

    def _judge_history(self, look: _Look, model: str, match: _Matcher, window: Window) -> None:
        entries = look.history.entries
        now = time.time()
        for entry in entries[look.judged :]:
            self._judge(entry, model, match, window, look, now)
        look.judged = len(entries)

    def _learn(self, entry: object) -> bool:
        """Whether ``entry`` is a row of this client's own job; if its send was noted, its
        stamp teaches the clock the rows' own offset (once per job)."""
        if not isinstance(entry, Mapping):
            return False
        generation_id = entry.get("generation_id")
        if not isinstance(generation_id, str) or not self._owns(generation_id):
            return False
        sent = self._sent.pop(generation_id, None)
        if sent is not None:
            self._clock.observe_row_stamp(entry.get("enqueued_at"), sent=sent[0], received=sent[1])
        return True

    def _judge(
        self,
        entry: object,
        model: str,
        match: _Matcher,
        window: Window,
        look: _Look,
        now: float,
    ) -> None:
        """File one listed entry under the look (see the module docstring)."""
        if not isinstance(entry, Mapping):
            look.anonymous += 1  # not a row: it could be anything, this request's job included
            return
        if self._learn(entry):
            return
        generation_id = entry.get("generation_id")
        model_name = entry.get("model_name")
        if isinstance(model_name, str) and model_name != model:
            return  # another model's job (the model is the request's own identity)
        if not match(entry):
            return  # other parameters: another request's job
        if not isinstance(generation_id, str):
            look.anonymous += 1
            return
        stamp = row_stamp(entry.get("enqueued_at"), now=now)
        if stamp is None or not plausible_id(generation_id):
            look.blind[generation_id] = None
        elif window.holds(stamp):
            look.candidates[generation_id] = stamp
        elif window.reaches(stamp):
            look.nearby[generation_id] = None
        # else: made beyond the reach of this request's window, by another request


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
