"""How completion is learned: the strategies behind ``Generation``.

* ``poll``: each generation polled on its own backoff timer (`_polling`).
* ``shared``: one list request per tick for every pending generation (`_shared`).
* ``events``: the ``/api/events`` stream, reconciled after every reconnect (`_events`).
* ``auto``: events, with shared polling as a slow backstop, and polling alone when the stream
  cannot be opened (`_auto`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._events import EventWatcher
from ._polling import PollingWatcher
from ._shared import SharedPollWatcher

if TYPE_CHECKING:
    from .._poll import PollPolicy
    from ._base import QueueAPI, Watcher

__all__ = ["CompletionMode", "make_watcher"]

CompletionMode = Literal["auto", "events", "shared", "poll"]


def make_watcher(
    mode: CompletionMode,
    api: QueueAPI,
    policy: PollPolicy,
    *,
    shared_interval: float = 1.0,
    backstop_interval: float = 10.0,
    stall_timeout: float = 45.0,
) -> Watcher:
    """The watcher for a completion mode.

    Args:
        mode: The completion mode.
        api: The requests a watcher may make.
        policy: Backoff of per-generation polling (``poll`` mode).
        shared_interval: Seconds between shared-poll ticks (``shared`` mode, and ``auto``
            while the stream is down or unavailable, or while a pending generation has
            subscribers of ``updates()``).
        backstop_interval: Seconds between shared-poll ticks behind a healthy stream
            (``auto``), which catch cancellations and lost events.
        stall_timeout: Seconds of silence after which the event stream is reopened.
    """
    if mode == "auto":
        return EventWatcher(
            api,
            backstop=backstop_interval,
            fallback=True,
            poll_interval=shared_interval,
            # Someone follows updates(): learn `processing` within a tick, not a backstop's.
            # One list per tick for every pending generation, whatever the subscribers.
            watch_interval=shared_interval,
            connect_wait=None,  # enqueues go at once; the opening's reconciliation covers them
            stall_timeout=stall_timeout,
        )
    if mode == "events":
        return EventWatcher(api, backstop=None, fallback=False, stall_timeout=stall_timeout)
    if mode == "shared":
        return SharedPollWatcher(api, interval=shared_interval)
    if mode == "poll":
        return PollingWatcher(api, policy)
    raise ValueError(f"completion must be one of auto, events, shared, poll; not {mode!r}")
