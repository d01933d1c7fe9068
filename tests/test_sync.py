"""The blocking Client: same operations, no await; notebooks and Ctrl-C."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import re
import signal
import threading
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import oxen_queue._sync
from oxen_queue import (
    AsyncClient,
    Client,
    ClientClosedError,
    GenerationCancelledError,
    GenerationFailedError,
    GenerationTimeoutError,
    InvalidParamsError,
    PollPolicy,
    SyncGeneration,
)

from .fakes import FakeAPI
from .helpers import WITHIN, fake_options

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


def test_reads_from_other_threads_while_one_closes_get_a_value_or_client_closed() -> None:
    """Before: while another thread closed the client, ``stats``, ``pending`` and
    ``generation(id)`` raised anyio's ``RuntimeError: This portal is not running``."""
    client = sync_client(api := FakeAPI())
    generation_id = client.enqueue("gpt-image-2", prompt="ox").id
    unexpected: list[BaseException] = []
    started = threading.Event()

    def read() -> None:
        while True:
            started.set()
            try:
                client.stats  # noqa: B018 (a read is the call under test)
                client.pending  # noqa: B018
                client.generation(generation_id)
            except ClientClosedError:
                return  # the documented answer once it is closed
            except BaseException as exc:  # anything else is the bug
                unexpected.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    assert started.wait(WITHIN)
    client.close()
    for reader in readers:
        reader.join(WITHIN)
    assert unexpected == []
    assert not any(reader.is_alive() for reader in readers)
    assert api.calls  # the client did work before it closed


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


# The blocking client is generated from AsyncClient (.ci/codegen.py); these tests check the
# result on their own terms. Its handle types are the blocking forms; aclose() is close(); its
# batch() takes no progress callbacks, which would run on the client's event loop thread, not
# the caller's.
SYNC_NAMES = {"aclose": "close"}
SYNC_DIFFERENCES = {"batch": {"on_enqueued", "on_finished"}}
SYNC_TYPES = {
    "Generation": "SyncGeneration",
    "GenerationHistory": "SyncGenerationHistory",
    "AsyncClient": "Client",
}


def _blocking(annotation: Any) -> Any:
    """An AsyncClient annotation (a string: both modules defer them) as Client writes it."""
    if not isinstance(annotation, str):
        return annotation
    return re.sub(r"\b(\w+)\b", lambda m: SYNC_TYPES.get(m[1], m[1]), annotation)


def _shared_operations() -> list[str]:
    return sorted(
        name
        for name, value in inspect.getmembers(AsyncClient)
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    )


def test_the_blocking_client_has_every_public_operation_and_property_and_no_other() -> None:
    blocking = {
        name
        for name, value in inspect.getmembers(Client)
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    }
    assert blocking == {SYNC_NAMES.get(name, name) for name in _shared_operations()}


@pytest.mark.parametrize("name", _shared_operations())
def test_every_operation_takes_the_async_clients_parameters(name: str) -> None:
    """Same names, kinds, defaults and annotations (the handle types mapped), overloads too."""
    sync, asynchronous = getattr(Client, SYNC_NAMES.get(name, name)), getattr(AsyncClient, name)
    if isinstance(asynchronous, property):
        assert isinstance(sync, property)
        sync, asynchronous = sync.fget, asynchronous.fget
    skip = SYNC_DIFFERENCES.get(name, set())
    expected = [
        (n, kind, default, _blocking(annotation))
        for n, kind, default, annotation in _parameters(asynchronous)
        if n not in skip
    ]
    assert _parameters(sync) == expected
    returns = [inspect.signature(f).return_annotation for f in (sync, asynchronous)]
    assert returns[0] == _blocking(returns[1])
    overloads = [typing.get_overloads(f) for f in (sync, asynchronous)]
    assert len(overloads[0]) == len(overloads[1])
    for sync_overload, async_overload in zip(*overloads, strict=True):
        assert _parameters(sync_overload) == [
            (n, k, d, _blocking(a)) for n, k, d, a in _parameters(async_overload)
        ]
        returns = [inspect.signature(f).return_annotation for f in (sync_overload, async_overload)]
        assert returns[0] == _blocking(returns[1])


