"""An AsyncClient used without ``async with`` (issue 16): it opens on its first awaited call,
``aclose()`` ends it, and the end of its event loop closes it quietly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal

import anyio
import pytest

from oxen_queue import ClientClosedError, Generation, GenerationRecord
from oxen_queue._ledger import LedgerError
from oxen_queue._ledger._memory import MemoryLedger
from oxen_queue.testing import Emulator

from .fakes import FakeAPI
from .helpers import fake_client

pytestmark = pytest.mark.anyio


class _GatedOpens:
    """Counts the ledger's opens, and holds each one until the gate is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, failures: int = 0) -> None:
        self.calls = 0
        self.failures = failures
        self.gate: anyio.Event | None = None
        opens = self

        async def gated_open(ledger: MemoryLedger) -> None:
            opens.calls += 1
            if opens.gate is not None:
                await opens.gate.wait()
            if opens.failures:
                opens.failures -= 1
                raise LedgerError("ledger sqlite: unable to open database file")

        monkeypatch.setattr(MemoryLedger, "open", gated_open)


async def test_a_client_never_entered_opens_on_its_first_call_and_aclose_ends_it() -> None:
    api = FakeAPI()
    client = fake_client(api)
    assert "not opened" in repr(client)
    record = await client.generate("gpt-image-2", prompt="an ox, no async with")
    assert record.status == "succeeded"
    assert "open" in repr(client)
    generation = await client.enqueue("gpt-image-2", prompt="a second ox")
    assert isinstance(generation, Generation)
    await client.aclose()
    assert "closed" in repr(client)
    with pytest.raises(ClientClosedError, match="closed"):
        await client.enqueue("gpt-image-2", prompt="too late")
    with pytest.raises(ClientClosedError, match="before generation"):
        await generation  # pending when the client closed


async def test_pending_stats_and_spend_can_be_read_before_the_client_opens() -> None:
    client = fake_client(FakeAPI(), max_spend=Decimal(5))
    assert dict(client.pending) == {}
    assert client.stats.pending == 0
    assert client.stats.requests == 0
    spend = client.spend
    assert spend is not None
    assert spend.budget == Decimal(5)
    assert "not opened" in repr(client)  # reading opened nothing
    await client.aclose()


async def test_concurrent_first_calls_share_one_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten tasks call a client never opened at once: one open, ten generations."""
    opens = _GatedOpens(monkeypatch)
    opens.gate = anyio.Event()
    api = FakeAPI()
    client = fake_client(api)
    records: list[GenerationRecord] = []

    async def generate(i: int) -> None:
        records.append(await client.generate("gpt-image-2", prompt=f"ox {i}"))

    try:
        async with anyio.create_task_group() as task_group:
            for i in range(10):
                task_group.start_soon(generate, i)
            await anyio.wait_all_tasks_blocked()  # all ten wait for the one open
            assert opens.calls == 1
            opens.gate.set()
    finally:
        await client.aclose()
    assert opens.calls == 1
    assert len(records) == 10
    assert {r.status for r in records} == {"succeeded"}


async def test_a_first_caller_cancelled_during_the_open_leaves_the_client_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The open is the client's, not its first caller's: a cancellation of that caller does
    not leave it half done, and the next call finds the client open."""
    opens = _GatedOpens(monkeypatch)
    opens.gate = anyio.Event()
    api = FakeAPI()
    client = fake_client(api)
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(client.list_queue)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()  # the first caller gives up while the ledger opens
                opens.gate.set()
        assert "open" in repr(client)
        record = await client.generate("gpt-image-2", prompt="after a cancelled first call")
        assert record.status == "succeeded"
        assert opens.calls == 1
    finally:
        await client.aclose()


async def test_an_open_that_fails_raises_and_the_next_call_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opens = _GatedOpens(monkeypatch, failures=1)
    client = fake_client(FakeAPI())
    try:
        with pytest.raises(LedgerError, match="unable to open"):
            await client.enqueue("gpt-image-2", prompt="the ledger is not there yet")
        assert "not opened" in repr(client)
        generation = await client.enqueue("gpt-image-2", prompt="now it is")
        assert (await generation).status == "succeeded"
        assert opens.calls == 2
    finally:
        await client.aclose()


