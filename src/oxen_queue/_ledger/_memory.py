"""The ledger of one process, in memory: what a client uses when it is given no ledger URL.

The same protocol as the SQL ledgers (one enqueue path), exact for this process's requests.
It remembers only what reconciliation needs: requests without an answer, and the newest
`_HELD_LIMIT` ids held. Nothing outlives the process: a crash loses what a real ledger keeps.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import anyio

from ._base import InFlightError, Intent, IntentState, LedgerError, Settlement, fingerprint
from ._liveness import Owner

_HELD_LIMIT: Final = 200_000  # ids remembered: far more than can be in one look's window


@dataclass(slots=True)
class _Open:
    """A request without an answer yet; its fingerprint is worked out when reconciliation
    first asks (`key`), not on every enqueue."""

    intent: Intent
    ids: list[str] = field(default_factory=list)

    def key(self) -> str:
        if not self.intent.fingerprint:
            key = fingerprint(self.intent.model, self.intent.params)
            self.intent = replace(self.intent, fingerprint=key)
        return self.intent.fingerprint

    def read(self, **changes: Any) -> Intent:
        return replace(self.intent, fingerprint=self.key(), **changes)


class MemoryLedger:
    """This process's requests, in memory (see the module docstring)."""

    def __init__(self) -> None:
        self.owner = Owner.current()
        self._serial = itertools.count(1)
        self._open: dict[str, _Open] = {}
        # The ids held, and the same oldest first to forget them by (not by fingerprint: see
        # claimed_ids; an index by fingerprint cost more memory than all the rest).
        self._held: set[str] = set()
        self._held_order: deque[str] = deque()
        self._changed: dict[str, anyio.Event] = {}

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def record_intent(
        self,
        *,
        model: str,
        params: Mapping[str, Any],
        count: int,
        deadline: float,
        sent_at: float | None = None,
        sent_at_server: float | None = None,
    ) -> str:
        intent_id = f"m{next(self._serial)}"
        self._open[intent_id] = _Open(
            Intent(
                intent_id=intent_id,
                owner=self.owner,
                owner_alive=True,
                model=model,
                fingerprint="",  # see _Open.key
                params=dict(params),
                count=count,
                sent_at=time.time() if sent_at is None else sent_at,
                sent_at_server=sent_at_server,
                deadline=deadline,
                expired=False,
                state="in_flight",
                how=None,
            )
        )
        return intent_id

    async def record_ids(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        return self._close(intent_id, ids)

    async def record_outcome(self, generation_id: str, status: str) -> bool:
        return False  # this process's generations are watched by its client, not kept here

    async def mark_lost(self, intent_id: str) -> None:
        entry = self._entry(intent_id)
        entry.intent = replace(entry.intent, state="lost")
        self._changed_now(entry)

    async def mark_settled(
        self, intent_id: str, how: Settlement, ids: Sequence[str] = ()
    ) -> list[str]:
        return self._close(intent_id, ids)

    async def in_flight(
        self, fingerprint: str, *, exclude_intent: str | None = None
    ) -> list[Intent]:
        return self._with(fingerprint, "in_flight", exclude_intent)

    async def lost(self, fingerprint: str, *, exclude_intent: str | None = None) -> list[Intent]:
        return self._with(fingerprint, "lost", exclude_intent)

    async def wait_idle(
        self, fingerprint: str, *, exclude_intent: str | None = None, timeout: float | None
    ) -> list[Intent]:
        with anyio.move_on_after(timeout):
            while busy := self._with(fingerprint, "in_flight", exclude_intent):
                await self._changed.setdefault(fingerprint, anyio.Event()).wait()
            return []
        return busy

    async def claimed_ids(self, fingerprint: str, *, since: float | None = None) -> set[str]:
        # Every id held, whatever its fingerprint: reconciliation drops held ids from rows
        # that match this fingerprint, which no other can hold.
        return self._held.union(*(entry.ids for entry in self._open.values()))

    async def claim(self, intent_id: str, candidate_ids: Sequence[str]) -> list[str]:
        entry = self._entry(intent_id)
        if busy := self._with(entry.key(), "in_flight", intent_id):
            raise InFlightError(busy)
        opened = {i for e in self._open.values() for i in e.ids}
        count = entry.intent.count
        for candidate in dict.fromkeys(candidate_ids):
            if len(entry.ids) >= count:
                break
            if candidate not in self._held and candidate not in opened:
                entry.ids.append(candidate)
        held = list(entry.ids)
        if len(held) >= count:
            del self._open[intent_id]
            self._hold(held)
        return held

    async def stale_intents(self, *, now: float | None = None) -> list[Intent]:
        return []  # this process is alive, and nothing of a dead one is remembered

    async def take_over(self, intent_id: str) -> Intent | None:
        return None

    async def unfinished(self, *, orphaned_only: bool = False) -> list[Intent]:
        entries = [] if orphaned_only else self._open.values()
        return [e.read(ids=tuple(e.ids), pending=tuple(e.ids)) for e in entries]

    async def intent(self, intent_id: str) -> Intent | None:
        entry = self._open.get(intent_id)
        return None if entry is None else entry.read(ids=tuple(entry.ids))

    async def prune(self, *, before: float) -> int:
        return 0

    def _entry(self, intent_id: str) -> _Open:
        entry = self._open.get(intent_id)
        if entry is None:
            raise LedgerError(f"intent {intent_id!r} is not open")
        return entry

    def _with(self, fingerprint: str, state: IntentState, exclude: str | None) -> list[Intent]:
        return [
            e.read(ids=tuple(e.ids))
            for key, e in self._open.items()
            if key != exclude and e.intent.state == state and e.key() == fingerprint
        ]

    def _close(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        """Close an open intent (answered or settled), holding ``ids`` and what it claimed
        (as the SQL ledger does: a job an ambiguous request named is never adopted later);
        return those of ``ids`` another intent held."""
        entry = self._entry(intent_id)
        del self._open[intent_id]
        self._hold(entry.ids)
        fresh = [i for i in dict.fromkeys(ids) if i not in entry.ids]
        taken = self._hold(fresh)
        self._changed_now(entry)
        return [i for i in fresh if i not in taken]

    def _hold(self, ids: Sequence[str]) -> set[str]:
        """Hold ``ids``; return those newly held (not held before)."""
        taken = [i for i in dict.fromkeys(ids) if i not in self._held]
        self._held.update(taken)
        self._held_order.extend(taken)
        while len(self._held_order) > _HELD_LIMIT:
            self._held.discard(self._held_order.popleft())
        return set(taken)

    def _changed_now(self, entry: _Open) -> None:
        # Nobody waits, the usual case: no fingerprint to work out.
        if self._changed and (event := self._changed.pop(entry.key(), None)) is not None:
            event.set()
