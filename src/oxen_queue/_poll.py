"""How often to ask about one generation: the backoff policy, as data with a pure delay function."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._durations import optional_seconds, seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class PollPolicy:
    """Exponential backoff with jitter for polling one generation, and its overall deadline.

    The defaults follow the async queue reference: "images take 5-30 s, poll every 2-5 s;
    video takes 1-5 min, poll every 10-30 s". Polls start quickly and back off to
    ``max_interval``; a job still running after ``slow_after`` seconds is probably a video,
    so the cap widens to ``slow_max_interval``.

    Attributes:
        initial: Seconds before the first poll of a new generation.
        multiplier: Growth of the interval from one poll to the next.
        max_interval: Seconds: the cap on the interval while the job is young.
        slow_after: Seconds after which the job counts as slow.
        slow_max_interval: Seconds: the cap on the interval for slow jobs.
        jitter: Relative spread of each interval (0.1 gives +/- 10 %), so that many
            generations started together do not poll in lockstep.
        deadline: Seconds after which waiting gives up with ``GenerationTimeoutError``.
            ``None`` means no limit.
    """

    initial: float = 1.0
    multiplier: float = 1.5
    max_interval: float = 5.0
    slow_after: float = 60.0
    slow_max_interval: float = 15.0
    jitter: float = 0.1
    deadline: float | None = 3600.0

    def __post_init__(self) -> None:
        for field in ("initial", "max_interval", "slow_after", "slow_max_interval"):
            seconds(getattr(self, field), field=field, zero=True)
        if not 1 <= self.multiplier < math.inf:
            raise ValueError("multiplier must be a finite number, at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        optional_seconds(self.deadline, field="deadline")

    def delay(self, attempt: int, *, elapsed: float = 0.0, rand: float = 0.5) -> float:
        """Seconds to wait before poll number ``attempt`` (0 is the first).

        Args:
            attempt: How many polls came before this one.
            elapsed: Seconds since the generation was created.
            rand: A uniform random number in [0, 1); 0.5 means no jitter.
        """
        cap = self.max_interval if elapsed < self.slow_after else self.slow_max_interval
        # Cap the exponent first: multiplier ** attempt overflows a float for long video jobs.
        base = self.initial
        for _ in range(min(attempt, 64)):
            base *= self.multiplier
            if base >= cap:
                break
        return min(base, cap) * (1.0 + self.jitter * (2.0 * rand - 1.0))