def test_pending_is_a_live_view_of_blocking_handles() -> None:
    api = FakeAPI(lifecycle=["queued"] * 100_000)  # pending until cancelled
    with sync_client(api) as client:
        pending = client.pending
        generation = client.enqueue("gpt-image-2", prompt="ox")
        assert list(pending) == [generation.id]
        assert len(pending) == 1
        held = pending[generation.id]
        assert isinstance(held, SyncGeneration)
        assert held.id == generation.id
        held.cancel()
        with pytest.raises(GenerationCancelledError):
            generation.result(timeout=5)
        assert generation.id not in pending
        assert len(client.pending) == 0
        with pytest.raises(KeyError):
            pending[generation.id]


def test_cancel_and_download_take_a_blocking_handle(tmp_path: Path) -> None:
    """A SyncGeneration given to a Client method is the generation it wraps."""
    api = FakeAPI(lifecycle=["queued"] * 100_000)
    serve_files(api)
    with sync_client(api) as client:
        generation = client.enqueue("gpt-image-2", prompt="ox")
        client.cancel(generation)
        with pytest.raises(GenerationCancelledError):
            generation.result(timeout=5)
        with pytest.raises(GenerationCancelledError):
            client.download(generation, tmp_path)
    assert api.calls.get(f"DELETE /api/ai/queue/{generation.id}") == 1


def test_a_view_has_its_own_defaults_and_shares_the_clients_lifetime() -> None:
    api = FakeAPI()
    client = sync_client(api)
    view = client.with_options(validate=False)
    assert isinstance(view, Client)
    with pytest.raises(InvalidParamsError, match="resolution"):
        client.enqueue("gpt-image-2", prompt="ox", resolution="999x999")
    unchecked = view.enqueue("gpt-image-2", prompt="ox", resolution="999x999")
    assert unchecked.result(timeout=5).status == "succeeded"
    view.close()
    with pytest.raises(ClientClosedError):
        client.enqueue("gpt-image-2", prompt="ox")
    assert client.stats.pending == 0  # a closed client's counters are still read


def test_work_refused_by_a_closed_client_leaves_no_coroutine_unawaited() -> None:
    client = sync_client(FakeAPI())
    client.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with pytest.raises(ClientClosedError):
                client.generate("gpt-image-2", prompt="ox")
        gc.collect()
    assert [str(w.message) for w in caught] == []
    # Plain methods are refused by the AsyncClient itself, called here once the loop is gone.
    with pytest.raises(ClientClosedError):
        client.generation("some-id")
    with pytest.raises(ClientClosedError):
        client.iter_generations()


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Python's own SIGINT handler (KeyboardInterrupt), as in a terminal: a process started
    in the background by a shell without job control (a CI runner's, say) inherits SIGINT
    ignored, and ``uv run`` hands that on, so Ctrl-C would do nothing at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_interrupts_generate_and_cancels_the_job_upstream() -> None:
    api = FakeAPI(lifecycle=["queued"] * 100_000)
    with sync_client(api) as client:
        # A real SIGINT, as Ctrl-C sends, once the job exists and the call waits on it: it
        # interrupts the blocked wait in this thread.
        def interrupt() -> None:
            deadline = time.monotonic() + WITHIN
            while time.monotonic() < deadline and not any(
                key.startswith("GET /api/ai/queue/") for key in tuple(api.calls)
            ):
                time.sleep(0.005)  # polling: the fake announces no request
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            client.generate("gpt-image-2", prompt="interrupted")
        deadline = time.monotonic() + WITHIN
        while not api.calls.get("DELETE /api/ai/queue/" + next(iter(api.jobs), "?")):
            assert time.monotonic() < deadline, "the job was not cancelled upstream"
            time.sleep(0.005)  # polling, as above
    (job,) = api.jobs.values()
    assert job.status == "cancelled"
