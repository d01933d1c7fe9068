"""What the hostile tests share: a client on the hostile server, bounded waits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import anyio

from oxen_queue import AsyncClient, PollPolicy, RetryPolicy

from .server import HostileServer

API_KEY: Final = "sk-hostile-SECRET-0123456789abcdef"
PROMPT: Final = "An ox on a hostile road"


def make_client(server: HostileServer, **options: Any) -> AsyncClient:
    """A client of ``server`` with fast policies: poll mode, 1 s stall, a 5 s retry deadline."""
    settings: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": server.base_url,
        "completion": "poll",
        "poll_policy": PollPolicy(initial=0.02, max_interval=0.05, deadline=30),
        "shared_poll_interval": 0.05,
        "backstop_interval": 0.2,
        "retry": RetryPolicy(initial_delay=0.01, max_delay=0.05, deadline=5),
        "timeout": 5.0,
        "stall_timeout": 1.0,
    }
    settings.update(options)
    return AsyncClient(**settings)


async def wait_until(condition: Callable[[], bool], *, within: float) -> bool:
    """Poll ``condition`` every 20 ms for up to ``within`` seconds; whether it came true."""
    with anyio.move_on_after(within):
        while not condition():
            await anyio.sleep(0.02)  # polling: the server's state announces nothing
        return True
    return condition()
