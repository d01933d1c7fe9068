"""The GPT Image 2 docs page's own Python snippets, unmodified but for the host, work.

The snippets are read from a copy of the page (tests/data/oxen-gpt-image-2-page.md) and run
in subprocesses, as a user would paste them. They use ``requests``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from oxen_queue.testing import Emulator, EmulatorConfig

from ._support import DOCS_PAGE_PATH

DOCS_HOST = "https://hub.oxen.ai"
_BLOCK = re.compile(r"^( *)```python[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)

needs_requests = pytest.mark.skipif(
    importlib.util.find_spec("requests") is None,
    reason="the docs snippets need requests (uv run --with requests pytest ...)",
)


def _snippets() -> dict[str, list[str]]:
    """The page's Python blocks, by kind: sync, poll (async queue) and sse."""
    page = DOCS_PAGE_PATH.read_text(encoding="utf-8")
    kinds: dict[str, list[str]] = {"sync": [], "poll": [], "sse": []}
    for match in _BLOCK.finditer(page):
        code = textwrap.dedent(match.group(2))
        if "/api/ai/images/generate" in code:
            kinds["sync"].append(code)
        elif "/api/events" in code:
            kinds["sse"].append(code)
        else:
            kinds["poll"].append(code)
    return kinds


@pytest.fixture(scope="module")
def instant() -> Iterator[Emulator]:
    """Jobs finish as soon as anyone looks: the polling snippets never sleep their 5 s."""
    config = EmulatorConfig(queue_delay=(0.0, 0.0), image_duration=(0.0, 0.0))
    with Emulator(config=config) as emu:
        yield emu


@pytest.fixture(scope="module")
def realistic() -> Iterator[Emulator]:
    """The default clock, 5 times faster: a job still takes over 0.5 s, long enough for the
    SSE snippet, which subscribes only after enqueueing."""
    with Emulator(config=EmulatorConfig(time_scale=0.2)) as emu:
        yield emu


def _run(snippets: list[str], base_url: str) -> list[str]:
    """Run snippets concurrently with the host swapped; return their outputs."""
    env = {**os.environ, "OXEN_API_KEY": "docs-snippet-key"}
    processes = []
    for code in snippets:
        assert DOCS_HOST in code
        swapped = code.replace(DOCS_HOST, base_url)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", swapped],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        outputs.append(stdout)
    return outputs


def test_the_page_has_the_six_python_snippets() -> None:
    snippets = _snippets()
    assert {kind: len(codes) for kind, codes in snippets.items()} == {
        "sync": 2,
        "poll": 2,
        "sse": 2,
    }


@pytest.mark.slow
@needs_requests
def test_the_sync_and_polling_snippets_run_unmodified(instant: Emulator) -> None:
    snippets = _snippets()
    sync_out = _run(snippets["sync"], instant.base_url)
    poll_out = _run(snippets["poll"], instant.base_url)
    for out in sync_out:
        assert "'model': 'gpt-image-2'" in out
        assert f"'images': [{{'url': '{instant.files_url}/files/" in out
    for out in poll_out:
        assert out.startswith(f"Result: {instant.files_url}/files/")
    stats = instant.stats()
    assert stats["sync_generations"] == 2
    assert stats["jobs_by_status"] == {"succeeded": 2}


@pytest.mark.slow
@needs_requests
def test_the_sse_snippets_see_their_event_though_they_subscribe_after_enqueueing(
    realistic: Emulator,
) -> None:
    outputs = _run(_snippets()["sse"], realistic.base_url)
    for out in outputs:
        assert "'status': 'succeeded'" in out
        assert "'model': 'gpt-image-2'" in out
        assert f"'url': '{realistic.files_url}/files/" in out
    assert realistic.stats()["events"]["delivered"] >= 2
