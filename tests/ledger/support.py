"""Helpers shared by the ledger tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from oxen_queue._ledger import Owner, open_ledger
from oxen_queue._ledger._sqlledger import SqlLedger

MODEL = "gpt-image-2"
PARAMS: Mapping[str, Any] = {"prompt": "An ox at sunset", "resolution": "1920x1080"}
DEAD_PID = 2**22 + 4321  # above Linux's largest pid_max: no such process, ever


async def new_intent(
    ledger: SqlLedger,
    *,
    params: Mapping[str, Any] = PARAMS,
    count: int = 1,
    deadline_in: float = 60.0,
) -> str:
    """Record an intent for ``MODEL``, due ``deadline_in`` seconds from now."""
    return await ledger.record_intent(
        model=MODEL, params=params, count=count, deadline=time.time() + deadline_in
    )


def forged_owner(
    me: Owner, *, dead: bool = False, other_host: bool = False, reused_pid: bool = False
) -> Owner:
    """An owner standing in for a dead process, a reused PID, or another host."""
    if other_host:
        return Owner(
            client_id=uuid.uuid4().hex,
            host="elsewhere",
            host_key="another-machine",
            pid=me.pid,
            start_token="1",
        )
    return Owner(
        client_id=uuid.uuid4().hex,
        host=me.host,
        host_key=me.host_key,
        pid=DEAD_PID if dead else me.pid,
        start_token="1" if reused_pid else me.start_token,
    )


def ledger_for(url: str, owner: Owner | None = None, **options: Any) -> SqlLedger:
    """An unopened ledger on ``url`` (polling every 10 ms)."""
    options.setdefault("poll_interval", 0.01)
    ledger = open_ledger(url, owner=owner, **options)
    assert ledger is not None
    return ledger
