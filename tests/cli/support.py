"""Helpers of the console script's tests: running it in process and as a subprocess, reading
its manifest, driving the emulator's manual clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from PIL import Image

from oxen_queue._cli import main
from oxen_queue.testing import Emulator, ManualClock

posix_only = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")

EXAMPLE_PROMPTS: Final = Path(__file__).resolve().parents[2] / "examples" / "prompts.txt"
CLI: Final = [sys.executable, "-c", "from oxen_queue._cli import main; raise SystemExit(main())"]
FAST: Final = ["--time-scale", "0.02"]
SECRET_KEY: Final = "sk-distinctive-9f3a71c2e5-secret"
DEFAULTS: Final = {"resolution": "1920x1080", "output_format": "png"}
PIL_FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
WAIT: Final = 20.0  # seconds a subprocess may take to reach a state before the test fails


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


def manifest_entries(out: Path) -> list[dict[str, Any]]:
    """Every readable line of a batch's manifest."""
    entries = []
    for raw in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(raw))
        except json.JSONDecodeError:
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
        time.sleep(0.02)
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
