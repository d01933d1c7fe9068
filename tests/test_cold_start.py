"""A cold start (import, make a client) loads only what a first request needs (issue 16).

The figures are ``benchmarks/cold_start.py``'s; this guards what they depend on, in a fresh
interpreter: modules that only some calls need stay unimported, and the download pool is not
made, until a call needs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

DEFERRED = (
    "tenacity",  # only a request that failed once is retried
    "anyio.from_thread",  # only the blocking Client
    "oxen_queue._ledger._sqlledger",  # only a ledger URL (sqlite://, postgresql://)
    "oxen_queue._ledger._store",
    "sqlite3",
    "asyncio",  # only when it runs (a program on trio need not load it)
)

COLD_START = """
import json, sys
import oxen_queue

client = oxen_queue.AsyncClient(api_key="k", base_url="http://127.0.0.1:9")
print(json.dumps({
    "loaded": [name for name in %r if name in sys.modules],
    "download_pool": client._core.files._http is not None,
}))
"""


@pytest.mark.slow
def test_importing_and_making_a_client_loads_nothing_a_first_request_does_not_need() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COLD_START % (DEFERRED,))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen == {"loaded": [], "download_pool": False}