async def test_generation_cannot_open_a_client_and_says_how_to() -> None:
    """``client.generation(id)`` is not async: on a client never opened it raises, naming
    the two ways to open it; after any awaited call it works."""
    api = FakeAPI()
    client = fake_client(api)
    try:
        with pytest.raises(ClientClosedError, match="not open yet") as info:
            client.generation("gen-1")
        assert "async with" in str(info.value)
        assert "await client." in str(info.value)
        made = await client.enqueue("gpt-image-2", prompt="an ox")
        assert client.generation(made.id) is made
    finally:
        await client.aclose()


async def test_async_with_after_the_first_call_is_refused_and_leaves_the_client_open() -> None:
    client = fake_client(FakeAPI())
    try:
        await client.list_queue()
        with pytest.raises(ClientClosedError, match="only once"):
            async with client:
                pass
        assert "open" in repr(client)
        await client.list_queue()
    finally:
        await client.aclose()


async def test_aclose_of_a_client_never_opened_closes_it_for_good() -> None:
    client = fake_client(FakeAPI())
    await client.aclose()
    assert "closed" in repr(client)
    with pytest.raises(ClientClosedError):
        await client.list_queue()
    with pytest.raises(ClientClosedError):
        async with client:
            pass


async def test_a_lazily_opened_client_is_closed_with_its_views() -> None:
    api = FakeAPI()
    client = fake_client(api)
    view = client.with_options(validate=False)
    await view.list_queue()  # the view opens the client they share
    assert "open" in repr(client)
    await client.aclose()
    with pytest.raises(ClientClosedError):
        await view.list_queue()


NEVER_CLOSED = """
import sys
from oxen_queue import AsyncClient

async def main():
    # OXEN_BASE_URL and OXEN_API_KEY name the emulator.
    client = AsyncClient(http_backend=sys.argv[2])
    record = await client.generate("gpt-image-2", prompt="an ox nobody closes")
    assert record.status == "succeeded", record
    # A generation still pending, and the event stream open, when the loop ends.
    pending = await client.enqueue("gpt-image-2", prompt="an ox left behind")
    print("done", record.status, pending.status, flush=True)

if sys.argv[1] == "trio":
    import trio
    trio.run(main)
else:
    import asyncio
    asyncio.run(main())
print("exited", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("library", "backend"), [("asyncio", "httpx"), ("trio", "httpx"), ("asyncio", "aiohttp")]
)
def test_a_client_never_closed_exits_with_its_loop_without_a_warning(
    library: str, backend: str, oxen_emulator: Emulator
) -> None:
    """In a fresh interpreter: a client used without ``async with`` and never closed, with
    its event stream open and a generation pending, lets ``asyncio.run()`` / ``trio.run()``
    and then the interpreter end, and nothing is printed to stderr (ResourceWarnings shown;
    aiohttp's pool reports an unclosed session on its own)."""
    oxen_emulator.state.time_scale = 1.0  # the second job is still pending at the end
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # ResourceWarning is hidden otherwise
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NEVER_CLOSED), library, backend],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,  # a guard against a hang, not a verdict on speed
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["done succeeded queued", "exited"]
    assert done.stderr == ""


async def test_background_work_that_fails_to_start_under_async_with_raises_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a detached host (no block to raise into) logs such an error; an `async with`'s is
    # structured: the error reaches the block, and the client is not closed behind its back.
    client = fake_client(FakeAPI())

    def broken_start(task_group: object) -> None:
        raise ValueError("a watcher that cannot start")

    monkeypatch.setattr(client._core.watcher, "start", broken_start)
    with anyio.CancelScope():  # exits cleanly: the failed open left no scope of its own open
        with pytest.raises(ExceptionGroup) as raised:
            async with client:
                pass
    assert raised.group_contains(ValueError, match="cannot start")
    assert "closed" not in repr(client)
    await client.aclose()
