"""The ``oxen-queue`` console script, driven for real against the emulator.

Most tests call ``main(argv)`` in process (its consoles write to whatever ``sys.stdout`` and
``sys.stderr`` are, so ``capsys`` sees everything) against an emulator reached through
``OXEN_BASE_URL`` and ``OXEN_API_KEY``, as a user's shell would reach the hub. Where a real
process matters (Ctrl-C, a crash, logging handlers, the long-running ``emulator`` command) the
script runs as a subprocess. Interrupted-batch tests use a :class:`ManualClock`: nothing
finishes until a test moves time, so what the first run enqueued is known exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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
from oxen_queue.testing import MODELS, Emulator, EmulatorConfig, ManualClock

posix_only = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")

EXAMPLE_PROMPTS: Final = Path(__file__).resolve().parents[1] / "examples" / "prompts.txt"
CLI: Final = [sys.executable, "-c", "from oxen_queue._cli import main; raise SystemExit(main())"]
FAST: Final = ["--time-scale", "0.02"]
SECRET_KEY: Final = "sk-distinctive-9f3a71c2e5-secret"
DEFAULTS: Final = {"resolution": "1920x1080", "output_format": "png"}
PIL_FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
WAIT: Final = 20.0  # seconds a subprocess may take to reach a state before the test fails


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


# --- helpers -------------------------------------------------------------------------------


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


# --- demo ----------------------------------------------------------------------------------


def test_demo_saves_every_bundled_prompt_as_the_image_it_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``demo`` needs no key, exits 0, saves one image per prompt of examples/prompts.txt with
    the line's size and format (defaults 1920x1080 png), records each in the manifest, and
    prints the summary."""
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    out = tmp_path / "demo"
    status, stdout, stderr = run(["demo", *FAST, "--out", str(out)], capsys)

    assert status == 0, stderr
    expected = expected_params(EXAMPLE_PROMPTS)
    latest = latest_by_line(out)
    assert set(latest) == set(expected)
    for number, params in expected.items():
        entry = latest[number]
        assert entry["status"] == "succeeded"
        assert entry["prompt"] == params["prompt"]
        file = Path(entry["file"])
        assert file.parent == out
        assert_image(
            file,
            resolution=params.get("resolution", DEFAULTS["resolution"]),
            output_format=params.get("output_format", DEFAULTS["output_format"]),
        )
        assert file.name in stdout
    assert len(list(out.glob("*.*"))) == len(expected) + 1  # the images and the manifest
    assert "Summary" in stdout
    assert stdout.count("succeeded") == len(expected)
    assert f"{len(expected)} of {len(expected)} saved in {out}/" in stdout
    assert "embedded emulator at http://127.0.0.1:" in stderr


# --- generate ------------------------------------------------------------------------------


