"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from oxen_queue import AsyncClient, Generation, GenerationRecord, PollPolicy, RetryPolicy
from oxen_queue._transport import ssl_context

from .fakes import API, FakeAPI

FAST_POLL = PollPolicy(initial=0.0, max_interval=0.0, jitter=0.0)

TLS = ssl_context(True)
"""The TLS context for the tests' own httpx clients (``verify=TLS``), the library's shared
one: each client made without it loads the CA bundle anew, about 25 ms of CPU, which a few
hundred ``httpx.post`` calls turn into seconds of the suite (even for http:// URLs)."""

WITHIN = 10.0
"""Seconds a condition may take before the test fails: a guard against a hang, never a
verdict on speed (what holds within milliseconds on a quiet machine may take seconds on one
at its limit)."""


async def eventually(condition: Callable[[], object], *, within: float = WITHIN) -> None:
    """Return once ``condition()`` is true; fail the test if it is not after ``within`` s.

    For state that no event announces (a counter, a status, a list that grows): it is read
    every 5 ms, a poll interval short beside what the tests wait for and long enough that
    the polling costs nothing.
    """
    with anyio.fail_after(within):
        while not condition():
            await anyio.sleep(0.005)  # polling (see above)


def fake_options(api: FakeAPI, **overrides: Any) -> dict[str, Any]:
    """Client options for the scripted fake: polling without waits, retries without waits."""
    options: dict[str, Any] = {
        "api_key": "test-key",
        "base_url": API,
        "transport": api.transport(),
        "completion": "poll",
        "poll_policy": FAST_POLL,
        "retry": RetryPolicy.no_wait(),
    }
    options.update(overrides)
    return options


def fake_client(api: FakeAPI, **overrides: Any) -> AsyncClient:
    """An AsyncClient on the scripted fake (see :func:`fake_options`)."""
    return AsyncClient(**fake_options(api, **overrides))


class StubOwner:
    """What a ``Generation`` delegates to its client core, for tests of a generation alone:
    the operations are not reached."""

    async def cancel(self, generation: Generation | str) -> None:
        raise NotImplementedError

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        raise NotImplementedError

    async def download(self, source: Any, path: Any = None) -> Any:
        raise NotImplementedError
