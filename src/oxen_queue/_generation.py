"""The awaitable handle of one generation: a state machine that does no HTTP.

The client's watcher (``_watch``) settles it through the functions at the end of this module.
Any number of tasks may await it at no request each; abandoning a wait leaves it untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._durations import optional_seconds
from ._exceptions import (
    GenerationCancelledError,
    GenerationFailedError,
    GenerationTimeoutError,
    OxenError,
)
from ._models import TERMINAL_STATUSES, GenerationRecord
from ._signal import Signal

if TYPE_CHECKING:
    import os
    from pathlib import Path

logger = logging.getLogger("oxen_queue")

Callback = Callable[["Generation"], object]


class GenerationOwner(Protocol):
    """The operations a Generation delegates to the client core that made it."""

    async def cancel(self, generation: Generation | str) -> None: ...

    async def get_generation(self, generation_id: str) -> GenerationRecord: ...

    async def download(
        self, source: Generation | GenerationRecord, path: str | os.PathLike[str] | None = None
    ) -> Path: ...


class Generation:
    """One generation on the queue: await it for its final record.

    ``await generation`` returns the [`GenerationRecord`][oxen_queue.GenerationRecord] once the
    status is ``succeeded``, and raises [`GenerationFailedError`][oxen_queue.GenerationFailedError]
    (``failed``), [`GenerationCancelledError`][oxen_queue.GenerationCancelledError] (``cancelled``)
    or [`GenerationTimeoutError`][oxen_queue.GenerationTimeoutError] (its deadline passed).
    Generations work with ``asyncio.gather``, ``asyncio.wait_for``, task groups and trio. Get them
    from ``AsyncClient.enqueue`` or reattach with ``AsyncClient.generation(id)``.

    Attributes:
        id: The generation id, as the server gave it.
        model: The model it runs on, when known.
        params: The parameters this client sent (empty for a reattached generation). The
            generations of one request share the dict: read it, do not change it.
        deadline: Seconds after creation of this handle before waits give up with
            [`GenerationTimeoutError`][oxen_queue.GenerationTimeoutError]; ``None`` means no limit.
    """

    __slots__ = (
        "_callbacks",
        "_created",
        "_outcome",
        "_owner",
        "_record",
        "_signal",
        "_status",
        "_subscribers",
        "_watch_listener",
        "deadline",
        "id",
        "model",
        "params",
    )

    def __init__(
        self,
        generation_id: str,
        *,
        owner: GenerationOwner,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        status: str = "queued",
        deadline: float | None = None,
    ) -> None:
        self.id = generation_id
        self.model = model
        # Not copied: a copy would be most of a pending generation's memory.
        self.params: dict[str, Any] = params if isinstance(params, dict) else dict(params or {})
        self.deadline = deadline
        self._owner = owner
        self._status = status
        self._record: GenerationRecord | None = None
        self._outcome: GenerationRecord | BaseException | None = None
        self._subscribers: set[_Subscription] | None = None
        self._watch_listener: Callable[[Generation, bool], object] | None = None
        self._signal: Signal | None = None  # made on the first wait
        # One callback, or a list of them: most generations have exactly one.
        self._callbacks: Callback | list[Callback] | None = None
        self._created = anyio.current_time()

    def __repr__(self) -> str:
        model = f" model={self.model!r}" if self.model else ""
        return f"<Generation {self.id}{model} status={self._status!r}>"

    @property
    def status(self) -> str:
        """The last status seen: ``queued``, ``processing``, ``succeeded``, ``failed``, ...."""
        return self._status

    @property
    def record(self) -> GenerationRecord | None:
        """The last row seen, or ``None`` when none has been fetched yet."""
        return self._record

    def done(self) -> bool:
        """Whether the generation has an outcome (a final status, an error, or a timeout)."""
        return self._outcome is not None

    def result(self) -> GenerationRecord:
        """The final record, without waiting.

        Raises:
            RuntimeError: The generation is not done yet.
            GenerationError: It failed or was cancelled (and the other errors of ``await``).
        """
        outcome = self._outcome
        if outcome is None:
            raise RuntimeError(f"generation {self.id} is not done yet (status {self._status!r})")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def __await__(self) -> Generator[Any, None, GenerationRecord]:
        # No timer: the client ends the generation at its deadline.
        if self._outcome is None:
            if self._signal is None:
                self._signal = Signal()
            yield from self._signal.wait().__await__()
        return self.result()

    async def wait(self, *, timeout: float | None = None) -> GenerationRecord:
        """Wait for the final record.

        Args:
            timeout: Seconds to wait this time; ``None`` waits up to the generation's own
                deadline (when the client ends it). When this timeout expires,
                ``TimeoutError`` is raised and the generation carries on (unlike its
                deadline, which ends it).

        Raises:
            GenerationFailedError: The status became ``failed``.
            GenerationCancelledError: The status became ``cancelled``.
            GenerationTimeoutError: The generation's deadline passed first.
            TimeoutError: ``timeout`` expired first.
            InvalidParamsError: ``timeout`` is neither ``None`` nor a finite number of seconds
                above zero.
            OxenError: The status could not be learned (the id is unknown, the key refused).
        """
        timeout = optional_seconds(timeout, field="timeout")
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            return await self
        if self._outcome is None:
            # The status is the server's word: repr() shows any control character escaped.
            raise TimeoutError(
                f"generation {self.id} is still {self._status!r:.40} after {timeout:g} s"
            )
        return self.result()

    async def cancel(self) -> None:
        """Cancel the job on the server (``DELETE /api/ai/queue/{id}``).

        A job already finished is left as it is ("cancelling a generation that has already
        reached a terminal state has no effect"). Waiters see
        [`GenerationCancelledError`][oxen_queue.GenerationCancelledError] once the cancellation is
        confirmed.
        """
        await self._owner.cancel(self)

    async def refresh(self) -> GenerationRecord:
        """Fetch the full current row (``GET /api/ai/queue/{id}``), and take note of it.

        Useful after completion through the event stream, whose record lacks the timestamps.
        """
        record = await self._owner.get_generation(self.id)
        observe(self, record)
        return record

    async def download(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Wait for the result, then save it to ``path`` (see ``AsyncClient.download``)."""
        await self.wait()
        return await self._owner.download(self, path)

    def add_done_callback(self, callback: Callable[[Generation], object]) -> None:
        """Call ``callback(generation)`` once it is done (at once if it already is)."""
        if self._outcome is not None:
            callback(self)
            return
        callbacks = self._callbacks
        if callbacks is None:
            self._callbacks = callback
        elif isinstance(callbacks, list):
            callbacks.append(callback)
        else:
            self._callbacks = [callbacks, callback]

    async def updates(self) -> AsyncGenerator[GenerationRecord, None]:
        """Each status change, as a record, until the final one.

        ```python
        async for record in generation.updates():
            print(record.status)  # queued, processing, then succeeded (or failed, ...)
        ```

        The first record is the current state (for a reattached generation, once its row is
        read); then each change, once, in order. The final record (``succeeded``, ``failed``
        with its ``error_message``, or ``cancelled``) is the last: iteration ends after it,
        without raising. The client's one watcher drives every subscriber, at no request
        each, and never waits for a slow one: it gets the latest non-final status it missed
        (``queued`` may be skipped for ``processing``), and always the final one.

        In ``"auto"`` completion, a generation with subscribers is polled with the others every
        ``shared_poll_interval``; ``"events"`` learns only final states.

        Cancelling the consumer or closing the iterator ends the subscription; the generation
        carries on. After a ``break``, the subscription lasts until the iterator is closed or
        collected, or the generation ends (``contextlib.aclosing`` ends it at once).

        Raises:
            GenerationTimeoutError: The generation's deadline passed, after the records seen
                before it.
            ClientClosedError: The client closed before the generation finished.
            OxenError: Its status could not be learned (the id is unknown, the key refused).
        """
        subscription = _Subscription()
        if self._outcome is None:
            subscription.latest = self._current()
            if self._subscribers is None:
                self._subscribers = set()
                self._tell_watcher(watched=True)
            self._subscribers.add(subscription)
        last: str | None = None
        try:
            while True:
                record, subscription.latest = subscription.latest, None
                if record is not None:
                    if record.status != last:  # a status that came back is no change
                        last = record.status
                        yield record
                elif self._outcome is not None:
                    break
                else:  # the client ends the generation at its deadline: no timer here
                    await subscription.wakeup.wait()
                    subscription.wakeup = Signal()  # what sets it next sets `latest` first
        finally:
            if self._subscribers and subscription in self._subscribers:
                self._subscribers.remove(subscription)
                if not self._subscribers:
                    self._subscribers = None
                    self._tell_watcher(watched=False)
        outcome = self._outcome
        if isinstance(outcome, GenerationFailedError | GenerationCancelledError) and outcome.record:
            yield outcome.record
        else:
            yield self.result()

    # -- used by observe() and updates() -----------------------------------------------

    def _resolve(self, outcome: GenerationRecord | BaseException) -> None:
        self._outcome = outcome
        if self._signal is not None:
            self._signal.set()
        subscribers, self._subscribers = self._subscribers, None
        if subscribers:
            for subscription in subscribers:
                subscription.wakeup.set()  # each takes the outcome from here
            self._tell_watcher(watched=False)
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is None:
            return
        for callback in callbacks if isinstance(callbacks, list) else (callbacks,):
            try:
                callback(self)
            except Exception:
                logger.exception("done callback of generation %s failed", self.id)

    def _current(self) -> GenerationRecord | None:
        """The current state as a record (``None`` while it is unknown): the last row, its
        status updated from a list if need be, or one built as for a completion event."""
        status = self._status
        if status == "unknown":
            return None
        record = self._record
        if record is None:
            row = dict(self.params, generation_id=self.id, status=status, model_name=self.model)
            return GenerationRecord.model_validate(row)
        return record if record.status == status else record.model_copy(update={"status": status})

    def _publish(self, record: GenerationRecord) -> None:
        for subscription in self._subscribers or ():
            subscription.latest = record  # coalesced: a slow consumer gets the latest
            subscription.wakeup.set()

    def _tell_watcher(self, *, watched: bool) -> None:
        if self._watch_listener is not None:
            self._watch_listener(self, watched)


@dataclass(slots=True, eq=False)
class _Subscription:
    """One consumer of ``updates()``: the latest change it has not taken, and its wake-up."""

    latest: GenerationRecord | None = None
    wakeup: Signal = field(default_factory=Signal)


# -- how watchers settle a Generation ------------------------------------------------------------


def observe(generation: Generation, record: GenerationRecord) -> bool:
    """Take note of a row; resolve the generation when its status is final.

    Returns:
        Whether the generation is done.
    """
    if generation._outcome is not None:
        return True
    if generation.model is None and record.model_name:
        generation.model = record.model_name
    changed = record.status != generation._status
    generation._status = record.status
    generation._record = record
    if record.status == "succeeded":
        generation._resolve(record)
    elif record.status == "failed":
        generation._resolve(
            GenerationFailedError(
                generation_id=generation.id, error_message=record.error_message, record=record
            )
        )
    elif record.status in TERMINAL_STATUSES:
        generation._resolve(GenerationCancelledError(generation_id=generation.id, record=record))
    else:
        if changed:
            generation._publish(record)
        return False
    return True


def note_status(generation: Generation, status: str) -> None:
    """Take note of a non-final status seen in a list (no full row at hand)."""
    g = generation
    if g._outcome is None and status not in TERMINAL_STATUSES and status != g._status:
        g._status = status
        if g._subscribers:
            current = g._current()
            assert current is not None
            g._publish(current)


def fail(generation: Generation, error: OxenError) -> None:
    """End the generation with an error that is not the server's verdict."""
    if generation._outcome is None:
        generation._resolve(error)


def due(generation: Generation) -> float:
    """When the generation's deadline falls, on anyio's clock (``math.inf`` without one)."""
    deadline = generation.deadline
    return math.inf if deadline is None else generation._created + deadline


def expire_if_due(generation: Generation) -> None:
    """End the generation with ``GenerationTimeoutError`` once its deadline has passed: the
    one place a deadline ends a generation (the client's deadline task calls it)."""
    deadline = generation.deadline
    if deadline is not None and due(generation) <= anyio.current_time():
        fail(generation, GenerationTimeoutError(generation_id=generation.id, deadline=deadline))


def watch_subscriptions(
    generation: Generation, listener: Callable[[Generation, bool], object]
) -> None:
    """Tell ``listener`` (the one watcher tracking the generation) when it gains its first
    subscriber of ``updates()`` (``True``) and loses its last one (``False``)."""
    generation._watch_listener = listener
