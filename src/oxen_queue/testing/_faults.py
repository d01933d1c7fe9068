"""Fault injection: switches a test flips to make the emulator misbehave like a real network.

Every switch is off by default. Rates are probabilities (0..1) drawn per request (or per
event for ``event_loss`` and ``sse_garbage``) from the faults' own random generators, one per
kind of fault, so a ``seed`` makes a run reproducible: the n-th enqueue meets the same faults
however the reads, events and other clients' requests of a concurrent run interleave with it.
The emulator counts every fault it injects, by kind (``stats()["faults"]``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final, Literal, get_args

__all__ = ["DeliberateCut", "Faults", "RetryAfterForm", "install_cut_log_filter"]

RetryAfterForm = Literal["seconds", "http-date", "ms", "none"]

_RATES: Final = frozenset(
    {
        "enqueue_429",
        "enqueue_503",
        "enqueue_cut",
        "enqueue_504_after_create",
        "read_500",
        "read_429",
        "read_cut",
        "read_html",
        "read_malformed",
        "slow_rate",
        "event_loss",
        "sse_garbage",
    }
)
_SECONDS: Final = frozenset({"retry_after", "latency", "slow_seconds"})


@dataclass(kw_only=True)
class Faults:
    """Runtime fault switches of an emulator. Assign attributes at any time; values are checked.

    ```python
    emu.faults.enqueue_429 = 0.05  # 5 % of enqueues refused with 429
    emu.faults.update({"read_cut": 0.1, "latency": 0.02})
    ```

    Over HTTP: ``POST /_emulator/faults`` with a JSON object of the same fields.

    Attributes:
        enqueue_429: ``POST /api/ai/queue`` refused with 429 and ``Retry-After`` before
            anything is created.
        enqueue_503: ``POST /api/ai/queue`` refused with 503 before anything is created.
        enqueue_cut: The jobs ARE created (they run and complete), then the connection is cut
            mid-response: full ``Content-Length``, part of the body, then an abort. Through
            ``httpx.ASGITransport`` there is no connection to abort: the client gets the
            status and a truncated body instead.
        enqueue_504_after_create: The jobs are created, then a proxy-style 504 answers.
        enqueue_rate_limit: Enqueues per second each user may make (a token bucket holding
            one second's worth); beyond it, 429 with the time until the next token in
            ``Retry-After`` (in ``retry_after_form``). ``None``: no limit.
        read_500: Reads (``GET /api/ai/queue[/{id}]``, ``GET /api/ai/generations[/{id}]``)
            answer 500 with the documented error envelope.
        read_429: Reads answer 429 with ``Retry-After``.
        read_cut: Reads are cut mid-response, as ``enqueue_cut``.
        read_html: Reads answer 502 with an HTML page, as a proxy in front of the API would.
        read_malformed: Reads answer 200 with truncated JSON.
        retry_after: Seconds announced by the 429 answers.
        retry_after_form: How 429 answers announce it: ``"seconds"`` (``Retry-After: 1``),
            ``"http-date"`` (``Retry-After: <IMF-fixdate>``), ``"ms"`` (``retry-after-ms``,
            as OpenAI sends) or ``"none"`` (no header: the docs document none).
        latency: Seconds added to every API response (not files, not admin routes).
        slow_rate: Fraction of API requests (except the event stream) delayed by
            ``slow_seconds`` more, after their effect, to trip client read timeouts.
        slow_seconds: The delay of a slow request.
        sse_drop_after: Seconds after which the server ends each ``/api/events`` stream;
            ``None`` never.
        event_loss: Fraction of completion events never sent to anyone.
        events_status: If set, ``/api/events`` answers with this HTTP status (e.g. 404) and
            an error body instead of a stream.
        sse_garbage: Fraction of completion events preceded on a stream by garbage: a
            non-JSON ``data:`` line, a data-only event, ``id:``/``retry:`` fields, or a copy of
            the event with unknown fields.
        seed: Seed of the faults' random generators (one per kind of fault, each drawn only
            for its own kind); ``None`` seeds from the system.
    """

    enqueue_429: float = 0.0
    enqueue_503: float = 0.0
    enqueue_cut: float = 0.0
    enqueue_504_after_create: float = 0.0
    enqueue_rate_limit: float | None = None
    read_500: float = 0.0
    read_429: float = 0.0
    read_cut: float = 0.0
    read_html: float = 0.0
    read_malformed: float = 0.0
    retry_after: float = 1.0
    retry_after_form: RetryAfterForm = "seconds"
    latency: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 30.0
    sse_drop_after: float | None = None
    event_loss: float = 0.0
    events_status: int | None = None
    sse_garbage: float = 0.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _streams: dict[str, random.Random] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._reseed(self.seed)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            value = _checked(name, value)
            if name == "seed":
                self._reseed(value)
        object.__setattr__(self, name, value)

    def _reseed(self, seed: int | None) -> None:
        object.__setattr__(self, "_rng", random.Random(seed))
        object.__setattr__(self, "_streams", {})

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set several switches at once (all checked before any is set).

        Raises:
            ValueError: An unknown field or a bad value; nothing was changed.
        """
        checked = {name: _checked(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def reset(self) -> None:
        """Turn every fault off (the seed is kept and the generator re-seeded)."""
        for spec in dataclasses.fields(self):
            if spec.init and spec.name != "seed":
                setattr(self, spec.name, spec.default)
        self._reseed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The switches as a plain JSON-ready dict."""
        return {
            spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self) if spec.init
        }

    def roll(self, rate: float, *, kind: str | None = None) -> bool:
        """Draw once: true with probability ``rate``.

        Args:
            rate: The probability.
            kind: The fault drawn for (``"enqueue_cut"``, say): from that kind's own
                generator, so how often other kinds are drawn meanwhile changes nothing.
                ``None``: from the shared one.
        """
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        return self._stream(kind).random() < rate

    def _stream(self, kind: str | None) -> random.Random:
        if kind is None:
            return self._rng
        stream = self._streams.get(kind)
        if stream is None:
            # A string seed is hashed the same way in every process (unlike hash()).
            seed = None if self.seed is None else f"{self.seed}/{kind}"
            stream = self._streams[kind] = random.Random(seed)
        return stream

    def pick(self, count: int) -> int:
        """Draw one of ``range(count)``."""
        return self._rng.randrange(count)

    def retry_after_headers(self, seconds: float | None = None) -> list[tuple[str, str]]:
        """The headers that announce ``seconds`` (default ``retry_after``) in the configured
        form."""
        seconds = self.retry_after if seconds is None else seconds
        if self.retry_after_form == "seconds":
            return [("retry-after", _format_seconds(seconds))]
        if self.retry_after_form == "http-date":
            # An HTTP date has whole seconds: round up so the client does not come back early.
            return [("retry-after", formatdate(time.time() + math.ceil(seconds), usegmt=True))]
        if self.retry_after_form == "ms":
            return [("retry-after-ms", str(round(seconds * 1000)))]
        return []


_FIELD_NAMES: Final = frozenset(spec.name for spec in dataclasses.fields(Faults) if spec.init)


def _checked(name: str, value: Any) -> Any:
    if name not in _FIELD_NAMES:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(_FIELD_NAMES))}")
    if name in _RATES:
        number = _number(value)
        if number is None or not 0 <= number <= 1:
            raise ValueError(f"{name} must be a probability between 0 and 1, not {value!r}")
        return number
    if name == "enqueue_rate_limit":
        number = None if value is None else _number(value)
        if value is not None and (number is None or number <= 0):
            raise ValueError(f"enqueue_rate_limit must be a rate > 0 or None, not {value!r}")
        return number
    if name in _SECONDS or name == "sse_drop_after":
        if value is None and name == "sse_drop_after":
            return None
        number = _number(value)
        if number is None or number < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        return number
    if name == "retry_after_form":
        if value not in get_args(RetryAfterForm):
            forms = ", ".join(get_args(RetryAfterForm))
            raise ValueError(f"retry_after_form must be one of {forms}, not {value!r}")
        return value
    if name == "events_status":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise ValueError(f"events_status must be an HTTP status or None, not {value!r}")
        return value
    # seed
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"seed must be an int or None, not {value!r}")
    return value


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _format_seconds(seconds: float) -> str:
    # Retry-After (RFC 9110) is a whole number of seconds; keep a fraction if one was asked
    # for, since a test with a fast clock may want one, but never write "1.0".
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class DeliberateCut(Exception):
    """Raised inside the app to make the server abort a connection mid-response."""


class _CutFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DeliberateCut)


_CUT_FILTER: Final = _CutFilter()


def install_cut_log_filter() -> None:
    """Keep uvicorn from logging a traceback for each deliberate cut (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _CUT_FILTER not in logger.filters:
        logger.addFilter(_CUT_FILTER)
