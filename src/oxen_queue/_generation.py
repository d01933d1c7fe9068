"""The awaitable handle of one generation: a small state machine that does no HTTP.

A :class:`Generation` is resolved by the client's completion watcher (polling, shared polling or
the event stream, see ``_watch``) and awaited by any number of tasks. Awaiting it only waits
for that resolution, so awaiting twice, or from many tasks at once, costs no request; and
abandoning a wait (``asyncio.wait_for`` timing out, a task cancelled) leaves the generation
and its watcher untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio

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
    "expire_if_due",
    "fail",
    "note_status",
    "observe",
    "remaining",
    "watch_deadline",
]

logger = logging.getLogger("oxen_queue")

Callback = Callable[["Generation"], object]


class GenerationOwner(Protocol):
    """What a Generation needs from its client: the few operations it delegates."""

    async def cancel(self, generation: Generation | str) -> None: ...

    async def get_generation(self, generation_id: str) -> GenerationRecord: ...

    async def download(
        self, source: Generation | GenerationRecord, path: str | os.PathLike[str] | None = None
    ) -> Path: ...

    def _generation_done(self, generation: Generation) -> None: ...


class Generation:
    """One generation on the queue: await it for its final record.

    ``await generation`` returns the :class:`GenerationRecord` once the status is
    ``succeeded``, and raises :class:`GenerationFailedError` (``failed``),
    :class:`GenerationCancelledError` (``cancelled``) or :class:`GenerationTimeoutError` (its
    deadline passed). Generations work with ``asyncio.gather``, ``asyncio.wait_for``, task
    groups and trio. Get them from ``AsyncClient.enqueue`` or reattach with
    ``AsyncClient.generation(id)``.

    Attributes:
        id: The generation id, as the server gave it.
        model: The model it runs on, when known.
        params: The parameters this client sent (empty for a reattached generation). The
            generations of one request share the dict: read it, do not change it.
        deadline: Seconds after creation of this handle before waits give up with
            :class:`GenerationTimeoutError`; ``None`` means no limit.
    """

    __slots__ = (
        "_callbacks",
        "_created",
        "_outcome",
        "_owner",
        "_record",
        "_signal",
        "_status",
        "_watched_deadline",
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
        # Made on the first wait; a waiter then costs a future, not an event and a timer.
        self._signal: Signal | None = None
        # One callback, or a list of them: most generations have exactly one.
        self._callbacks: Callback | list[Callback] | None = None
        self._created = anyio.current_time()
        # Whether the client ends this generation at its deadline (see watch_deadline), so a
        # waiter needs no timer of its own.
        self._watched_deadline = False

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
        if self._outcome is None and self._watched_deadline:
            # The common case, kept lean (thousands may wait at once): the client ends the
            # generation at its deadline, so there is nothing to time here.
            if self._signal is None:
                self._signal = Signal()
            yield from self._signal.wait().__await__()
            return self.result()
        return (yield from self.wait().__await__())

    async def wait(self, *, timeout: float | None = None) -> GenerationRecord:
        """Wait for the final record.

        Args:
            timeout: Seconds to wait this time; ``None`` waits up to the generation's own
                deadline. When this timeout expires, ``TimeoutError`` is raised and the
                generation carries on (unlike its deadline, which ends it).

        Raises:
            GenerationFailedError: The status became ``failed``.
            GenerationCancelledError: The status became ``cancelled``.
            GenerationTimeoutError: The generation's deadline passed first.
            TimeoutError: ``timeout`` expired first.
            OxenError: The status could not be learned (the id is unknown, the key refused).
        """
        if self._outcome is None:
            if self._signal is None:
                self._signal = Signal()
            if timeout is None and self._watched_deadline:
                await self._signal.wait()  # the client ends it at its deadline
                return self.result()
            remaining = self._remaining()
            wait_for = remaining if timeout is None else min(timeout, remaining)
            with anyio.move_on_after(wait_for):
                await self._signal.wait()
            if self._outcome is None:
                if self._remaining() <= 0:
                    self._expire()
                else:
                    raise TimeoutError(
                        f"generation {self.id} is still {self._status} after {timeout:g} s"
                    )
        return self.result()

    async def cancel(self) -> None:
        """Cancel the job on the server (``DELETE /api/ai/queue/{id}``).

        A job already finished is left as it is ("cancelling a generation that has already
        reached a terminal state has no effect"). Waiters see :class:`GenerationCancelledError`
        once the cancellation is confirmed.
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

    # -- used by the completion watchers -------------------------------------------------

    def _remaining(self) -> float:
        if self.deadline is None:
            return math.inf
        return self._created + self.deadline - anyio.current_time()

    def _observe(self, record: GenerationRecord) -> bool:
        """Take note of a row; resolve when its status is final. Returns whether it is done."""
        if self._outcome is not None:
            return True
        if self.model is None and record.model_name:
            self.model = record.model_name
        self._status = record.status
        self._record = record
        if record.status not in TERMINAL_STATUSES:
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
        if self._outcome is None and status not in TERMINAL_STATUSES:
            self._status = status

    def _fail(self, error: OxenError) -> None:
        """End the generation with an error that is not the server's verdict."""
        if self._outcome is None:
            self._resolve(error)

    def _expire(self) -> None:
        assert self.deadline is not None
        self._fail(GenerationTimeoutError(generation_id=self.id, deadline=self.deadline))

    def _resolve(self, outcome: GenerationRecord | BaseException) -> None:
        self._outcome = outcome
        if self._signal is not None:
            self._signal.set()
        self._owner._generation_done(self)
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is None:
            return
        for callback in callbacks if isinstance(callbacks, list) else (callbacks,):
            try:
                callback(self)
            except Exception:
                logger.exception("done callback of generation %s failed", self.id)


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


def expire_if_due(generation: Generation) -> bool:
    """End the generation with ``GenerationTimeoutError`` if its deadline has passed.

    Returns:
        Whether the generation is done (expired now or earlier).
    """
    if not generation.done() and generation._remaining() <= 0:
        generation._expire()
    return generation.done()


def remaining(generation: Generation) -> float:
    """Seconds until the generation's deadline (``math.inf`` without one)."""
    return generation._remaining()


def watch_deadline(generation: Generation) -> float | None:
    """Have the caller end the generation at its deadline (with :func:`expire_if_due`).

    Its waiters then need no timer of their own.

    Returns:
        When the deadline falls, on anyio's clock; ``None`` without one (nothing to watch).
    """
    if generation.deadline is None:
        return None
    generation._watched_deadline = True
    return generation._created + generation.deadline
