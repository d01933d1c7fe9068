"""One cold start, in a fresh process: what ``benchmarks/cold_start.py`` runs for each sample.

Run as a script (``python benchmarks/_cold_start_child.py VARIANT BASE_URL LIBRARY``), so that
the process imports nothing before the variant does: the figures are the job's own. LIBRARY is
``asyncio`` or ``trio``: the event loop the job runs on (each variant on the same one). Each variant
does the same job against the emulator at ``BASE_URL`` (another process): import, open a
client, enqueue one ``gpt-image-2`` generation, wait until it is finished, close. It prints
one line of JSON: the CPU seconds (user + system) of this process at the end of each phase,
counted from the process's start (interpreter start-up included, as a command pays it).

Variants:

- ``httpx``: plain httpx, as a newcomer would write it: ``POST /api/ai/queue``, then
  ``GET /api/ai/queue/{id}`` every 0.1 s until the row is final.
- ``sdk``: ``async with AsyncClient() as client: await client.generate(...)`` (the event
  stream, with shared polling behind it: the default ``completion="auto"``).
- ``sdk-lazy``: the same without ``async with``: ``AsyncClient()`` opens on its first call,
  and ``aclose()`` ends it.
- ``sdk-poll``: ``AsyncClient(completion="poll")``, which waits the way ``httpx`` does.

Only the standard library is imported at the top, and not asyncio: each variant imports its
own, and the event loop's library is imported by ``main``, before the first mark.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oxen_queue import CompletionMode

KEY = "cold-start-key"
MODEL = "gpt-image-2"
PROMPT = "An ox at sunset"
FINAL = ("succeeded", "failed", "cancelled")

marks: dict[str, float] = {}
sleep: Callable[[float], Coroutine[Any, Any, None]]  # the event loop's, set by main()


def mark(phase: str) -> None:
    """The process's CPU seconds so far (counted from the process's start)."""
    marks[phase] = time.process_time()


async def plain_httpx(base_url: str) -> str:
    import httpx

    mark("import")
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        mark("open")
        answer = await http.post("/api/ai/queue", json={"model": MODEL, "prompt": PROMPT})
        answer.raise_for_status()
        generation_id = answer.json()["generations"][0]["generation_id"]
        while True:
            row = await http.get(f"/api/ai/queue/{generation_id}")
            row.raise_for_status()
            status = str(row.json()["status"])
            if status in FINAL:
                break
            await sleep(0.1)
        mark("done")
    mark("close")
    return status


async def sdk(base_url: str, completion: CompletionMode = "auto") -> str:
    from oxen_queue import AsyncClient

    mark("import")
    async with AsyncClient(api_key=KEY, base_url=base_url, completion=completion) as client:
        mark("open")
        record = await client.generate(MODEL, prompt=PROMPT)
        mark("done")
    mark("close")
    return record.status


async def sdk_lazy(base_url: str) -> str:
    from oxen_queue import AsyncClient

    mark("import")
    client = AsyncClient(api_key=KEY, base_url=base_url)
    mark("open")  # nothing yet: it opens on its first call
    record = await client.generate(MODEL, prompt=PROMPT)
    mark("done")
    await client.aclose()
    mark("close")
    return record.status


async def sdk_poll(base_url: str) -> str:
    return await sdk(base_url, completion="poll")


VARIANTS: dict[str, Callable[[str], Coroutine[Any, Any, str]]] = {
    "httpx": plain_httpx,
    "sdk": sdk,
    "sdk-lazy": sdk_lazy,
    "sdk-poll": sdk_poll,
}


def main() -> None:
    global sleep
    variant, base_url, library = sys.argv[1], sys.argv[2], sys.argv[3]
    job = VARIANTS[variant]
    mark("start")
    if library == "trio":
        import trio

        sleep = trio.sleep
        status = trio.run(job, base_url)
    else:
        import asyncio

        sleep = asyncio.sleep
        status = asyncio.run(job(base_url))
    mark("exit")
    print(json.dumps({"variant": variant, "status": status, "cpu": marks}))


if __name__ == "__main__":
    main()
