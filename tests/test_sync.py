"""The blocking Client: same operations, no await; notebooks and Ctrl-C."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import oxen_queue._sync
from oxen_queue import (
    AsyncClient,
    Client,
    ClientClosedError,
    GenerationFailedError,
    GenerationTimeoutError,
    InvalidParamsError,
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


def test_updates_block_between_status_changes_and_end_with_the_final_record() -> None:
    api = FakeAPI(lifecycle=["queued", "processing", "processing", "failed"], error_message="no")
    with sync_client(api) as client:
        generation = client.enqueue("gpt-image-2", prompt="ox")
        records = list(generation.updates())
        left = client.enqueue("gpt-image-2", prompt="an ox left early")
        for _ in left.updates():
            break  # leaving closes the iterator, which unsubscribes
        subscribers = left._generation._subscribers
    assert [r.status for r in records] == ["queued", "processing", "failed"]
    assert records[-1].error_message == "no"
    assert subscribers is None


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
        Client(api_key="k", completion="never")  # type: ignore[arg-type]


PNG = b"\x89PNG\r\n\x1a\n" + b"an ox" * 10


def serve_files(api: FakeAPI) -> None:
    api.before.append(
        lambda r: (
            httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
            if r.url.host == "files.oxen.test"
            else None
        )
    )


def test_download(tmp_path: Path) -> None:
    api = FakeAPI()
    serve_files(api)
    with sync_client(api) as client:
        generation = client.enqueue("gpt-image-2", prompt="ox")
        path = generation.download(tmp_path)
    assert path.read_bytes() == PNG


def test_download_and_read_by_id_wait_for_the_generation(tmp_path: Path) -> None:
    """A generation id (a job made elsewhere) is reattached, waited for, then fetched."""
    api = FakeAPI()
    serve_files(api)
    with sync_client(api) as client:
        generation_id = client.enqueue("gpt-image-2", prompt="ox").id
        path = client.download(generation_id, tmp_path)
        data = client.read(generation_id)
        record = client.get_generation(generation_id)
        from_record = client.read(record)
    assert path == tmp_path / f"{generation_id}.png"
    assert path.read_bytes() == PNG
    assert data == PNG
    assert from_record == PNG


def test_enqueue_passes_deadline_validate_and_extra_params() -> None:
    api = FakeAPI(lifecycle=["queued"] * 1000)
    with sync_client(api) as client:
        generation = client.enqueue(
            "gpt-image-2",
            prompt="ox",
            deadline=0.05,
            validate=True,
            extra_params={"seed_hint": 7},
        )
        with pytest.raises(GenerationTimeoutError) as timed_out:
            generation.result()
        assert timed_out.value.deadline == 0.05  # its own, not the policy's hour
        with pytest.raises(InvalidParamsError, match="resolution"):
            client.generate("gpt-image-2", prompt="ox", resolution="999x999")
        unchecked = client.enqueue_many(
            "gpt-image-2", 2, prompt="ox", resolution="999x999", validate=False
        )
    (sent, sent_many) = [
        r for r in api.requests if r.method == "POST" and r.url.path == "/api/ai/queue"
    ]
    assert json.loads(sent.content)["seed_hint"] == 7
    assert json.loads(sent_many.content)["resolution"] == "999x999"
    assert len(unchecked) == 2


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    """Names, kinds, defaults and annotations (as written: both modules defer them)."""
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
    ]


def test_init_takes_exactly_the_async_clients_arguments_and_defaults() -> None:
    assert _parameters(Client.__init__) == _parameters(AsyncClient.__init__)


def test_init_forwards_every_argument_to_the_async_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    async def capture(options: dict[str, Any]) -> AsyncClient:
        seen.update(options)
        raise Stop

    monkeypatch.setattr(oxen_queue._sync, "_make_client", capture)
    names = list(inspect.signature(AsyncClient.__init__).parameters)[1:]  # without self
    values: dict[str, Any] = {name: object() for name in names}  # distinct: a mix-up shows
    with pytest.raises(Stop):
        Client(**values)
    assert seen.keys() == values.keys()
    assert all(seen[name] is values[name] for name in names)


# The blocking client's return types differ (SyncGeneration for Generation); its batch() takes
# no progress callbacks, which would run on the client's event loop thread, not the caller's.
SYNC_DIFFERENCES = {"batch": {"on_enqueued", "on_finished"}}
SYNC_RETURNS = {"Generation": "SyncGeneration", "list[Generation]": "list[SyncGeneration]"}


def _shared_operations() -> list[str]:
    return sorted(
        name
        for name, _ in inspect.getmembers(AsyncClient, inspect.isfunction)
        if not name.startswith("_") and name != "aclose"
    )


@pytest.mark.parametrize("name", _shared_operations())
def test_every_operation_takes_the_async_clients_parameters(name: str) -> None:
    """Same names, kinds, defaults and, but for the handle types, annotations."""
    sync, asynchronous = getattr(Client, name), getattr(AsyncClient, name)

    def comparable(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
        skip = SYNC_DIFFERENCES.get(name, set())
        return [(n, k, d) for n, k, d, _ in _parameters(function) if n not in skip]

    assert comparable(sync) == comparable(asynchronous)
    overloads = [typing.get_overloads(f) for f in (sync, asynchronous)]
    assert len(overloads[0]) == len(overloads[1])
    for sync_overload, async_overload in zip(*overloads, strict=True):
        assert _parameters(sync_overload) == _parameters(async_overload)
        returns = inspect.signature(async_overload).return_annotation
        assert inspect.signature(sync_overload).return_annotation == SYNC_RETURNS.get(
            returns, returns
        )


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
