"""The blocking Client: same operations, no await; notebooks and Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from oxen_queue import (
    Client,
    ClientClosedError,
    GenerationFailedError,
    PollPolicy,
)

from .fakes import FakeAPI
from .helpers import fake_options

SLOW = PollPolicy(initial=0.01, max_interval=0.01, jitter=0.0)


def sync_client(api: FakeAPI, **overrides: object) -> Client:
    return Client(**fake_options(api, poll_policy=SLOW, **overrides))


def test_enqueue_and_block_for_the_result() -> None:
    api = FakeAPI()
    with sync_client(api) as client:
        generation = client.enqueue("gpt-image-2", prompt="ox")
        record = generation.result(timeout=5)
        assert generation.done()
        assert generation.status == "succeeded"
        again = client.generate("gpt-image-2", prompt="another")
        reattached = client.generation(generation.id).result(timeout=5)
        models = client.get_model("flux-test")
    assert record.generation_id == generation.id
    assert again.status == "succeeded"
    assert reattached.generation_id == generation.id
    assert models.id == "flux-test"
    assert "SyncGeneration" in repr(generation)


def test_failures_raise_as_with_await() -> None:
    api = FakeAPI(lifecycle=["queued", "failed"], error_message="Insufficient credits")
    with sync_client(api) as client, pytest.raises(GenerationFailedError, match="Insufficient"):
        client.generate("gpt-image-2", prompt="ox")


def test_result_timeout_leaves_the_generation_running() -> None:
    api = FakeAPI(lifecycle=["queued"] * 40 + ["succeeded"])
    with sync_client(api) as client:
        generation = client.enqueue("gpt-image-2", prompt="ox")
        with pytest.raises(TimeoutError):
            generation.result(timeout=0.01)
        assert generation.result(timeout=5).status == "succeeded"


def test_works_inside_a_running_event_loop_like_a_notebook() -> None:
    api = FakeAPI()

    async def cell() -> str:
        client = sync_client(api)  # no `with`: a notebook keeps it open
        try:
            return client.generate("gpt-image-2", prompt="from a notebook").status
        finally:
            client.close()

    assert asyncio.run(cell()) == "succeeded"


def test_a_closed_client_refuses_work_and_its_thread_is_gone() -> None:
    api = FakeAPI()
    before = {t.name for t in threading.enumerate()}
    client = sync_client(api)
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientClosedError):
        client.enqueue("gpt-image-2", prompt="ox")
    assert {t.name for t in threading.enumerate()} == before


def test_bad_options_surface_from_the_constructor() -> None:
    with pytest.raises(ValueError, match="completion"):
        Client(api_key="k", completion="never")


def test_download(tmp_path: Path) -> None:
    api = FakeAPI()
    api.before.append(
        lambda r: (
            httpx.Response(200, content=b"png", headers={"content-type": "image/png"})
            if r.url.host == "files.oxen.test"
            else None
        )
    )
    with sync_client(api) as client:
        generation = client.enqueue("gpt-image-2", prompt="ox")
        path = generation.download(tmp_path)
    assert path.read_bytes() == b"png"


def test_ctrl_c_interrupts_generate_and_cancels_the_job_upstream() -> None:
    api = FakeAPI(lifecycle=["queued"] * 100_000)
    with sync_client(api) as client:
        # A real SIGINT, as Ctrl-C sends: it interrupts the blocked wait in this thread.
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.generate("gpt-image-2", prompt="interrupted")
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while not api.calls.get("DELETE /api/ai/queue/" + next(iter(api.jobs), "?")):
            assert time.monotonic() < deadline, "the job was not cancelled upstream"
            time.sleep(0.01)
    (job,) = api.jobs.values()
    assert job.status == "cancelled"
