"""examples/fastapi_app.py refuses the ids its routes cannot pass on (issue 14, "ids become
paths"): ``DELETE /jobs/..`` and its friends answer 422 naming the field, and never reach the
hub. On a real uvicorn server, with raw request lines: an HTTP client would resolve the dot
segments itself before sending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import anyio
import httpx
import pytest

from oxen_queue.testing import Emulator, EmulatorConfig

from .test_fastapi_app import app_against

# Requests the app's own client makes in the background (its event stream, and the polls
# behind it), which no route below causes.
BACKGROUND = frozenset({"GET /api/events", "GET /api/ai/queue"})


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        yield emu


@pytest.fixture(scope="module")
def app_url(emulator: Emulator) -> Iterator[str]:
    with app_against(emulator) as url:
        yield url


async def raw_request(base_url: str, method: str, target: str) -> tuple[int, bytes]:
    """Send ``method target`` exactly as written; the status and body of the answer."""
    url = httpx.URL(base_url)
    assert url.port is not None
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    answer = b""
    async with await anyio.connect_tcp(url.host, url.port) as stream:
        await stream.send(request.encode("ascii"))
        with anyio.fail_after(10):
            try:
                while True:
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def hub_requests(emulator: Emulator) -> Counter[str]:
    """The hub's requests by method and route (``<unmatched>`` for no route)."""
    counts = emulator.stats()["requests"]
    return Counter({key: count for key, count in counts.items() if key not in BACKGROUND})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("DELETE", "/jobs/.."),
        ("DELETE", "/jobs/."),
        ("DELETE", "/jobs/%2e%2e"),
        ("DELETE", "/jobs/%2E"),
        ("DELETE", "/jobs/x%3Fy"),
        ("DELETE", "/jobs/x%23y"),
        ("DELETE", "/jobs/a%0D%0Ab"),
        ("DELETE", "/jobs/a%00b"),
        ("GET", "/jobs/.."),
        ("GET", "/jobs/%2e%2e/image"),
        ("GET", "/jobs/../events"),
        ("GET", "/events?id=.."),
        ("GET", "/events?id=a%2Fb&id=x%3Fy"),
    ],
)
async def test_an_implausible_job_id_answers_422_and_never_reaches_the_hub(
    emulator: Emulator, app_url: str, method: str, target: str
) -> None:
    before = hub_requests(emulator)
    status, body = await raw_request(app_url, method, target)
    assert status == 422, body
    assert b'"field":"generation_id"' in body
    assert hub_requests(emulator) == before


@pytest.mark.anyio
async def test_a_slash_in_a_job_id_matches_no_route_and_never_reaches_the_hub(
    emulator: Emulator, app_url: str
) -> None:
    """``%2F`` is decoded before routing: ``/jobs/a/b`` is no route of the app's (404)."""
    before = hub_requests(emulator)
    status, _ = await raw_request(app_url, "DELETE", "/jobs/a%2Fb")
    assert status == 404
    assert hub_requests(emulator) == before
