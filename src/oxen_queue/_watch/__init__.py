"""How completion is learned: the strategies behind ``Generation``.

* ``poll``: each generation polled on its own backoff timer (`PollingWatcher`).
* ``shared``: one list request per tick for every pending generation (`SharedPollWatcher`).
* ``events``: the ``/api/events`` stream, reconciled after every reconnect (`EventWatcher`).
* ``auto``: events, with shared polling as a slow backstop, and as the fallback while the
  stream is down or cannot be had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

from ._base import PollingWatcher, SharedPollWatcher
from ._events import EventWatcher

if TYPE_CHECKING:
    from .._poll import PollPolicy
    from ._base import QueueAPI

__all__ = ["CompletionMode", "Watcher", "make_watcher"]

CompletionMode = Literal["auto", "events", "shared", "poll"]
Watcher: TypeAlias = EventWatcher | SharedPollWatcher | PollingWatcher


def make_watcher(
    mode: CompletionMode,
    api: QueueAPI,
    policy: PollPolicy,
    *,
    shared_poll_interval: float,
    backstop_interval: float,
    stall_timeout: float,
) -> Watcher:
    """The watcher for a completion mode, with the ``AsyncClient`` settings of the same names
    (``policy``: its ``poll_policy``)."""
    if mode == "auto":
        return EventWatcher(
            api,
            backstop=backstop_interval,
            fallback=True,
            poll_interval=shared_poll_interval,
            connect_wait=None,  # enqueues go at once; the opening's reconciliation covers them
            stall_timeout=stall_timeout,
        )
    if mode == "events":
        return EventWatcher(api, backstop=None, fallback=False, stall_timeout=stall_timeout)
    if mode == "shared":
        return SharedPollWatcher(api, interval=shared_poll_interval)
    if mode == "poll":
        return PollingWatcher(api, policy)
    raise ValueError(f"completion must be one of auto, events, shared, poll; not {mode!r}")
