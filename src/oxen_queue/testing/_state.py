"""The emulator's state: jobs, their lifecycle, users, result files, events and counters.

No HTTP here. One scheduler drives every job: a heap of ``(due, seq, generation_id,
transition)``. `EmulatorState.advance` pops what fell due and applies it, so the state is
right whenever anyone looks (each HTTP request calls it first); a background task
(`EmulatorState.run_scheduler`, started by the app's lifespan) sleeps until the next due
instant so that completion events go out on time. Cancelled jobs leave stale heap entries,
skipped when popped.

All mutation happens under one lock, so a test thread may drive a ``ManualClock`` while the
server's thread answers requests.

When a row is charged (its ``cost``, a decimal string in ``/api/ai/generations``). The spec
calls ``cost`` the "Charged amount for this row" and ``total_cost`` "Null when nothing in the
set has been charged", so a row's cost is null until it is charged, never an estimate. The
docs say model parameters are checked "at run time" (a bad one ends the job ``failed``), and
this emulator bills such failures, as the project's README says the API does: so the charge
is made when the job **starts**:

- ``queued``: ``null``, not charged yet.
- ``processing``: the full price by the model's published ``pricing`` for the job's
  parameters (the provider has been called).
- ``succeeded``: the full price.
- ``failed`` at run time (bad parameters, an input image that cannot be downloaded): the
  full price, as the docs say of run-time failures. A parameter outside its ``enum`` is
  priced at the parameter's default.
- ``failed`` with ``"Insufficient credits"``: ``"0"``, nothing could be charged.
- ``cancelled`` while ``queued``: ``"0"``; while ``processing``: the full price, kept (the
  provider already ran).

So a row's ``cost`` is null exactly while it is ``queued``, and every terminal row has one.
INFERRED: the docs say nothing of refunds or of when the charge is made; these rules are the
simplest reading of "billed at run time". The price is the model's published ``pricing``
applied to the job's parameters (``ModelSpec.cost``), so a client can predict it exactly.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import random
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from hashlib import sha256
from types import MappingProxyType
from typing import Any, Final

import anyio

from ._catalog import ModelSpec
from ._clock import Clock, MonotonicClock
from ._config import EmulatorConfig
from ._events import SSEEvent, Stats, Subscriber, unrelated_event
from ._faults import Faults
from ._files import InputRefusedError, resolve_inputs
from ._jobs import ACTIVE_STATUSES, Artifact, Inputs, Job, Status, User, dump_json
from ._validation import check_params, runtime_error_message
from ._wakeup import Signal

__all__ = ["INSUFFICIENT_CREDITS", "EmulatorState"]

_START: Final = 0
_FINISH: Final = 1
_NOTHING: Final = Decimal(0)
INSUFFICIENT_CREDITS: Final = "Insufficient credits"


@dataclass(slots=True)
class _UserJobs:
    rows: dict[str, Job] = field(default_factory=dict)  # enqueue order
    active: dict[str, Job] = field(default_factory=dict)  # enqueue order


class EmulatorState:
    """Everything an emulator knows.

    Args:
        config: Timings and limits; defaults to ``EmulatorConfig()``.
        faults: Fault switches; defaults to all off.
        clock: Defaults to real time; pass a [`ManualClock`][oxen_queue.testing.ManualClock] for
            deterministic tests.
        files_origin: Origin of result URLs; defaults to ``config.files_origin``.
    """

    def __init__(
        self,
        *,
        config: EmulatorConfig | None = None,
        faults: Faults | None = None,
        clock: Clock | None = None,
        files_origin: str | None = None,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.faults = faults if faults is not None else Faults()
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.files_origin = (files_origin or self.config.files_origin).rstrip("/")
        self.time_scale = self.config.time_scale
        self.stats = Stats()
        self.lock = threading.RLock()
        seed = self.config.seed
        self._rng = random.Random(seed)
        self._event_rng = random.Random(None if seed is None else f"events-{seed}")
        self._secret = secrets.token_bytes(32)
        self._jobs: dict[str, Job] = {}
        self._users: dict[str, _UserJobs] = {}
        self._known_users: dict[str, User] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._artifacts: dict[str, Artifact] = {}
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._ticker: Signal | None = None
        self._closing = False
        self.clock.subscribe(self._wake_ticker)

    # --- users -------------------------------------------------------------------------

    def user_for_key(self, api_key: str) -> User:
        """The user an API key stands for (one per distinct key)."""
        digest = User.digest(api_key)
        user = self._known_users.get(digest)
        if user is None:
            user = self._known_users.setdefault(digest, User.from_key_digest(digest))
        return user

    # --- the queue ---------------------------------------------------------------------

    def enqueue(
        self,
        user: User,
        model: ModelSpec,
        params: Mapping[str, Any],
        *,
        count: int = 1,
        target_namespace: str | None = None,
        target_repo: str | None = None,
        target_directory: str | None = None,
    ) -> list[Job]:
        """Create ``count`` generations of ``model`` and schedule them.

        Model parameters are not checked here (the API checks them when the job runs: a bad
        one makes the job fail then, billed).
        """
        schema = model.request_schema or {}
        low, high = (
            self.config.video_duration
            if model.media_type == "video"
            else self.config.image_duration
        )
        jobs: list[Job] = []
        with self.lock:
            now = self.clock.now()
            wall = self.clock.to_wall(now)
            scale = self.time_scale
            earliest = self._heap[0][0] if self._heap else None
            problems = check_params(schema, params)
            for _ in range(count):
                # Draw the same number of values for every job, valid or not, so a seeded
                # run stays reproducible whatever the params.
                generation_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
                delay = self._rng.uniform(*self.config.queue_delay) * scale
                duration = self._rng.uniform(low, high) * scale
                no_credits = self._rng.random() < self.config.failure_rate
                planned_error: str | None = None
                if problems:
                    planned_error = runtime_error_message(problems)
                elif no_credits:
                    planned_error = INSUFFICIENT_CREDITS
                job = Job(
                    generation_id=generation_id,
                    owner=user,
                    model=model,
                    params=dict(params),
                    namespace=target_namespace or user.username,
                    target_repo=target_repo,
                    target_directory=target_directory,
                    enqueued_at=wall,
                    clock_offset=self.config.clock_offset,
                    delay=delay,
                    duration=duration,
                    planned_error=planned_error,
                    billable=planned_error != INSUFFICIENT_CREDITS,
                )
                self._jobs[generation_id] = job
                user_jobs = self._users.setdefault(user.user_id, _UserJobs())
                user_jobs.rows[generation_id] = job
                user_jobs.active[generation_id] = job
                heapq.heappush(self._heap, (now + delay, next(self._seq), generation_id, _START))
                jobs.append(job)
            self.stats.jobs_created += count
            self.stats.jobs_by_prompt[jobs[0].prompt if jobs else ""] += count
            self.stats.jobs_by_status["queued"] += count
            if jobs and (earliest is None or self._heap[0][0] < earliest):
                self._wake_ticker()
        return jobs

    def cancel(self, user: User, generation_id: str) -> Job | None:
        """Cancel one of ``user``'s generations; ``None`` if it is not theirs or unknown.

        "You can only cancel generations that are still active (queued or processing).
        Cancelling a generation that has already reached a terminal state ... has no
        effect." No completion event is sent for a cancellation. A job cancelled while
        queued costs ``"0"``; one cancelled while processing keeps its charge (it was
        billed when it started).
        """
        with self.lock:
            job = self.job(user, generation_id)
            if job is not None and job.status in ACTIVE_STATUSES:
                self._terminate(job, "cancelled", self.clock.now())
            return job

    def advance(self) -> int:
        """Apply every transition due by the clock's ``now()``; returns how many."""
        applied = 0
        with self.lock:
            now = self.clock.now()
            heap = self._heap
            while heap and heap[0][0] <= now:
                due, _, generation_id, transition = heapq.heappop(heap)
                job = self._jobs.get(generation_id)
                if job is None:
                    continue
                if transition == _START and job.status == "queued":
                    self._start(job, due)
                    applied += 1
                elif transition == _FINISH and job.status == "processing":
                    self._succeed(job, due)
                    applied += 1
        return applied

    def next_due(self) -> float | None:
        """The instant of the next scheduled transition (stale ones included), if any."""
        with self.lock:
            return self._heap[0][0] if self._heap else None

    def _start(self, job: Job, due: float) -> None:
        self._set_status(job, "processing")
        job.started_at = self.clock.to_wall(due)
        error = job.planned_error
        if error is None and job.model.image_inputs:
            # The provider downloads the input images as it starts.
            try:
                job.inputs = resolve_inputs(self, job.model, job.params)
            except InputRefusedError as exc:
                error = str(exc)
        # Charged as it starts (see the module docstring), even if it then fails.
        if job.billable:
            job.cost = job.model.cost(job.params)
            self.stats.jobs_billed += 1
        else:
            job.cost = _NOTHING
        if error is not None:
            job.error_message = error
            self._terminate(job, "failed", due)
        else:
            heapq.heappush(
                self._heap, (due + job.duration, next(self._seq), job.generation_id, _FINISH)
            )
        job.changed()

    def _succeed(self, job: Job, due: float) -> None:
        wall = self.clock.to_wall(due)
        artifact = Artifact(
            generation_id=job.generation_id,
            namespace=job.namespace,
            model=job.model,
            params=job.params,
            output=job.model.output(job.params),
            expires=int(wall + self.config.url_ttl),
            inputs=job.inputs,
        )
        self._artifacts[job.generation_id] = artifact
        job.result_url = self.signed_url(artifact)
        self._terminate(job, "succeeded", due)

    def _terminate(self, job: Job, status: Status, due: float) -> None:
        wall = self.clock.to_wall(due)
        self._set_status(job, status)
        if job.cost is None:  # cancelled before it started: never charged
            job.cost = _NOTHING
        job.completed_at = wall
        job.changed()
        user_jobs = self._users.get(job.owner.user_id)
        if user_jobs is not None:
            user_jobs.active.pop(job.generation_id, None)
        # When it became observable (a late scheduler's lag is the emulator's, not a
        # client's): benchmarks measure detection latency from this instant.
        self.stats.completion_times[job.generation_id] = self.clock.to_wall(self.clock.now())
        if status != "cancelled":
            self._publish(job)

    def _set_status(self, job: Job, status: Status) -> None:
        self.stats.jobs_by_status[job.status] -= 1
        self.stats.jobs_by_status[status] += 1
        job.status = status

    # --- queries -----------------------------------------------------------------------

    @property
    def jobs(self) -> Mapping[str, Job]:
        """Every generation ever created (until `reset`), by id. Read-only."""
        return MappingProxyType(self._jobs)

    def job(self, user: User, generation_id: str) -> Job | None:
        """One of ``user``'s generations (another user's counts as unknown)."""
        job = self._jobs.get(generation_id)
        return job if job is not None and job.owner == user else None

    def find(
        self,
        user: User,
        *,
        status: str | None = None,
        model: str | None = None,
        media_type: str | None = None,
        namespace: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
        active_only: bool = False,
        newest_first: bool = False,
    ) -> list[Job]:
        """``user``'s generations matching every given filter, in enqueue order.

        Args:
            user: Whose generations.
            status: One status.
            model: A model id.
            media_type: ``"image"`` or ``"video"``.
            namespace: The namespace that stores the results; ``None`` for any.
            repo: The target repo.
            folder: The target directory.
            active_only: Only ``queued`` and ``processing`` generations (a cheap path: active
                generations are indexed apart).
            newest_first: Reverse the order.
        """
        with self.lock:
            user_jobs = self._users.get(user.user_id)
            if user_jobs is None:
                return []
            source = user_jobs.active if active_only else user_jobs.rows
            jobs: Iterator[Job] = iter(
                reversed(source.values()) if newest_first else source.values()
            )
            return [
                job
                for job in jobs
                if (status is None or job.status == status)
                and (model is None or job.model.id == model)
                and (media_type is None or job.media_type == media_type)
                and (namespace is None or job.namespace == namespace)
                and (repo is None or job.target_repo == repo)
                and (folder is None or job.target_directory == folder)
            ]

    def encode(self, jobs: Iterable[Job], *, history: bool = False) -> bytes:
        """Rows as JSON, comma-separated (no brackets).

        Under the lock: a transition applied from another thread between building a row and
        caching its JSON would otherwise leave a stale row cached.
        """
        with self.lock:
            return b",".join(job.history_json() if history else job.queue_json() for job in jobs)

    # --- result files ------------------------------------------------------------------

    def add_artifact(
        self,
        user: User,
        model: ModelSpec,
        params: Mapping[str, Any],
        *,
        namespace: str | None,
        inputs: Inputs | None = None,
    ) -> Artifact:
        """Record a result of a synchronous endpoint (not a queue row); returns it.

        Args:
            user: Who asked.
            model: The model.
            params: The model parameters.
            namespace: Where the result is stored; ``None`` for the user's own.
            inputs: The files an edit composes the result from.
        """
        with self.lock:
            wall = self.clock.to_wall(self.clock.now())
            artifact = Artifact(
                generation_id=str(uuid.uuid4()),
                namespace=namespace or user.username,
                model=model,
                params=dict(params),
                output=model.output(params),
                expires=int(wall + self.config.url_ttl),
                inputs=inputs or Inputs(),
            )
            self._artifacts[artifact.generation_id] = artifact
            self.stats.sync_generations += 1
            return artifact

    def artifact(self, generation_id: str) -> Artifact | None:
        """A result file by generation id."""
        return self._artifacts.get(generation_id)

    def signed_url(self, artifact: Artifact) -> str:
        """The presigned-looking URL of a result file on the file origin."""
        signature = self._sign(artifact.path, artifact.expires)
        query = f"expires={artifact.expires}&signature={signature}"
        return f"{self.files_origin}{artifact.quoted_path}?{query}"

    def signature_ok(self, artifact: Artifact, expires: str, signature: str) -> bool:
        """Whether a URL's ``expires`` and ``signature`` are this artifact's, and unexpired."""
        if expires != str(artifact.expires):
            return False
        if not hmac.compare_digest(self._sign(artifact.path, artifact.expires), signature):
            return False
        return self.clock.to_wall(self.clock.now()) <= artifact.expires

    def _sign(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), sha256).hexdigest()

    # --- events ------------------------------------------------------------------------

    def subscribe(self, user: User) -> Subscriber:
        """Open a stream for ``user``. Call from the server's event loop."""
        subscriber = Subscriber(user)
        with self.lock:
            self._subscribers.setdefault(user.user_id, set()).add(subscriber)
            self.stats.sse_connections += 1
            if self._closing:
                subscriber.signal.set()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a closed stream."""
        with self.lock:
            subscribers = self._subscribers.get(subscriber.user.user_id)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[subscriber.user.user_id]

    @property
    def closing(self) -> bool:
        """Whether the server is shutting down (streams should end)."""
        return self._closing

    def close_streams(self) -> None:
        """Ask every open stream to end (the server is shutting down)."""
        with self.lock:
            self._closing = True
            for subscribers in self._subscribers.values():
                for subscriber in subscribers:
                    subscriber.signal.set()

    def _publish(self, job: Job) -> None:
        payload: dict[str, Any] = {
            "generation_id": job.generation_id,
            "status": job.status,
            "media_type": job.media_type,
        }
        # Exactly the documented keys: `model` (not `model_name`) and `url` (not
        # `result_url`) on success; `error` (not `error_message`) and no model on failure.
        if job.status == "succeeded":
            payload["model"] = job.model.id
            payload["url"] = job.result_url
        else:
            payload["error"] = job.error_message
        self.stats.events_published += 1
        unrelated = self._event_rng.random() < self.config.unrelated_event_rate
        multiline = self._event_rng.random() < 0.5
        if self.faults.roll(self.faults.event_loss, kind="event_loss"):
            self.stats.events_dropped += 1
            self.stats.faults["event_loss"] += 1
            return
        subscribers = self._subscribers.get(job.owner.user_id)
        if not subscribers:
            return
        event = SSEEvent("media_generation_completed", dump_json(payload).decode(), payload)
        extra = unrelated_event(job, multiline=multiline) if unrelated else None
        for subscriber in subscribers:
            if extra is not None:
                subscriber.push(extra)
            subscriber.push(event)

    # --- the scheduler task --------------------------------------------------------------

    async def run_scheduler(self) -> None:
        """Apply transitions as they fall due, forever (cancel to stop).

        Sleeps until the next due instant, or until woken by a new earlier job or a jump of a
        manual clock.
        """
        signal = Signal()
        with self.lock:
            self._ticker = signal
        try:
            while True:
                signal.clear()
                self.advance()
                due = self.next_due()
                if due is None or not self.clock.realtime:
                    await signal.wait()
                    continue
                delay = due - self.clock.now()
                if delay > 0:
                    with anyio.move_on_after(delay):
                        await signal.wait()
        finally:
            with self.lock:
                if self._ticker is signal:
                    self._ticker = None

    def _wake_ticker(self) -> None:
        ticker = self._ticker
        if ticker is not None:
            ticker.set()

    # --- counters and admin ------------------------------------------------------------

    def count_request(self, method: str, template: str) -> None:
        """Count one request to a route."""
        with self.lock:
            self.stats.requests[(method, template)] += 1

    def count_fault(self, kind: str) -> None:
        """Count one injected fault."""
        with self.lock:
            self.stats.faults[kind] += 1

    def count_file_request(self, *, with_auth: bool) -> None:
        """Count one request to the file origin."""
        with self.lock:
            if with_auth:
                self.stats.file_requests_with_auth += 1
            else:
                self.stats.file_requests_without_auth += 1

    def count_delivery(self, event: SSEEvent) -> None:
        """Count one event written to a stream."""
        with self.lock:
            if event.is_completion:
                self.stats.events_delivered += 1
            else:
                self.stats.unrelated_events += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (the body of ``GET /_emulator/stats``)."""
        with self.lock:
            stats = self.stats
            return {
                "requests": {
                    f"{method} {template}": count
                    for (method, template), count in sorted(stats.requests.items())
                },
                "jobs_created": stats.jobs_created,
                "jobs_by_prompt": dict(stats.jobs_by_prompt),
                "jobs_by_status": {k: v for k, v in sorted(stats.jobs_by_status.items()) if v},
                "jobs_billed": stats.jobs_billed,
                "completion_times": dict(stats.completion_times),
                "events": {
                    "published": stats.events_published,
                    "delivered": stats.events_delivered,
                    "dropped": stats.events_dropped,
                    "unrelated": stats.unrelated_events,
                },
                "sse_connections": stats.sse_connections,
                "sse_open": sum(len(subs) for subs in self._subscribers.values()),
                "faults": dict(sorted(stats.faults.items())),
                "file_requests": {
                    "with_authorization": stats.file_requests_with_auth,
                    "without_authorization": stats.file_requests_without_auth,
                },
                "sync_generations": stats.sync_generations,
                "time_scale": self.time_scale,
            }

    def reset(self) -> None:
        """Forget every job, result file and counter (open streams stay open)."""
        with self.lock:
            self._jobs.clear()
            self._users.clear()
            self._heap.clear()
            self._artifacts.clear()
            self.stats = Stats()
