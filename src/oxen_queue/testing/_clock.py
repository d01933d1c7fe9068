"""Clocks that decide when emulated jobs start and finish.

The scheduler works on a monotonic scale (``now()``) and reports Unix wall-clock times
(``to_wall()``), so that a benchmark in another process can compare completion times with
its own ``time.time()``. [`ManualClock`][oxen_queue.testing.ManualClock] moves only when a test
tells it to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    """What the emulator needs from a clock."""

    @property
    def realtime(self) -> bool:
        """Whether time passes by itself (so the emulator may sleep until the next event)."""
        ...

    def now(self) -> float:
        """The current instant, in seconds on a monotonic scale."""
        ...

    def to_wall(self, instant: float) -> float:
        """The Unix time of ``instant`` (a value returned by
        [`now`][oxen_queue.testing.Clock.now])."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` whenever the clock jumps; returns a function that unsubscribes."""
        ...


class MonotonicClock:
    """Real time: ``time.monotonic()`` for scheduling, ``time.time()`` for timestamps."""

    @property
    def realtime(self) -> bool:
        """Always true: real time passes by itself."""
        return True

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def to_wall(self, instant: float) -> float:
        """Convert a monotonic instant to Unix time.

        The offset is taken afresh on each call, so a wall-clock adjustment since the instant
        does not skew recent values.
        """
        return time.time() - (time.monotonic() - instant)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Real time never jumps: the listener is never called."""
        del listener
        return _noop


class ManualClock:
    """A clock that moves only when told to, for deterministic tests.

    Pass it to the emulator, then move time and apply what fell due:

    ```python
    clock = ManualClock()
    app = create_app(config=EmulatorConfig(seed=1), clock=clock)
    ...  # enqueue
    clock.advance(10.0)
    app.state.advance()  # jobs due by now have started or finished
    ```

    Any HTTP request also applies due transitions first. On a running
    [`Emulator`][oxen_queue.testing.Emulator], ``advance`` also wakes the server's scheduler, so
    completion events are sent without an explicit ``state.advance()``. The synchronous endpoints
    (``/api/ai/images/generate``) answer at once under a manual clock.

    Args:
        start: The initial value of [`now`][oxen_queue.testing.ManualClock.now].
        wall_start: The Unix time that ``start`` stands for. Defaults to ``time.time()``.
    """

    def __init__(self, *, start: float = 0.0, wall_start: float | None = None) -> None:
        self._start = start
        self._now = start
        self._wall_start = time.time() if wall_start is None else wall_start
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def realtime(self) -> bool:
        """Always false: this clock moves only through
        [`advance`][oxen_queue.testing.ManualClock.advance]."""
        return False

    def now(self) -> float:
        """Return the current manual instant."""
        return self._now

    def to_wall(self, instant: float) -> float:
        """Convert an instant to Unix time: ``wall_start + (instant - start)``."""
        return self._wall_start + (instant - self._start)

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Args:
            seconds: How far to move, in seconds (not negative).

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: seconds={seconds!r}")
        with self._lock:
            self._now += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every [`advance`][oxen_queue.testing.ManualClock.advance];
        returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"


def _noop() -> None:
    return None
