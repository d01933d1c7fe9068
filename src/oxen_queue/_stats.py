from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (from zero when it was made) and limits, from
    ``client.stats``.

    Attributes:
        pending: Generations the client is watching now.
        enqueued: Generations this client created (or adopted after a lost answer).
        reconciled: Enqueues whose answer was lost, settled by adopting the jobs they made.
        resent: Enqueues whose answer was lost, shown to have made no job, and sent again.
        requests: API requests sent, every attempt counted (not the event stream, not files).
        retries: Attempts that failed and were tried again.
        stream_opens: Times the event stream was opened (reconnects are one fewer).
        stream_stalls: Times a stalled event stream was reopened.
        polls: Shared polls made (each one list request per model).
        enqueue_rate: Enqueues per second the adaptive pacer allows now; ``inf``: unlimited.
        max_concurrency: API requests allowed in flight now (the adaptive bound, or the fixed
            ``max_concurrency``).
    """

    pending: int
    enqueued: int
    reconciled: int
    resent: int
    requests: int
    retries: int
    stream_opens: int
    stream_stalls: int
    polls: int
    enqueue_rate: float
    max_concurrency: int
