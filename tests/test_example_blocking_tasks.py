"""``examples/blocking_tasks.py``: the blocking client behind a Django view or a Celery task.

The functions run against the emulator as a view and a task would call them: one client per
process, shared by threads, made anew after a fork; a retried task makes no second job; bad
input is refused before anything is sent. The docs page that shows this code runs it too
(``docs/guides/django-celery.md``, in ``test_docs_code.py``); the last test checks that the
page and the file say the same.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from oxen_queue import ClientClosedError, GenerationFailedError, InvalidParamsError
from oxen_queue.testing import Emulator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "blocking_tasks.py"
GUIDE = ROOT / "docs" / "guides" / "django-celery.md"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("blocking_tasks_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tasks = _load()


@pytest.fixture
def example(oxen_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example, its per-process client fresh for the test and closed after it."""
    clients = tasks.ClientPerProcess()
    monkeypatch.setattr(tasks, "clients", clients)
    yield tasks
    clients.close()


# Jobs queued 0.1-0.4 s, then processing 0.4-1 s: the view answers long before the job ends.
@pytest.mark.oxen_emulator(time_scale=0.2)
def test_a_view_starts_a_job_and_a_retried_task_saves_it_without_a_second_job(
    example: ModuleType, oxen_emulator: Emulator, tmp_path: Path
) -> None:
    started = example.start_image("An ox", quality="low")
    # As the client knows it: its watcher (another thread) may already have seen it start.
    assert started["status"] in ("queued", "processing")
    first = example.save_image(started["id"], tmp_path, timeout=60)
    again = example.save_image(started["id"], tmp_path, timeout=60)
    assert first == again == tmp_path / f"{started['id']}.png"
    assert first.read_bytes().startswith(b"\x89PNG")
    status = example.image_status(started["id"])
    assert (status["id"], status["status"], status["error"]) == (started["id"], "succeeded", None)
    assert status["result_url"]
    assert oxen_emulator.stats()["jobs_created"] == 1


def test_bad_parameters_are_refused_before_anything_is_sent(
    example: ModuleType, oxen_emulator: Emulator
) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        example.start_image("An ox", resolution="999x999")
    assert caught.value.field == "resolution"
    assert oxen_emulator.stats()["jobs_created"] == 0
    with pytest.raises(InvalidParamsError):
        example.image_status("../models")


@pytest.mark.oxen_emulator(failure_rate=1.0)
def test_a_failed_job_is_shown_by_the_status_view_and_raised_by_the_task(
    example: ModuleType, tmp_path: Path
) -> None:
    started = example.start_image("An ox")
    with pytest.raises(GenerationFailedError) as caught:
        example.save_image(started["id"], tmp_path, timeout=60)
    assert caught.value.error_message
    status = example.image_status(started["id"])
    assert (status["status"], status["error"]) == ("failed", caught.value.error_message)
    assert list(tmp_path.iterdir()) == []


def test_one_client_serves_every_thread_of_a_process(
    example: ModuleType, oxen_emulator: Emulator, tmp_path: Path
) -> None:
    """Six threads (a threaded web server's requests) share the process's one client."""
    seen: list[int] = []
    saved: list[Path] = []
    errors: list[BaseException] = []

    def request(number: int) -> None:
        try:
            seen.append(id(example.clients.get()))
            started = example.start_image(f"An ox, take {number}", quality="low")
            saved.append(example.save_image(started["id"], tmp_path, timeout=60))
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(set(seen)) == 1
    assert len(set(saved)) == 6
    assert oxen_emulator.stats()["jobs_created"] == 6


def test_a_forked_child_makes_its_own_client_and_leaves_the_parents_alone(
    example: ModuleType,
) -> None:
    """After a fork (a pid that changed), ``get`` makes a new client and never closes the
    inherited one, whose event loop thread lives only in the parent; ``close`` closes only
    the client its own process made."""

    @contextmanager
    def in_child() -> Iterator[None]:
        with pytest.MonkeyPatch.context() as patch:  # the example sees another pid, only it
            patch.setattr(tasks, "os", SimpleNamespace(getpid=lambda: -1))
            yield

    clients = example.clients
    parent = clients.get()
    try:
        with in_child():
            child = clients.get()
            assert child is not parent
            parent.list_models()  # the parent's client was not closed
            clients.close()
            with pytest.raises(ClientClosedError):
                child.list_models()
        parent.list_models()
    finally:
        parent.close()
    made = clients.get()
    try:
        with in_child():
            clients.close()  # another process's client: left alone
        made.list_models()
    finally:
        made.close()


# As above: the job is queued 0.1-0.4 s, so the view's answer names it unfinished on any
# machine (at the default scale it could finish before the view printed, on a busy one).
@pytest.mark.oxen_emulator(time_scale=0.2)
def test_the_example_runs_as_its_docstring_says(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    example.main()
    out = capsys.readouterr().out
    assert re.search(r"view: 202, job \S+ \((queued|processing)\)", out)
    assert "task, retried: the same job" in out
    assert out.rstrip().endswith("view: succeeded")


def _definitions(source: str) -> dict[str, str]:
    tree = ast.parse(source)
    return {
        node.name: ast.dump(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }


def test_the_guide_shows_the_example_s_own_code() -> None:
    """Each class and function the guide defines is the example's, as written there."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.MULTILINE | re.DOTALL)
    shown: dict[str, str] = {}
    for block in blocks:
        try:
            shown.update(_definitions(block))
        except SyntaxError:
            continue
    example = _definitions(EXAMPLE.read_text())
    assert {"ClientPerProcess", "start_image", "image_status", "save_image"} <= set(shown)
    assert {name: shown[name] for name in shown if name in example} == {
        name: example[name] for name in shown if name in example
    }
