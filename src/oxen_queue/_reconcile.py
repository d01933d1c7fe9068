"""Reconciling a request whose answer was lost: which rows on the server are its jobs?

With no idempotency key, a job is recognised by its model and exact parameters, made within
the request's window on the *server's* clock (`_clock`); identical requests are told apart by
the enqueue ledger (`_ledger`), shared by every client of the key. A matching row is a
*candidate* (a believable ``enqueued_at`` in the window, a plausible id), *nearby* (outside the
window but within its *reach*: where it would be if the clock estimate were wrong), *blind* (its
stamp or id cannot be believed, or it is not a row), or beyond the reach: another request's.

Candidates are claimed, atomically, when they number what the identical requests await and no
row is blind (nearby rows are most likely an earlier identical request's: if not, its job is
taken, never a second one made). More: made outside the ledger, ambiguous at once. Blind rows,
too few candidates or only nearby ones: ambiguous after a second look. "Nothing was made", the
only verdict that lets a request be sent again, needs two looks that *could see* (no blind row,
the history read back to the start of the reach or its end) and found nothing, and no 2xx
answer begun: an absurd ``enqueued_at`` or ``Date`` makes an enqueue ambiguous, never sent twice.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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

logger = logging.getLogger("oxen_queue")

_HISTORY_PAGE: Final = 1000  # the largest page_size /api/ai/generations allows
_MAX_HISTORY_PAGES: Final = 20  # 20,000 rows: a lost answer's job is among the newest
_SENT_TIMES: Final = 4096  # own requests whose rows can still teach the clock
_LOOKS: Final = 2  # looks a moment apart before a verdict of "ambiguous" or "nothing made"

_Match = Callable[[Mapping[str, Any]], bool]
_canonical = functools.partial(json.dumps, sort_keys=True, default=str)


def _matcher(params: Mapping[str, Any]) -> _Match:
    """Whether a row carries exactly ``params``: rows carry exactly the parameters submitted
    ("present only if they were submitted"), so another request's job never matches."""
    model_params = _canonical({k: v for k, v in params.items() if k not in QUEUE_FIELDS})
    queue_params = [(k, _canonical(v)) for k, v in params.items() if k in QUEUE_FIELDS]
    return lambda row: (
        _canonical(row_params(row)) == model_params
        and all(_canonical(row.get(k)) == v for k, v in queue_params)
    )


class _History:
    """One model's history, read page by page, newest first whatever order the server uses
    (it is not documented: read from the first page, and reversed at most once)."""

    def __init__(self, api: QueueEndpoints, model: str) -> None:
        self._api = api
        self._model = model
        self.entries: list[object] = []
        self.pages = 0
        self._next: int | None = 1  # the next page to read; None once all are read
        self._step = 1  # -1 once reversed: from the last page back to page 2
        self._forward_only = False  # oldest first, with no page count to start from the end
        self._oldest = math.inf  # the oldest believable stamp on pages read newest first

    async def read_until(self, bound: float) -> bool:
        """Read on until every row stamped at or after ``bound`` is read; ``False`` if
        `_MAX_HISTORY_PAGES` came first."""
        while (page := self._next) is not None and self._oldest >= bound:
            if self.pages >= _MAX_HISTORY_PAGES:
                return False
            found = await self._api.history_slice(
                model=self._model, page=page, page_size=_HISTORY_PAGE
            )
            self.pages += 1
            self.entries.extend(found.rows)
            if not found.rows:  # past the end
                self._next = None
                continue
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
                    self._next, self._step = last, -1
                    continue  # page 1 holds the oldest rows: they bound nothing
                self._forward_only = True
            if stamps and not self._forward_only:
                self._oldest = min(self._oldest, *stamps)
            following = page + self._step
            done = (last is not None and following > last) or (self._step < 0 and following == 1)
            self._next = None if done else following
        return True


@dataclass(eq=False)
class _Look:
    """What one look at the server found for a request, judged (see the module docstring)."""

    model: str
    match: _Match
    window: Window
    history: _History
    candidates: dict[str, int] = field(default_factory=dict)  # id -> stamp
    nearby: dict[str, None] = field(default_factory=dict)
    blind: dict[str, None] = field(default_factory=dict)
    anonymous: int = 0  # entries that may be the job and name no id
    judged: int = 0  # history entries judged so far

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

    def unseen(self, count: int) -> str | None:
        """Why this look cannot reach a verdict (a second look may), or ``None`` if it can."""
        if blind := len(self.blind) + self.anonymous:
            return (
                f"{blind} row(s) of this model and these parameters whose id or enqueued_at "
                "cannot be believed; the look could not place them"
            )
        if self.candidates and len(self.candidates) < count:
            return f"{len(self.candidates)} of {count} jobs could be found"
        if not self.candidates and self.nearby:
            window = self.window
            return (
                f"{len(self.nearby)} matching job(s) made near the request, outside the window "
                f"{window.low}..{window.high} (resting on {window.basis}): either clock may "
                "be wrong"
            )
        return None


