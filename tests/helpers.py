"""Shared test helpers."""

from __future__ import annotations

from typing import Any

from oxen_queue import AsyncClient, PollPolicy, RetryPolicy

from .fakes import API, FakeAPI

FAST_POLL = PollPolicy(initial=0.0, max_interval=0.0, jitter=0.0)


def fake_client(api: FakeAPI, **kwargs: Any) -> AsyncClient:
    """A client on the scripted fake: polling without waits, retries without waits."""
    options: dict[str, Any] = {
        "api_key": "test-key",
        "base_url": API,
        "transport": api.transport(),
        "completion": "poll",
        "poll_policy": FAST_POLL,
        "retry": RetryPolicy.no_wait(),
    }
    options.update(kwargs)
    return AsyncClient(**options)
