"""Helpers of the console script's tests: running it in process and as a subprocess, reading
its manifest, driving the emulator's manual clock."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx
import pytest
from PIL import Image

from oxen_queue._cli import main
from oxen_queue.testing import Emulator, ManualClock

from ..helpers import TLS

posix_only = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")

EXAMPLE_PROMPTS: Final = Path(__file__).resolve().parents[2] / "examples" / "prompts.txt"
CLI: Final = [sys.executable, "-c", "from oxen_queue._cli import main; raise SystemExit(main())"]
FAST: Final = ["--time-scale", "0.02"]
SECRET_KEY: Final = "sk-distinctive-9f3a71c2e5-secret"
DEFAULTS: Final = {"resolution": "1920x1080", "output_format": "png"}
PIL_FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Seconds a subprocess may take to reach a state before the test fails: a guard against a
# hang, not a verdict on speed. A child compiles the package from source when bytecode is
# not written (PYTHONDONTWRITEBYTECODE), 1-2 s of CPU, and 20 s were seen passing with the
# whole suite on four workers beside a busy core.
WAIT: Final = 60.0


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console script in process; return its exit status, stdout and stderr."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def spawn(*argv: str) -> subprocess.Popen[str]:
    """Start the console script as a real process (inheriting the test's environment)."""
    return subprocess.Popen(
        [*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = WAIT) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the process did not exit in {timeout} s\n{out}\n{err}")
    return process.returncode, out, err


class LineReader:
    """Reads a child's stdout line by line, as it is written, in a thread: a test can check
    what was printed while the child still runs. Kills the child if the test fails first."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def __enter__(self) -> LineReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._thread.join(WAIT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def next(self, timeout: float = WAIT) -> str:
        """The next line printed; fails the test if none comes in ``timeout`` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line printed in {timeout} s")
        if line is None:
            pytest.fail("the output ended before the line expected")
        return line

    def finish(self, timeout: float = WAIT) -> tuple[int, str, str]:
        """Wait for the child; its status, the stdout not read yet, and its stderr."""
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the process did not exit in {timeout} s")
        self._thread.join(timeout)
        rest = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        assert self.process.stderr is not None
        return status, "".join(f"{line}\n" for line in rest), self.process.stderr.read()

    # The pipes are closed on leaving the ``with`` block.


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str] | None = None) -> None:
    """Poll ``condition`` until true; fail if ``process`` exits first or after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process exited early ({process.returncode})\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail("the condition never held")
        time.sleep(0.01)  # polling: files and processes announce nothing


def manifest_entries(out: Path) -> list[dict[str, Any]]:
    """Every readable line of a batch's manifest (a line torn or damaged is left out)."""
    entries = []
    for raw in (out / "manifest.jsonl").read_bytes().split(b"\n"):
        try:
            entries.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    return entries


def latest_by_line(out: Path) -> dict[int, dict[str, Any]]:
    """The latest manifest entry of each prompts-file line."""
    return {entry["line"]: entry for entry in manifest_entries(out)}


def wait_for_queued(process: subprocess.Popen[str], out: Path, count: int) -> None:
    """Wait until the manifest records ``count`` enqueued generations."""
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out_text, err_text = process.communicate()
            pytest.fail(f"the batch exited early ({process.returncode})\n{out_text}\n{err_text}")
        if manifest.exists():
            queued = [e for e in manifest_entries(out) if e.get("status") == "queued"]
            if len(queued) >= count:
                return
        time.sleep(0.02)  # polling: the manifest is a file another process writes
    process.kill()
    out_text, err_text = process.communicate()
    pytest.fail(f"the manifest never recorded {count} queued generations\n{out_text}\n{err_text}")


@contextmanager
def ticking(clock: ManualClock, *, step: float = 1.0, every: float = 0.005) -> Iterator[None]:
    """Move a manual clock forward in the background (``step`` s of job time per ``every``)."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every):
            clock.advance(step)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def enqueue_directly(emulator: Emulator, prompt: str) -> str:
    """Enqueue one generation over plain HTTP (as another tool would); return its id."""
    response = httpx.post(
        f"{emulator.base_url}/api/ai/queue",
        json={"model": "gpt-image-2", "prompt": prompt},
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
        verify=TLS,
    )
    response.raise_for_status()
    return str(response.json()["generations"][0]["generation_id"])


def expected_params(prompts: Path) -> dict[int, dict[str, Any]]:
    """What each line of a prompts file asks for, by line number (read independently of the
    CLI's own parser)."""
    expected: dict[int, dict[str, Any]] = {}
    for number, raw in enumerate(prompts.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if text and not text.startswith("#"):
            expected[number] = json.loads(text) if text.startswith("{") else {"prompt": text}
    return expected


def assert_image(path: Path, *, resolution: str, output_format: str) -> None:
    """``path`` is a real image of that size and format."""
    with Image.open(path) as image:
        assert f"{image.width}x{image.height}" == resolution, path
        assert image.format == PIL_FORMATS[output_format], path
        image.verify()


def write_prompts(tmp_path: Path, *lines: str) -> Path:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return prompts