@dataclass(eq=False)
class Reconciler:
    """Finds and claims the jobs of requests whose answers were lost. ``owns``: whether this
    process already holds an id (reattached generations included)."""

    _api: QueueEndpoints
    _ledger: Ledger
    _clock: ServerClock
    _owns: Callable[[str], bool]
    _settle_delay: float = 1.0  # seconds between two looks
    _sent: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

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
        """Claim, for a request without an answer, the jobs it created; ``None`` if it
        certainly created none. ``span``: when it was in flight (the window is worked out
        afresh for each look); ``created``: a job certainly exists (a 2xx answer began).
        Raises ``AmbiguousEnqueueError`` (the jobs neither told apart nor ruled out), or the
        ``OxenError`` of a failed read."""
        key = fingerprint(model, params)
        match = _matcher(params)
        empty = unsure = 0

        def ambiguous(why: str, candidates: Iterable[str] = ()) -> AmbiguousEnqueueError:
            return AmbiguousEnqueueError(
                f"enqueue of {model}: the answer was lost and its jobs cannot be settled "
                f"({why}); it was not sent again",
                model=model,
                params=params,
                candidate_ids=candidates,
            )

        # The ids this request holds already (a claim that fell short; a taken-over intent's)
        # stay candidates: dropped as held, a look would find too few or none, and "nothing
        # was made" would resend the request while they were held by nobody.
        known = await self._ledger.intent(intent_id)
        mine = set() if known is None else set(known.ids)
        while True:
            # a. Requests with this fingerprint still in flight would claim the same rows.
            await self._ledger.wait_idle(key, exclude_intent=intent_id, timeout=None)
            # b. Read the rows, then the identical requests in flight, then the lost ones, then
            # the ids held: one consistent picture. A request whose job is among the rows was
            # in flight when they were read, so by the next read it is still in flight (look
            # again if its owner is alive; if gone, it awaits its rows as a lost one does),
            # answered (its ids held by the last read) or lost (counted by the read of the
            # lost ones, which must come after: before it, a sibling cut between the two reads
            # was neither awaited nor busy, and its job made the look ambiguous). A sibling
            # claiming or taken over meanwhile is over-awaited, never missed.
            look = await self._look(model, match, span)
            if not await self._read_back(look, look.window.low):
                raise ambiguous(
                    f"the history holds more than {_MAX_HISTORY_PAGES} pages newer than the request"
                )
            flying = await self._ledger.in_flight(key, exclude_intent=intent_id)
            if any(intent.owner_alive for intent in flying):
                continue
            lost = await self._ledger.lost(key, exclude_intent=intent_id)
            others = {i.intent_id: i for i in [*flying, *lost]}.values()
            look.drop(await self._ledger.claimed_ids(key) - mine)
            if not (look.candidates or look.nearby or look.blind or look.anonymous):
                # Nothing here: before concluding, read back to the start of the reach (rows
                # there are older, so no request of the ledger's started meanwhile made one).
                if not await self._read_back(look, look.window.reach_low):
                    raise ambiguous(
                        "the history could not be read back far enough to rule a job out "
                        f"(the window rests on {look.window.basis})"
                    )
                look.drop(await self._ledger.claimed_ids(key) - mine)
            unseen = look.unseen(count)
            if unseen is not None:
                empty, unsure = 0, unsure + 1
                if unsure < _LOOKS:
                    await anyio.sleep(self._settle_delay)
                    continue
                raise ambiguous(unseen, look.named())
            free = look.free()
            if not free:
                empty += 1
                if empty < _LOOKS:
                    await anyio.sleep(self._settle_delay)
                    continue
                if created:
                    raise ambiguous("a 2xx answer began, no job found")
                return None
            awaited = count + sum(max(0, i.count - len(i.ids)) for i in others)
            if len(free) > awaited:
                raise ambiguous(
                    f"{len(free)} matching jobs and only {awaited} awaited by requests the "
                    "ledger knows: others were made by a client outside it",
                    look.named(),
                )
            try:
                claimed = await self._ledger.claim(intent_id, free)
            except InFlightError:
                continue  # a request with the same fingerprint started meanwhile: wait, look
            if len(claimed) >= count:
                logger.debug("enqueue of %s: adopted %s after a lost answer", model, claimed)
                return claimed[:count]
            mine.update(claimed)

    async def _look(self, model: str, match: _Match, span: Span) -> _Look:
        """The active rows the request may have made, judged; its window is worked out once
        they (and their ``Date``) taught the clock."""
        active = await self._api.active_rows(model)
        for entry in active:
            self._learn(entry)
        look = _Look(model, match, self._clock.window(span), _History(self._api, model))
        now = time.time()
        for entry in active:
            self._judge(entry, look, now)
        return look

    async def _read_back(self, look: _Look, bound: float) -> bool:
        """Read the history back to ``bound`` (the job may have finished already, behind any
        number of newer ones) and judge it; whether it could be."""
        complete = await look.history.read_until(bound)
        now = time.time()
        for entry in look.history.entries[look.judged :]:
            self._judge(entry, look, now)
        look.judged = len(look.history.entries)
        return complete

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

    def _judge(self, entry: object, look: _Look, now: float) -> None:
        """File one listed entry under the look (see the module docstring)."""
        if not isinstance(entry, Mapping):
            look.anonymous += 1  # not a row: it could be anything, this request's job included
            return
        if self._learn(entry):
            return
        model_name = entry.get("model_name")
        if isinstance(model_name, str) and model_name != look.model:
            return  # another model's job (the model is the request's own identity)
        if not look.match(entry):
            return  # other parameters: another request's job
        generation_id = entry.get("generation_id")
        if not isinstance(generation_id, str):
            look.anonymous += 1
            return
        stamp = row_stamp(entry.get("enqueued_at"), now=now)
        if stamp is None or not plausible_id(generation_id):
            look.blind[generation_id] = None
        elif look.window.holds(stamp):
            look.candidates[generation_id] = stamp
        elif look.window.reaches(stamp):
            look.nearby[generation_id] = None
        # else: made beyond the reach of this request's window, by another request
