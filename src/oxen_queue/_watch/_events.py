"""Completion from the event stream (``GET /api/events``), with shared polling behind it.

One stream per client, asked for with the first enqueue or reattach: "No buffering or replay
... Anything that fires before you connect is lost. Subscribe before calling POST /ai/queue"
(async queue reference). ``events`` mode makes the first enqueue wait until it is open;
``auto`` does not (three round trips to a distant hub), and relies on the reconciliation that
follows every opening. ``media_generation_completed`` events settle the pending generation of
their ``generation_id``; anything else, or a malformed event, is skipped.

The API sends "``: keep-alive`` ... every 15 seconds" when idle, so a stream silent for
``stall_timeout`` seconds, or delivering no completion that long with generations pending, is
reopened (it can die without closing).

What the stream cannot tell is left to `SharedPollWatcher`: what finished while it was away
(one tick whenever it opens) and cancellations; in ``auto``, also ``processing`` (fast ticks
while someone follows ``updates()``), events lost in transit (a slow backstop), and everything
while the stream is not open, or for good when it cannot be (404, 401/403).
"""

from __future__ import annotations

import logging
import math
import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, Literal

import anyio
import httpx

from .._api import COMPLETED_EVENT, parse_event
from .._exceptions import OxenError
from .._generation import fail, observe
from .._http import consume
from .._ids import plausible_id
from .._otel import unparented
from .._retry import is_unavailable
from ._base import SharedPollWatcher, supervised
from ._sse import ServerSentEvent, SSEDecoder

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from .._models import CompletionEvent
    from ._base import QueueAPI

logger = logging.getLogger("oxen_queue")

_RECENT_LIMIT: Final = 4096  # unmatched events kept for a generation whose id is not known yet
_QUICK_DROP: Final = 1.0  # a stream that ends this soon after opening counts as a failure
_MAX_FAILURES: Final = 3  # failures to connect before the first enqueue stops waiting

State = Literal["idle", "connecting", "open", "down", "unavailable"]


