"""The awaitable handle of one generation: a small state machine that does no HTTP.

A [`Generation`][oxen_queue.Generation] is resolved by the client's completion watcher (polling,
shared polling or the event stream, see ``_watch``) and awaited by any number of tasks. Awaiting it
only waits for that resolution, so awaiting twice, or from many tasks at once, costs no request; and
abandoning a wait (``asyncio.wait_for`` timing out, a task cancelled) leaves the generation
and its watcher untouched.

``generation.updates()`` follows it as it goes: each subscriber holds one slot for the latest
non-final status it has not taken yet, and learns the final outcome from the generation itself,
so a slow consumer never blocks the watcher, and costs no memory past that slot and no request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

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

__all__ = [
    "Generation",
    "GenerationOwner",
    "due",
    "expire_if_due",
    "fail",
    "note_status",
    "observe",
    "watch_subscriptions",
]

logger = logging.getLogger("oxen_queue")

UNKNOWN: Final = "unknown"
"""The status of a reattached handle before its first row is seen."""
Callback = Callable[["Generation"], object]


class GenerationOwner(Protocol):
    """What a Generation needs from the client core that made it: the operations it delegates."""

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
        # A dict is kept as it is, not copied: one per generation would be the largest part
        # of a pending generation's own memory after the waiting machinery.
        self.params: dict[str, Any] = params if isinstance(params, dict) else dict(params or {})
        self.deadline = deadline
        self._owner = owner
        self._status = status
        self._record: GenerationRecord | None = None
        self._outcome: GenerationRecord | BaseException | None = None
        self._subscribers: set[_Subscription] | None = None
        self._watch_listener: Callable[[Generation, bool], object] | None = None
        # Made on the first wait; a waiter then costs a future, not an event and a timer.
        self._signal: Signal | None = None
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
        # Kept lean (thousands may wait at once): the client ends the generation at its
        # deadline, so there is nothing to time here.
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
        if self._outcome is None:
            if self._signal is None:
                self._signal = Signal()
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await self._signal.wait()
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
        self._observe(record)
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
        read). Then each change is yielded once, in order, and the final record (``succeeded``,
        ``failed`` with its ``error_message``, or ``cancelled``) is the last item: iteration
        ends after it, without raising. The client's one watcher drives every subscriber, so
        any number of them costs no request. A consumer slower than the changes is never
        waited for: it gets the latest non-final status it missed (``queued`` may be skipped
        for ``processing``), and always the final one.

        What the watcher sees depends on ``completion``: in ``"auto"``, a generation that has
        subscribers is polled with the others every ``shared_poll_interval`` (one list request
        per tick for all of them, rather than every ``backstop_interval``); ``"events"``
        learns only final states, so it yields the current status, then the final one.

        Cancelling the consumer (a timeout, a task cancelled) or closing the iterator ends the
        subscription; the generation carries on. Breaking out of the loop leaves the
        subscription until the iterator is closed or garbage collected, and it ends in any
        case with the generation (wrap it in ``contextlib.aclosing`` to end it at once).

        Raises:
            GenerationTimeoutError: The generation's deadline passed, after the records seen
                before it.
            ClientClosedError: The client closed before the generation finished.
            OxenError: Its status could not be learned (the id is unknown, the key refused).
        """
        subscription = _Subscription()
        if self._outcome is None:
            subscription.latest = self._current()
            self._subscribe(subscription)
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
                else:
                    await self._next_update(subscription)
        finally:
            self._unsubscribe(subscription)
        outcome = self._outcome
        if isinstance(outcome, GenerationRecord):
            yield outcome
        elif (
            isinstance(outcome, GenerationFailedError | GenerationCancelledError)
            and outcome.record is not None
        ):
            yield outcome.record
        elif outcome is not None:
            raise outcome

    # -- used by the completion watchers -------------------------------------------------

    @property
    def _due(self) -> float:
        """When the deadline falls, on anyio's clock (``math.inf`` without one)."""
        return math.inf if self.deadline is None else self._created + self.deadline

    def _observe(self, record: GenerationRecord) -> bool:
        """Take note of a row; resolve when its status is final. Returns whether it is done."""
        if self._outcome is not None:
            return True
        if self.model is None and record.model_name:
            self.model = record.model_name
        changed = record.status != self._status
        self._status = record.status
        self._record = record
        if record.status not in TERMINAL_STATUSES:
            if changed:
                self._publish(record)
            return False
        if record.status == "succeeded":
            self._resolve(record)
        elif record.status == "failed":
            self._resolve(
                GenerationFailedError(
                    generation_id=self.id, error_message=record.error_message, record=record
                )
            )
        else:
            self._resolve(GenerationCancelledError(generation_id=self.id, record=record))
        return True

    def _note_status(self, status: str) -> None:
        """Take note of a non-final status seen in a list (no full row at hand)."""
        if self._outcome is None and status not in TERMINAL_STATUSES and status != self._status:
            self._status = status
            if self._subscribers:
                current = self._current()
                assert current is not None
                self._publish(current)

    def _fail(self, error: OxenError) -> None:
        """End the generation with an error that is not the server's verdict."""
        if self._outcome is None:
            self._resolve(error)

    def _resolve(self, outcome: GenerationRecord | BaseException) -> None:
        self._outcome = outcome
        if self._signal is not None:
            self._signal.set()
        subscribers, self._subscribers = self._subscribers, None
        if subscribers:
            for subscription in subscribers:
                subscription.wake()  # each takes the outcome from here
            self._tell_watcher(watched=False)
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is None:
            return
        for callback in callbacks if isinstance(callbacks, list) else (callbacks,):
            try:
                callback(self)
            except Exception:
                logger.exception("done callback of generation %s failed", self.id)

    # -- subscribers of updates() ---------------------------------------------------------

    def _current(self) -> GenerationRecord | None:
        """The current state as a record (``None`` while it is unknown).

        The last row when its status is current; otherwise (a status seen in a list) a
        record built from what this handle knows, as for a completion event.
        """
        status = self._status
        if status == UNKNOWN:
            return None
        record = self._record
        if record is not None:
            return (
                record if record.status == status else record.model_copy(update={"status": status})
            )
        return GenerationRecord.model_validate(
            {**self.params, "generation_id": self.id, "status": status, "model_name": self.model}
        )

    def _publish(self, record: GenerationRecord) -> None:
        for subscription in self._subscribers or ():
            subscription.latest = record  # coalesced: a slow consumer gets the latest
            subscription.wake()

    def _subscribe(self, subscription: _Subscription) -> None:
        if self._subscribers is None:
            self._subscribers = set()
        self._subscribers.add(subscription)
        if len(self._subscribers) == 1:
            self._tell_watcher(watched=True)

    def _unsubscribe(self, subscription: _Subscription) -> None:
        subscribers = self._subscribers
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers = None
                self._tell_watcher(watched=False)

    def _tell_watcher(self, *, watched: bool) -> None:
        if self._watch_listener is not None:
            try:
                self._watch_listener(self, watched)
            except Exception:
                logger.exception("subscription listener of generation %s failed", self.id)

    async def _next_update(self, subscription: _Subscription) -> None:
        """Wait for a change or the outcome (the client ends the generation at its deadline)."""
        subscription.wakeup = wakeup = Signal()
        try:
            await wakeup.wait()
        finally:
            subscription.wakeup = None


