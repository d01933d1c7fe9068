"""Shared test helpers."""

from __future__ import annotations

from typing import Any

from oxen_queue import AsyncClient, Generation, GenerationRecord, PollPolicy, RetryPolicy

from .fakes import API, FakeAPI

FAST_POLL = PollPolicy(initial=0.0, max_interval=0.0, jitter=0.0)


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
