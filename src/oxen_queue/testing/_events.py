"""What streams and counters are made of: events, subscribers, statistics."""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._jobs import Job, User, dump_json
from ._wakeup import Signal

__all__ = ["SSEEvent", "Stats", "Subscriber", "unrelated_event"]


@dataclass(slots=True)
class Stats:
    """Counters a test can read. `EmulatorState.snapshot` gives a JSON-ready copy.

    Attributes:
        requests: Requests by ``(method, route template)``, e.g.
            ``("GET", "/api/ai/queue/{generation_id}")``; unmatched paths count under
            ``"<unmatched>"``.
        jobs_created: Generations created by the queue.
        jobs_by_prompt: Generations created per prompt (to spot duplicate enqueues).
        jobs_by_status: Generations per current status.
        jobs_billed: Generations charged (they started; credit failures are not charged).
        completion_times: Unix time at which each generation reached a terminal status.
        events_published: Completion events produced (one per succeeded or failed job).
        events_delivered: Completion events written to streams (one per stream).
        events_dropped: Completion events withheld by the ``event_loss`` fault.
        unrelated_events: Unrelated events written to streams.
        sse_connections: Event streams opened.
        faults: Injected faults by kind.
        file_requests_with_auth: File requests that carried an ``Authorization`` header.
        file_requests_without_auth: File requests that did not.
        sync_generations: Results made by the synchronous endpoints.
    """

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    jobs_created: int = 0
    jobs_by_prompt: Counter[str] = field(default_factory=Counter)
    jobs_by_status: Counter[str] = field(default_factory=Counter)
    jobs_billed: int = 0
    completion_times: dict[str, float] = field(default_factory=dict)
    events_published: int = 0
    events_delivered: int = 0
    events_dropped: int = 0
    unrelated_events: int = 0
    sse_connections: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    file_requests_with_auth: int = 0
    file_requests_without_auth: int = 0
    sync_generations: int = 0


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event for a stream: ``event: <name>`` then the ``data:`` lines of ``data``."""

    name: str | None
    data: str
    payload: Mapping[str, Any] | None = None

    @property
    def is_completion(self) -> bool:
        """Whether this is a ``media_generation_completed`` event."""
        return self.payload is not None

    def encode(self) -> bytes:
        """The event on the wire, blank line included."""
        lines = [] if self.name is None else [f"event: {self.name}"]
        lines.extend(f"data: {line}" for line in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


class Subscriber:
    """One open ``/api/events`` stream: the events waiting to be written to it."""

    __slots__ = ("_pending", "signal", "user")

    def __init__(self, user: User) -> None:
        self.user = user
        self.signal = Signal()
        self._pending: deque[SSEEvent] = deque()

    def push(self, event: SSEEvent) -> None:
        """Queue an event and wake the stream."""
        self._pending.append(event)
        self.signal.set()

    def drain(self) -> list[SSEEvent]:
        """Take every queued event."""
        events: list[SSEEvent] = []
        while self._pending:
            events.append(self._pending.popleft())
        return events


def unrelated_event(job: Job, *, multiline: bool) -> SSEEvent:
    """An event a client must skip, about the same model (a deployment event)."""
    # "The stream ... may carry unrelated event types (e.g. deployment events)." Sometimes
    # spread over several `data:` lines, which a client must join with "\n".
    payload = {"model": job.model.id, "status": "active", "provider": job.model.provider}
    data = json.dumps(payload, indent=1) if multiline else dump_json(payload).decode()
    return SSEEvent("deployment_status_changed", data)