class _Subscription:
    """One consumer of ``updates()``: the latest change it has not taken, and its wake-up."""

    __slots__ = ("latest", "wakeup")

    def __init__(self) -> None:
        self.latest: GenerationRecord | None = None
        self.wakeup: Signal | None = None

    def wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()


# -- how watchers settle a Generation: the package-internal side of the handle ------------------


def observe(generation: Generation, record: GenerationRecord) -> bool:
    """Take note of a row; resolve the generation when its status is final.

    Returns:
        Whether the generation is done.
    """
    return generation._observe(record)


def note_status(generation: Generation, status: str) -> None:
    """Take note of a non-final status seen in a list (no full row at hand)."""
    generation._note_status(status)


def fail(generation: Generation, error: OxenError) -> None:
    """End the generation with an error that is not the server's verdict."""
    generation._fail(error)


def due(generation: Generation) -> float:
    """When the generation's deadline falls, on anyio's clock (``math.inf`` without one)."""
    return generation._due


def expire_if_due(generation: Generation) -> None:
    """End the generation with ``GenerationTimeoutError`` if its deadline has passed: the one
    place a deadline ends a generation (the client's deadline task calls it)."""
    if generation.deadline is not None and generation._due <= anyio.current_time():
        generation._fail(
            GenerationTimeoutError(generation_id=generation.id, deadline=generation.deadline)
        )


def watch_subscriptions(
    generation: Generation, listener: Callable[[Generation, bool], object] | None
) -> None:
    """Be told when a generation gains its first subscriber of ``updates()`` (``True``) and
    loses its last one (``False``), so a watcher can look more often while someone watches.

    ``None`` stops telling. Only one listener: the watcher that tracks the generation.
    """
    generation._watch_listener = listener
