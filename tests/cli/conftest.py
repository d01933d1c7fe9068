"""Fixtures of the console script's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oxen_queue._cli._shared import Paths, alive, read_record, stop
from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock

from .support import SECRET_KEY


@pytest.fixture(autouse=True)
def state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Each test its own state directory (``OXEN_QUEUE_STATE_DIR``, which subprocesses
    inherit): a shared emulator a test starts is its own, stopped after the test, and its
    process checked gone."""
    directory = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("OXEN_QUEUE_STATE_DIR", str(directory))
    yield directory
    record = read_record(Paths(directory))
    stop(directory=directory)
    if record is not None:
        assert not alive(record.pid), f"the shared emulator (pid {record.pid}) still runs"


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-TTY output is 80 columns, where rich folds long paths; assertions want whole lines."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def manual_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Emulator, ManualClock]]:
    """An emulator on a manual clock (jobs stay queued until the test moves time), reached
    through the environment like a real hub."""
    clock = ManualClock()
    with Emulator(config=EmulatorConfig(seed=7), clock=clock) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        yield emulator, clock


@pytest.fixture
def fixed_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Emulator, ManualClock]]:
    """As ``manual_hub``, with every image job taking exactly 1 s of clock time, straight from
    enqueue: a test knows which job finishes first."""
    clock = ManualClock()
    config = EmulatorConfig(seed=7, queue_delay=(0.0, 0.0), image_duration=(1.0, 1.0))
    with Emulator(config=config, clock=clock) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        yield emulator, clock
