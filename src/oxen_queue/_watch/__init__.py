"""How completion is learned: the strategies behind ``Generation``.

* ``poll``: each generation polled on its own backoff timer (:mod:`._polling`).
* ``shared``: one list request per tick for every pending generation (:mod:`._shared`).
* ``events``: the ``/api/events`` stream, reconciled after every reconnect (:mod:`._events`).
* ``auto``: events, with shared polling as a slow backstop, and polling alone when the stream
  cannot be opened (:mod:`._auto`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from ._events import EventWatcher
from ._polling import PollingWatcher
from ._shared import SharedPollWatcher

if TYPE_CHECKING:
    from .._poll import PollPolicy
    from ._base import QueueAPI, Watcher

__all__ = ["CompletionMode", "make_watcher"]

CompletionMode = Literal["auto", "events", "shared", "poll"]


AUTO_BACKSTOP: Final = 10.0
"""Seconds between the shared-poll ticks behind a healthy event stream, in ``auto`` mode."""

SHARED_INTERVAL: Final = 1.0
"""Seconds between shared-poll ticks (``shared`` mode, and ``auto`` without a stream)."""


def make_watcher(mode: CompletionMode, api: QueueAPI, policy: PollPolicy) -> Watcher:
    """The watcher for a completion mode."""
    if mode == "auto":
        return EventWatcher(
            api, backstop=AUTO_BACKSTOP, fallback=True, poll_interval=SHARED_INTERVAL
        )
    if mode == "events":
        return EventWatcher(api, backstop=None, fallback=False)
    if mode == "shared":
        return SharedPollWatcher(api, interval=SHARED_INTERVAL)
    if mode == "poll":
        return PollingWatcher(api, policy)
    raise ValueError(f"completion must be one of auto, events, shared, poll; not {mode!r}")