def test_generate_saves_each_generation_and_prints_its_path(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``generate -n 2`` enqueues one request of two generations, saves two distinct images
    in --out and prints where each went; exit 0."""
    status, stdout, stderr = run(["generate", "an ox", "-n", "2", "--out", str(tmp_path)], capsys)

    assert status == 0, stderr
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    for file in files:
        assert_image(file, resolution="1920x1080", output_format="png")
        assert f"saved {file}" in stdout
    assert oxen_emulator.stats()["jobs_by_prompt"] == {"an ox": 2}


def test_generate_creates_a_missing_out_directory(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``generate --out new/dir`` creates the directory and saves every image inside it."""
    out = tmp_path / "new" / "dir"
    status, _, stderr = run(["generate", "an ox", "-n", "2", "--out", str(out)], capsys)

    assert status == 0, stderr
    assert out.is_dir()
    assert len(list(out.iterdir())) == 2


def test_generate_prints_whole_paths_when_piped(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each saved path is printed on one line, however long, in non-terminal output."""
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / ("d" * 60)
    out.mkdir()
    status, stdout, _ = run(["generate", "an ox", "--out", str(out)], capsys)

    assert status == 0
    (file,) = out.iterdir()
    assert str(file) in stdout.splitlines()[0]


def test_generate_passes_its_options_to_the_request(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resolution``, ``--quality`` and ``--format`` shape the image that is saved."""
    argv = ["generate", "a small ox", "--out", str(tmp_path), "--resolution", "1024x768"]
    status, _, stderr = run([*argv, "--quality", "low", "--format", "webp"], capsys)

    assert status == 0, stderr
    (file,) = tmp_path.iterdir()
    assert file.suffix == ".webp"
    assert_image(file, resolution="1024x768", output_format="webp")
    (job,) = oxen_emulator.state.jobs.values()
    assert job.params["quality"] == "low"


def test_generate_with_an_embedded_emulator_needs_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--emulator`` runs without OXEN_API_KEY and says where its emulator listens."""
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    status, stdout, stderr = run(
        ["generate", "an ox", "--emulator", *FAST, "--out", str(tmp_path)], capsys
    )

    assert status == 0, stderr
    assert "embedded emulator at" in stderr
    (file,) = tmp_path.iterdir()
    assert f"saved {file}" in stdout


@pytest.mark.oxen_emulator(failure_rate=1.0)
def test_generate_reports_a_failed_generation_and_exits_1(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A generation that fails on the server: exit 1, its error message printed, no file;
    ``status`` of that generation shows the error and exits 1 too."""
    status, stdout, stderr = run(["generate", "an ox", "--out", str(tmp_path)], capsys)

    assert status == 1
    assert "Insufficient credits" in stdout + stderr
    assert "failed" in stdout + stderr
    assert list(tmp_path.iterdir()) == []

    (generation_id,) = oxen_emulator.state.jobs
    assert generation_id in stdout + stderr
    status, stdout, _ = run(["status", generation_id], capsys)
    assert status == 1
    assert "Insufficient credits" in stdout


def test_generate_rejects_invalid_parameters_before_enqueueing(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown resolution or ``-n 0`` is bad usage: exit 2, a one-line error, nothing
    enqueued."""
    status, _, stderr = run(["generate", "an ox", "--resolution", "999x999"], capsys)
    assert status == 2
    assert "error:" in stderr
    assert "resolution" in stderr
    assert "Traceback" not in stderr

    status, _, stderr = run(["generate", "an ox", "-n", "0"], capsys)
    assert status == 2
    assert "-n must be at least 1" in stderr
    assert oxen_emulator.stats()["jobs_created"] == 0


# --- batch ---------------------------------------------------------------------------------


def test_batch_runs_plain_and_json_lines_with_command_line_defaults(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plain lines take the command's ``--resolution``; a JSON line's own parameters (and
    model) win; comments and blank lines are skipped; every image is saved and recorded."""
    prompts = write_prompts(
        tmp_path,
        "# a comment",
        "a plain ox",
        "",
        '{"prompt": "a square jpeg ox", "resolution": "1024x1024", "output_format": "jpeg"}',
        '{"prompt": "a low ox", "quality": "low", "model": "gpt-image-2"}',
    )
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--resolution", "1024x768"]
    status, stdout, stderr = run([*argv, "--concurrency", "2"], capsys)

    assert status == 0, stdout + stderr
    latest = latest_by_line(out)
    assert sorted(latest) == [2, 4, 5]
    assert all(entry["status"] == "succeeded" for entry in latest.values())
    assert_image(Path(latest[2]["file"]), resolution="1024x768", output_format="png")
    assert_image(Path(latest[4]["file"]), resolution="1024x1024", output_format="jpeg")
    assert_image(Path(latest[5]["file"]), resolution="1024x768", output_format="png")
    assert latest[5]["model"] == "gpt-image-2"
    assert oxen_emulator.stats()["jobs_created"] == 3
    assert f"3 of 3 saved in {out}/, manifest {out / 'manifest.jsonl'}" in stdout


def test_batch_manifest_records_each_generation_as_queued_then_finished(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each request gets a ``queued`` line with its generation id, then a ``succeeded`` line
    with the same id and its file; every line carries prompt, id and status."""
    prompts = write_prompts(tmp_path, "ox one", "ox two")
    out = tmp_path / "out"
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)

    assert status == 0, stderr
    entries = manifest_entries(out)
    assert len(entries) == 4
    for prompt in ("ox one", "ox two"):
        queued, succeeded = (e for e in entries if e["prompt"] == prompt)
        assert queued["status"] == "queued"
        assert succeeded["status"] == "succeeded"
        assert queued["generation_id"] == succeeded["generation_id"]
        assert queued["generation_id"] in oxen_emulator.state.jobs
        assert Path(succeeded["file"]).is_file()
        assert succeeded.get("error") is None


def test_batch_fails_an_invalid_line_locally_and_runs_the_rest(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line with invalid parameters fails without ever being enqueued; the others succeed;
    exit 1. Run again, nothing is enqueued anew: the successes are settled, and the failure
    is reported as such (without --retry-failed)."""
    prompts = write_prompts(
        tmp_path,
        "a fine ox",
        '{"prompt": "an impossible ox", "resolution": "999x999"}',
        '{"prompt": "another fine ox", "output_format": "webp"}',
    )
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    status, stdout, stderr = run(argv, capsys)

    assert status == 1, stderr
    stats = oxen_emulator.stats()
    assert stats["jobs_created"] == 2
    assert "an impossible ox" not in stats["jobs_by_prompt"]
    latest = latest_by_line(out)
    assert latest[1]["status"] == latest[3]["status"] == "succeeded"
    assert latest[2]["status"] == "error"
    assert latest[2].get("file") is None
    assert latest[2].get("generation_id") is None
    assert "resolution" in latest[2]["error"]
    assert "2 of 3 saved" in stdout
    assert "error" in stdout  # the summary's status of the failed line

    status, stdout, _ = run(argv, capsys)
    assert status == 1
    assert "Resuming: 3 already settled, 0 reattached by id." in stdout
    assert oxen_emulator.stats()["jobs_created"] == 2


@pytest.mark.oxen_emulator(failure_rate=1.0)
def test_batch_retry_failed_enqueues_failed_generations_anew(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failed generations are skipped on a rerun, and enqueued anew with --retry-failed."""
    prompts = write_prompts(tmp_path, "a broke ox")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    status, stdout, _ = run(argv, capsys)
    assert status == 1
    assert latest_by_line(out)[1]["status"] == "failed"
    assert latest_by_line(out)[1]["error"] == "Insufficient credits"
    assert "Insufficient credits" in stdout

    assert run(argv, capsys)[0] == 1
    assert oxen_emulator.stats()["jobs_created"] == 1

    assert run([*argv, "--retry-failed"], capsys)[0] == 1
    assert oxen_emulator.stats()["jobs_created"] == 2


def test_batch_rejects_a_malformed_json_line_with_its_line_number(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prompts file with a malformed JSON line is bad usage: exit 2, the file and line
    number in the message, nothing enqueued, no manifest."""
    prompts = write_prompts(tmp_path, "a fine ox", "", '{"prompt": "a broken ox",')
    out = tmp_path / "out"
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)

    assert status == 2
    assert f"{prompts}:3: not valid JSON" in stderr
    assert oxen_emulator.stats()["jobs_created"] == 0
    assert not (out / "manifest.jsonl").exists()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["# only a comment", ""], "holds no prompts"),
        (['{"resolution": "1024x1024"}'], 'a JSON line needs a string "prompt"'),
        (['{"prompt": "x", "model": 3}'], '"model" must be a string'),
    ],
)
def test_batch_rejects_an_unusable_prompts_file(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    message: str,
) -> None:
    """Empty files and JSON lines without a usable prompt or model: exit 2 with the reason."""
    prompts = write_prompts(tmp_path, *lines)
    status, _, stderr = run(["batch", str(prompts), "--out", str(tmp_path / "out")], capsys)

    assert status == 2
    assert message in stderr
    assert oxen_emulator.stats()["jobs_created"] == 0


def test_batch_reports_a_missing_prompts_file(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prompts file that does not exist: exit 2, named in the message, no traceback."""
    missing = tmp_path / "nope.txt"
    status, _, stderr = run(["batch", str(missing), "--out", str(tmp_path / "out")], capsys)

    assert status == 2
    assert str(missing) in stderr
    assert "Traceback" not in stderr


# --- resuming an interrupted batch ----------------------------------------------------------

RESUME_PROMPTS: Final = ("ox one", "ox two", "ox three", "ox four", "ox five")


def _resume_and_finish(
    emulator: Emulator,
    clock: ManualClock,
    prompts: Path,
    out: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    reattached: int,
) -> None:
    """Run the interrupted batch again with the same --out and check it finished the job:
    exit 0, every prompt saved, each enqueued exactly once."""
    with ticking(clock):
        status, stdout, stderr = run(
            ["batch", str(prompts), "--out", str(out), "--concurrency", "2"], capsys
        )

    assert status == 0, stdout + stderr
    assert f"Resuming: 0 already settled, {reattached} reattached by id." in stdout
    assert emulator.stats()["jobs_by_prompt"] == dict.fromkeys(RESUME_PROMPTS, 1)
    latest = latest_by_line(out)
    assert [latest[n]["prompt"] for n in sorted(latest)] == list(RESUME_PROMPTS)
    for entry in latest.values():
        assert entry["status"] == "succeeded"
        assert_image(Path(entry["file"]), resolution="1920x1080", output_format="png")
        assert emulator.state.jobs[entry["generation_id"]].status == "succeeded"


@posix_only
def test_batch_interrupted_by_ctrl_c_resumes_without_enqueueing_twice(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT during a batch: exit 130 with a hint to rerun, no traceback, the enqueued ids
    kept in the manifest. Rerun with the same --out: the two enqueued generations are
    reattached by id, the other three enqueued once; every prompt ends with its file."""
    emulator, clock = manual_hub
    prompts = write_prompts(tmp_path, *RESUME_PROMPTS)
    out = tmp_path / "out"
    process = spawn("batch", str(prompts), "--out", str(out), "--concurrency", "2")
    wait_for_queued(process, out, 2)
    process.send_signal(signal.SIGINT)
    status, _, stderr = finish(process)

    assert status == 130, stderr
    assert "interrupted" in stderr
    assert "same --out" in stderr
    assert "Traceback" not in stderr
    assert emulator.stats()["jobs_created"] == 2
    # Interrupting the CLI must not cancel the work it paid for: the jobs are still queued.
    assert all(job.status == "queued" for job in emulator.state.jobs.values())

    _resume_and_finish(emulator, clock, prompts, out, capsys, reattached=2)


def test_batch_killed_mid_write_resumes_without_enqueueing_twice(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL (a crash) with a torn last manifest line: the rerun ignores the torn line,
    reattaches what was recorded as enqueued, and enqueues nothing twice."""
    emulator, clock = manual_hub
    prompts = write_prompts(tmp_path, *RESUME_PROMPTS)
    out = tmp_path / "out"
    process = spawn("batch", str(prompts), "--out", str(out), "--concurrency", "2")
    wait_for_queued(process, out, 2)
    process.kill()
    finish(process)
    manifest = out / "manifest.jsonl"
    with manifest.open("a", encoding="utf-8") as file:
        file.write('{"key": "3:0123456789ab", "line": 3, "prompt": "ox thr')  # the line in flight

    _resume_and_finish(emulator, clock, prompts, out, capsys, reattached=2)


def test_batch_rerun_after_success_enqueues_nothing(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished batch run again with the same --out is settled from its manifest: exit 0,
    no request enqueued, the same files."""
    prompts = write_prompts(tmp_path, "ox one", "ox two")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    files = sorted(out.iterdir())

    status, stdout, _ = run(argv, capsys)
    assert status == 0
    assert "Resuming: 2 already settled, 0 reattached by id." in stdout
    assert oxen_emulator.stats()["jobs_created"] == 2
    assert sorted(out.iterdir()) == files


def test_batch_rerun_after_adding_a_comment_line_enqueues_nothing(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requests are recognised by content, not position: a new comment line on top of the
    prompts file does not make the rerun enqueue the same prompts again."""
    prompts = write_prompts(tmp_path, "ox one", "ox two")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    write_prompts(tmp_path, "# my prompts", "ox one", "ox two")

    assert run(argv, capsys)[0] == 0
    assert oxen_emulator.stats()["jobs_by_prompt"] == {"ox one": 1, "ox two": 1}


def test_batch_reattaches_a_succeeded_generation_whose_file_is_gone(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest saying ``succeeded`` for a file since deleted: the rerun downloads it again
    from the same generation, without enqueueing."""
    prompts = write_prompts(tmp_path, "an ox")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    file = Path(latest_by_line(out)[1]["file"])
    file.unlink()

    status, stdout, _ = run(argv, capsys)
    assert status == 0
    assert "1 reattached by id" in stdout
    assert file.is_file()
    assert oxen_emulator.stats()["jobs_created"] == 1


# --- status, cancel, models ----------------------------------------------------------------


def test_status_shows_a_generation_as_a_table_and_as_json(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """``status ID`` shows the row (id, status, model, prompt); ``--json`` prints the row as
    JSON a script can read."""
    emulator, _ = manual_hub
    generation_id = enqueue_directly(emulator, "a queued ox")

    status, stdout, stderr = run(["status", generation_id], capsys)
    assert status == 0, stderr
    assert generation_id in stdout
    assert "queued" in stdout
    assert "gpt-image-2" in stdout
    assert "a queued ox" in stdout

    status, stdout, _ = run(["status", generation_id, "--json"], capsys)
    assert status == 0
    row = json.loads(stdout)
    assert row["generation_id"] == generation_id
    assert row["status"] == "queued"
    assert row["model_name"] == "gpt-image-2"
    assert row["prompt"] == "a queued ox"


def test_status_lists_each_field_once(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """The status table has one ``prompt`` row."""
    emulator, _ = manual_hub
    generation_id = enqueue_directly(emulator, "a queued ox")
    _, stdout, _ = run(["status", generation_id], capsys)
    assert stdout.count("a queued ox") == 1


def test_status_of_an_unknown_generation_exits_1(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """An id the hub does not know: exit 1 and a one-line error naming the 404."""
    status, _, stderr = run(["status", "no-such-generation"], capsys)
    assert status == 1
    assert "404" in stderr
    assert "Traceback" not in stderr


def test_cancel_cancels_an_active_generation(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """``cancel ID`` on a queued generation prints ``ID: cancelled`` and the hub agrees."""
    emulator, _ = manual_hub
    generation_id = enqueue_directly(emulator, "an ox to cancel")

    status, stdout, stderr = run(["cancel", generation_id], capsys)
    assert status == 0, stderr
    assert f"{generation_id}: cancelled" in stdout
    assert emulator.state.jobs[generation_id].status == "cancelled"


def test_models_lists_every_model(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """``models`` lists the catalogue: gpt-image-2 and the others, with their output type."""
    status, stdout, stderr = run(["models"], capsys)

    assert status == 0, stderr
    assert len(MODELS) > 1
    for model_id in MODELS:
        assert model_id in stdout
    assert "image" in stdout
    assert "video" in stdout


def test_models_shows_one_models_parameters_and_allowed_values(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """``models gpt-image-2`` shows each parameter with its default and allowed values."""
    status, stdout, stderr = run(["models", "gpt-image-2"], capsys)

    assert status == 0, stderr
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    assert "1920x1080" in rows["resolution"]
    for allowed in ("1024x768", "1024x1024", "1024x1536", "2560x1440", "3840x2160"):
        assert allowed in rows["resolution"]
    assert "auto, low, medium, high" in rows["quality"]
    assert "png, jpeg, webp" in rows["output_format"]
    assert "prompt" in rows  # the required one, starred
    assert "* required" in stdout


def test_models_of_an_unknown_model_exits_1(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown model id: exit 1 and the hub's 404, no traceback."""
    status, _, stderr = run(["models", "no-such-model"], capsys)
    assert status == 1
    assert "404" in stderr
    assert "Traceback" not in stderr


def test_any_command_runs_on_an_embedded_emulator(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--emulator`` works on commands that do not enqueue too, without a key."""
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    status, stdout, stderr = run(["models", "--emulator"], capsys)
    assert status == 0, stderr
    assert "gpt-image-2" in stdout


# --- keys ----------------------------------------------------------------------------------


def test_without_a_key_commands_say_how_to_set_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No OXEN_API_KEY (or a blank one) and no --emulator: exit 2, and the message says how to
    set the key and how to try offline, before any request."""
    for value in (None, "  "):
        if value is None:
            monkeypatch.delenv("OXEN_API_KEY", raising=False)
        else:
            monkeypatch.setenv("OXEN_API_KEY", value)
        status, stdout, stderr = run(["models", "--base-url", "http://127.0.0.1:9"], capsys)
        assert status == 2
        assert "export OXEN_API_KEY=" in stderr
        assert "--emulator" in stderr
        assert stdout == ""


def _assert_key_absent(text: str, key: str = SECRET_KEY) -> None:
    # rich may fold a long line anywhere: look at the text without its whitespace too.
    assert key not in text
    assert key not in "".join(text.split())


def test_verbose_logs_never_show_the_key_in_process(
    manual_hub: tuple[Emulator, ManualClock],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With -v, neither the output nor any log record (httpx, httpcore, the SDK) holds the
    key, on success and on the error paths."""
    emulator, clock = manual_hub
    caplog.set_level("DEBUG")
    generation_id = enqueue_directly(emulator, "an ox")
    with ticking(clock):
        outputs = [
            run(["models", "-v"], capsys),
            run(["generate", "an ox", "-v", "--out", str(tmp_path)], capsys),
            run(["status", generation_id, "-v", "--json"], capsys),
            run(["cancel", generation_id, "-v"], capsys),
            run(["status", "no-such-generation", "-v"], capsys),
        ]
    statuses = [status for status, _, _ in outputs]
    # cancel exits 1 when the job had already finished (the clock is ticking): either is fine.
    assert statuses[:3] == [0, 0, 0]
    assert statuses[3] in (0, 1)
    assert statuses[4] == 1
    assert any("HTTP Request" in record.getMessage() for record in caplog.records)
    for _, stdout, stderr in outputs:
        _assert_key_absent(stdout + stderr)
    _assert_key_absent(caplog.text)


def test_verbose_logs_never_show_the_key_in_a_real_process(
    oxen_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script's own -v handler (debug logs on stderr) never prints the key."""
    monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
    status, stdout, stderr = finish(spawn("generate", "an ox", "-v", "--out", str(tmp_path)))

    assert status == 0, stderr
    assert "DEBUG" in stderr  # the debug logs are there...
    _assert_key_absent(stdout + stderr)  # ...and the key is not


def test_a_rejected_key_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub that refuses the key: exit 1 with the 401, and the key is not in the message."""
    with Emulator(config=EmulatorConfig(api_key="the-only-good-key")) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        status, stdout, stderr = run(["models", "-v"], capsys)

    assert status == 1
    assert "401" in stderr
    _assert_key_absent(stdout + stderr)


# --- the emulator command ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@posix_only
def test_emulator_command_serves_until_ctrl_c_then_exits_cleanly() -> None:
    """``oxen-queue emulator --port P --api-key K`` answers the models endpoint with that key
    (and refuses another), never prints the key, and exits 0 soon after SIGINT."""
    port = _free_port()
    key = "emulator-command-key-4d1e"
    process = spawn("emulator", "--port", str(port), "--api-key", key, "--time-scale", "0.01")
    url = f"http://127.0.0.1:{port}/api/ai/models"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert process.poll() is None, finish(process)
            try:
                response = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the emulator never answered"
                time.sleep(0.05)
        assert response.status_code == 200
        assert "gpt-image-2" in response.text
        wrong = httpx.get(url, headers={"Authorization": "Bearer another-key"})
        assert wrong.status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        status, stdout, stderr = finish(process, timeout=5.0)

    assert status == 0, stderr
    assert f"127.0.0.1:{port}" in stdout + stderr
    assert "Traceback" not in stderr
    assert key not in stdout + stderr