class EventWatcher:
    """Learns completions from the event stream; polls only for what the stream cannot tell.

    ``backstop``: seconds between polls while the stream is open (``None``: none).
    ``fallback``: poll every ``poll_interval`` seconds while the stream is not open (for good
    when it is unavailable) and while someone follows ``updates()``; without it, an unavailable
    stream fails the generations. ``connect_wait``: seconds the first enqueue waits for the
    stream (``None``: none). ``stall_timeout``: as in the module docstring.
    """

    def __init__(
        self,
        api: QueueAPI,
        *,
        backstop: float | None,
        fallback: bool,
        poll_interval: float = 1.0,
        connect_wait: float | None = 10.0,
        stall_timeout: float = 45.0,
    ) -> None:
        self._api = api
        self._backstop = math.inf if backstop is None else backstop
        self._fallback = fallback
        self._poll_interval = poll_interval
        self._connect_wait = connect_wait
        self._stall = stall_timeout
        self.poller = SharedPollWatcher(api, interval=self._interval)
        self.state: State = "idle"
        self._error: OxenError | None = None  # the stream's, once unavailable without fallback
        self._settled: anyio.Event | None = None
        self._task_group: TaskGroup | None = None
        self._recent: OrderedDict[str, CompletionEvent] = OrderedDict()
        self._last_byte = -math.inf
        self._last_event = -math.inf
        self.connects = 0  # times the stream was opened
        self.stalls = 0  # times a stalled stream was reopened

    def _interval(self) -> float:
        if self.state != "open":
            return self._poll_interval if self._fallback else math.inf
        watched = self._fallback and self.poller.watched
        return min(self._backstop, self._poll_interval) if watched else self._backstop

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        self.poller.start(task_group)

    def _ensure_started(self) -> anyio.Event:
        if self._settled is None:
            assert self._task_group is not None, "start() comes first"
            self._settled = anyio.Event()
            self.state = "connecting"
            # It serves every generation: not in the trace of the caller that started it.
            with unparented():
                self._task_group.start_soon(supervised("event stream", self._run, restart=True))
        return self._settled

    async def ready(self) -> None:
        settled = self._ensure_started()
        if self._connect_wait is not None and not settled.is_set():
            with anyio.move_on_after(self._connect_wait):
                await settled.wait()
            if not settled.is_set():
                # One wait is enough: the reconciliation when it opens covers later enqueues.
                logger.debug("event stream not open after %.1f s; going ahead", self._connect_wait)
                settled.set()
        if self._error is not None:
            raise self._error

    def track(self, generation: Generation, *, fresh: bool) -> None:
        self._ensure_started()
        if self._error is not None:
            fail(generation, self._error)
            return
        if not self.poller.pending:
            # Silence is judged from the moment there is something to wait for.
            self._last_event = anyio.current_time()
        self.poller.track(generation, fresh=fresh)
        if (early := self._recent.pop(generation.id, None)) is not None:
            self._deliver(generation, early)  # its event overtook the enqueue's answer

    def forget(self, generation: Generation) -> None:
        self.poller.forget(generation)

    # -- the stream ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            opened_at: float | None = None
            try:
                opened_at = await self._listen()
            except OxenError as exc:
                if is_unavailable(exc):
                    self._unavailable(exc)
                    return
                logger.debug("event stream failed (%s); retrying", exc)
            except httpx.HTTPError as exc:
                logger.debug("event stream failed (%s: %s); retrying", type(exc).__name__, exc)
            # A stream that stayed open a while was healthy: reconnect at once. One that keeps
            # failing, or dropping as soon as it opens, backs off (full jitter, capped).
            stayed = opened_at is not None and anyio.current_time() - opened_at >= _QUICK_DROP
            failures = 0 if stayed else failures + 1
            self._down(failures)
            if failures:
                await anyio.sleep(min(30.0, 0.25 * 2 ** min(failures, 8)) * random.random())

    async def _listen(self) -> float | None:
        """Open the stream and dispatch its events until it ends, fails or stalls; return when
        it opened (``None``: it never did)."""
        opened_at: float | None = None
        watchdog = anyio.CancelScope()
        with anyio.CancelScope() as scope:
            self._last_byte = anyio.current_time()
            assert self._task_group is not None
            self._task_group.start_soon(self._watch_stall, scope, watchdog)
            try:
                async with self._api.event_stream() as response:
                    kind = response.headers.get("content-type", "")
                    if "text/event-stream" not in kind:
                        raise httpx.DecodingError(f"expected an event stream, got {kind!r}")
                    opened_at = self._last_byte = anyio.current_time()
                    self._opened()
                    decoder = SSEDecoder()

                    async def take(chunk: bytes) -> None:
                        self._last_byte = anyio.current_time()
                        for event in decoder.feed(chunk):
                            self._dispatch(event)

                    await consume(response, take)
                logger.debug("event stream closed by the server; reconnecting")
            finally:
                watchdog.cancel()
        if scope.cancelled_caught:
            self.stalls += 1
            logger.debug("event stream stalled for %.1f s; reopening", self._stall)
        return opened_at

    async def _watch_stall(self, stream: anyio.CancelScope, watchdog: anyio.CancelScope) -> None:
        """Cancel ``stream`` (its read) ``stall_timeout`` after the last sign of life: a byte,
        or (with generations pending, on an open stream) a completion event. (Not a deadline
        on the read's scope moved at every chunk: that reschedules a timer each time.)"""
        with watchdog:
            while True:
                last = self._last_byte
                if self.poller.pending and self.state == "open":
                    last = min(last, self._last_event)
                delay = last + self._stall - anyio.current_time()
                if delay <= 0:
                    stream.cancel()
                    return
                await anyio.sleep(delay)

    def _opened(self) -> None:
        self.connects += 1
        self.state = "open"
        self._last_event = anyio.current_time()
        if self._settled is not None:
            self._settled.set()
        self.poller.wake()
        if self.poller.pending and self._task_group is not None:
            # No replay: whatever finished while we were away is learned by one reconciling tick.
            logger.debug("event stream open; reconciling %d pending", len(self.poller.pending))
            self._task_group.start_soon(self.poller.tick)

    def _down(self, failures: int) -> None:
        self.state = "down"
        self.poller.wake()
        settled = self._settled
        if failures >= _MAX_FAILURES and settled is not None and not settled.is_set():
            logger.debug("event stream unreachable after %d attempts; polling meanwhile", failures)
            settled.set()

    def _unavailable(self, error: OxenError) -> None:
        self.state = "unavailable"
        if self._fallback:
            logger.debug("event stream unavailable (%s); falling back to polling", error)
        else:
            self._error = error
            for generation in list(self.poller.pending.values()):
                fail(generation, error)
        if self._settled is not None:
            self._settled.set()
        self.poller.wake()

    def _dispatch(self, event: ServerSentEvent) -> None:
        payload = parse_event(event.data) if event.event == COMPLETED_EVENT else None
        if payload is None:
            return
        self._last_event = anyio.current_time()
        generation = self.poller.pending.get(payload.generation_id)
        if generation is not None:
            self._deliver(generation, payload)
        elif plausible_id(payload.generation_id):
            # The stream is user-scoped, so most unmatched events are other processes' jobs; a
            # few may be ours, enqueued a moment ago with the answer still in flight.
            self._recent[payload.generation_id] = payload
            while len(self._recent) > _RECENT_LIMIT:
                self._recent.popitem(last=False)
        else:
            # No generation of this client's can have it (ClientCore.track): keeping it would
            # only push out events that may yet be claimed.
            logger.debug(
                "skipped a %s event whose generation_id %.80r is not a plausible id",
                COMPLETED_EVENT,
                payload.generation_id,
            )

    def _deliver(self, generation: Generation, event: CompletionEvent) -> None:
        record = event.to_record(
            model=generation.model, params=generation.params, generation_id=generation.id
        )
        observe(generation, record)
