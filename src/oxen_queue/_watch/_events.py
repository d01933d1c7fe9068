"""Completion from the event stream (``GET /api/events``), with shared polling behind it.

One stream per client, opened before the first enqueue: "No buffering or replay ... Anything
that fires before you connect is lost. Subscribe before calling POST /ai/queue" (async queue
reference). ``media_generation_completed`` events are dispatched by ``generation_id`` to the
waiting generations; other event types, comments and keep-alives are ignored, and a malformed
event is skipped, never fatal.

What the stream cannot tell is left to the shared poller (:mod:`._shared`):

* after every reconnect, one reconciliation tick (events may have fired while disconnected);
* cancellations, which get no event;
* in ``auto`` mode, a slow periodic backstop for events lost in transit, and fast polling
  whenever the stream is down, or for good when it cannot be opened at all (404, 401/403, or
  repeated failures), with a debug log saying so.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import OrderedDict
from contextlib import aclosing
from typing import TYPE_CHECKING, Final, Literal

import anyio
import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError
from pydantic import ValidationError

from .._exceptions import APIStatusError, OxenError
from .._models import TERMINAL_STATUSES, CompletionEvent
from ._base import guarded
from ._shared import SharedPollWatcher

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from ._base import QueueAPI

__all__ = ["EventWatcher"]

logger = logging.getLogger("oxen_queue")

COMPLETED: Final = "media_generation_completed"
_UNAVAILABLE_STATUSES: Final = frozenset({401, 403, 404, 405, 501})
_RECENT_LIMIT: Final = 4096  # unmatched events kept for a generation whose id is not known yet
_QUICK_DROP: Final = 1.0  # a stream that ends this soon after opening counts as a failure

State = Literal["idle", "connecting", "open", "down", "unavailable"]


class EventWatcher:
    """Learns completions from the event stream; polls only for what the stream cannot tell.

    Args:
        api: The requests it may make.
        backstop: Seconds between shared-poll ticks while the stream is open (``None``: none;
            reconciliation still runs after every reconnect).
        fallback: Poll every ``poll_interval`` while the stream is down or unavailable.
            Without it, an unavailable stream fails the waiting generations.
        poll_interval: Seconds between ticks when falling back.
        connect_wait: Seconds the first enqueue waits for the stream to open.
        max_failures: Consecutive failures to connect before the stream counts as unavailable.
    """

    def __init__(
        self,
        api: QueueAPI,
        *,
        backstop: float | None,
        fallback: bool,
        poll_interval: float = 1.0,
        connect_wait: float = 10.0,
        max_failures: int = 3,
    ) -> None:
        self._api = api
        self._backstop = backstop
        self._fallback = fallback
        self._poll_interval = poll_interval
        self._connect_wait = connect_wait
        self._max_failures = max_failures
        self.poller = SharedPollWatcher(api, interval=self._interval)
        self.state: State = "idle"
        self._error: OxenError | None = None
        self._settled: anyio.Event | None = None
        self._task_group: TaskGroup | None = None
        self._recent: OrderedDict[str, CompletionEvent] = OrderedDict()
        self.connects = 0
        """How many times the stream was opened (reconnects are ``connects - 1``)."""

    def _interval(self) -> float:
        if self.state in ("open", "idle", "connecting"):
            return math.inf if self._backstop is None else self._backstop
        return self._poll_interval if self._fallback else math.inf

    # -- Watcher ------------------------------------------------------------------------

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        self.poller.start(task_group)

    def _ensure_started(self) -> anyio.Event:
        # The stream is opened on first need (an enqueue or a reattach), not with the client.
        if self._settled is None:
            assert self._task_group is not None, "start() comes first"
            self._settled = anyio.Event()
            self.state = "connecting"
            self._task_group.start_soon(guarded("event stream", self._run))
        return self._settled

    async def ready(self) -> None:
        settled = self._ensure_started()
        with anyio.move_on_after(self._connect_wait):
            await settled.wait()
        if self.state == "unavailable" and not self._fallback and self._error is not None:
            raise self._error

    def track(self, generation: Generation, *, fresh: bool) -> None:
        self._ensure_started()
        if self.state == "unavailable" and not self._fallback and self._error is not None:
            generation._fail(self._error)
            return
        self.poller.track(generation, fresh=fresh)
        early = self._recent.pop(generation.id, None)
        if early is not None:  # its event overtook the enqueue's answer
            self._deliver(generation, early)

    # -- the stream ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            opened_at: float | None = None
            try:
                async with self._api.event_stream() as response:
                    kind = response.headers.get("content-type", "")
                    if "text/event-stream" not in kind:
                        raise SSEError(f"expected an event stream, got {kind!r}")
                    opened_at = anyio.current_time()
                    self._opened()
                    async with aclosing(EventSource(response).aiter_sse()) as events:
                        async for event in events:
                            self._dispatch(event)
                logger.debug("event stream closed by the server; reconnecting")
            except APIStatusError as exc:
                if exc.status_code in _UNAVAILABLE_STATUSES:
                    self._unavailable(exc)
                    return
                logger.debug("event stream refused (%s); retrying", exc)
            except (OxenError, httpx.HTTPError, SSEError) as exc:
                logger.debug("event stream failed (%s: %s); retrying", type(exc).__name__, exc)
            # A stream that stayed open a while was healthy: reconnect at once. One that keeps
            # failing, or dropping as soon as it opens, backs off (full jitter, capped).
            if opened_at is not None and anyio.current_time() - opened_at >= _QUICK_DROP:
                failures = 0
            else:
                failures += 1
            self._down(failures)
            if failures:
                await anyio.sleep(min(30.0, 0.25 * 2 ** min(failures, 8)) * random.random())

    def _opened(self) -> None:
        self.connects += 1
        self.state = "open"
        self._error = None
        if self._settled is not None:
            self._settled.set()
        self.poller.wake()
        if self.connects > 1 and self.poller.pending and self._task_group is not None:
            # No replay: whatever finished while we were away is learned by one reconciling tick.
            logger.debug("event stream reopened; reconciling %d pending", len(self.poller.pending))
            self._task_group.start_soon(guarded("reconciliation", self.poller.tick))

    def _down(self, failures: int) -> None:
        self.state = "down"
        self.poller.wake()
        settled = self._settled
        if failures >= self._max_failures and settled is not None and not settled.is_set():
            logger.debug("event stream unreachable after %d attempts; polling meanwhile", failures)
            settled.set()

    def _unavailable(self, error: OxenError) -> None:
        self.state = "unavailable"
        self._error = error
        if self._fallback:
            logger.debug("event stream unavailable (%s); falling back to polling", error)
        else:
            for generation in list(self.poller.pending.values()):
                generation._fail(error)
        if self._settled is not None:
            self._settled.set()
        self.poller.wake()

    def _dispatch(self, event: ServerSentEvent) -> None:
        if event.event != COMPLETED:
            return
        try:
            payload = CompletionEvent.model_validate(json.loads(event.data))
        except (ValueError, ValidationError):
            logger.debug("skipped a malformed %s event: %.200r", COMPLETED, event.data)
            return
        if payload.status not in TERMINAL_STATUSES:
            return
        generation = self.poller.pending.get(payload.generation_id)
        if generation is None:
            self._remember(payload)
        else:
            self._deliver(generation, payload)

    def _deliver(self, generation: Generation, event: CompletionEvent) -> None:
        generation._observe(event.to_record(model=generation.model, params=generation.params))

    def _remember(self, event: CompletionEvent) -> None:
        # The stream is user-scoped, so most unmatched events are other processes' jobs; a few
        # may be ours, enqueued a moment ago with the answer still in flight.
        self._recent[event.generation_id] = event
        while len(self._recent) > _RECENT_LIMIT:
            self._recent.popitem(last=False)
