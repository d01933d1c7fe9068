"""How the emulator behaves: timings, randomness, limits, authentication."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["DUMMY_API_KEY", "TEST_TIME_SCALE", "EmulatorConfig"]

DUMMY_API_KEY: Final = "oxen-emulator-test-key"
"""The ``OXEN_API_KEY`` the ``oxen_emulator`` fixture sets (unless the config requires a key of
its own)."""

TEST_TIME_SCALE: Final = 0.01
"""The ``oxen_emulator`` fixture's default ``time_scale``: jobs run 100 times faster."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EmulatorConfig:
    """Settings of an emulator, fixed for its life (see [`Faults`][oxen_queue.testing.Faults] for
    runtime switches).

    Durations are float seconds, drawn uniformly from a ``(low, high)`` range and then
    multiplied by ``time_scale``. The defaults are realistic enough for the documentation's
    own SSE snippet, which subscribes to ``/api/events`` only after enqueueing: a job takes at
    least 2.5 s. The API itself documents 5-30 s for images and 1-5 min for videos.

    Attributes:
        queue_delay: Seconds a job stays ``queued`` before ``processing`` starts.
        image_duration: Seconds an image job stays ``processing``.
        video_duration: Seconds a video job stays ``processing``.
        time_scale: Multiplies every duration above (0.01 runs 100 times faster; 0 makes jobs
            finish as soon as the scheduler looks). It does not scale ``keepalive_interval``.
        seed: Seed of the random generator that draws durations, failures and interleaved
            events; ``None`` seeds from the system.
        failure_rate: Fraction (0..1) of otherwise valid jobs that end ``failed`` with
            ``error_message`` ``"Insufficient credits"`` (the docs' example) when they start.
        keepalive_interval: Seconds of silence after which an SSE stream sends the comment
            ``: keep-alive`` (the docs: every 15 s).
        max_generations_per_request: Upper bound of ``num_generations`` (and of ``n`` on the
            synchronous endpoints). The docs prose and error string say 4; spec 0.243.1 says 12.
        api_key: If set, the only key accepted. If ``None``, any non-empty key is accepted,
            each distinct key being a distinct user. Never shown in ``repr``.
        unrelated_event_rate: Probability (0..1) that a completion event on an SSE stream is
            preceded by an unrelated event (the docs: the stream "may carry unrelated event
            types (e.g. deployment events)").
        url_ttl: Seconds for which a result URL's signature stays valid.
        files_origin: Origin of result URLs for an in-process app (``create_app``); a running
            [`Emulator`][oxen_queue.testing.Emulator] serves files from a second port of its own
            instead.
        clock_offset: Seconds by which the server's clock is ahead of the real one (negative:
            behind), as rows' timestamps and ``Date`` headers show it: a client must not
            assume the two clocks agree.
    """

    queue_delay: tuple[float, float] = (0.5, 2.0)
    image_duration: tuple[float, float] = (2.0, 5.0)
    video_duration: tuple[float, float] = (20.0, 60.0)
    time_scale: float = 1.0
    seed: int | None = None
    failure_rate: float = 0.0
    keepalive_interval: float = 15.0
    max_generations_per_request: int = 4
    api_key: str | None = field(default=None, repr=False)
    unrelated_event_rate: float = 0.2
    url_ttl: float = 3600.0
    files_origin: str = "http://files.oxen.test"
    clock_offset: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.clock_offset):
            raise ValueError(f"clock_offset must be a finite number, not {self.clock_offset!r}")
        for name in ("queue_delay", "image_duration", "video_duration"):
            value = getattr(self, name)
            low, high = _float_pair(name, value)
            # Frozen: normalise lists (from a pytest marker or JSON) to tuples of floats.
            object.__setattr__(self, name, (low, high))
        _check_non_negative("time_scale", self.time_scale)
        _check_probability("failure_rate", self.failure_rate)
        _check_probability("unrelated_event_rate", self.unrelated_event_rate)
        for name in ("keepalive_interval", "url_ttl"):
            number = _number(getattr(self, name))
            if number is None or number <= 0:
                raise ValueError(f"{name} must be a number > 0, not {getattr(self, name)!r}")
        limit = self.max_generations_per_request
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_generations_per_request must be an int >= 1, not {limit!r}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be a non-empty string or None")
        parts = urlsplit(self.files_origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError(
                f"files_origin must be an origin like http://host[:port], not {self.files_origin!r}"
            )

    def replace(self, **changes: Any) -> EmulatorConfig:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _number(value: object) -> float | None:
    """The value as a float if it is a finite real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _float_pair(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair of seconds, not {value!r}")
    low, high = (_number(item) for item in value)
    if low is None or high is None or not 0 <= low <= high:
        raise ValueError(f"{name} must satisfy 0 <= low <= high, not {value!r}")
    return low, high


def _check_non_negative(name: str, value: object) -> None:
    number = _number(value)
    if number is None or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")


def _check_probability(name: str, value: object) -> None:
    number = _number(value)
    if number is None or not 0 <= number <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1, not {value!r}")
