"""The ``oxen-queue`` commands other than ``batch``, driven for real against the emulator:
``demo``, ``generate``, ``status``, ``cancel``, ``models``, ``emulator``, and what they never
print (the key)."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock
from oxen_queue.testing._catalog import MODELS

from .support import (
    DEFAULTS,
    EXAMPLE_PROMPTS,
    FAST,
    SECRET_KEY,
    WAIT,
    assert_image,
    enqueue_directly,
    expected_params,
    finish,
    latest_by_line,
    posix_only,
    run,
    spawn,
    ticking,
)

# --- demo ----------------------------------------------------------------------------------


@pytest.mark.slow  # the shared emulator: a process of its own
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
    ledger = {"ledger.db", "ledger.db-wal", "ledger.db-shm"}  # the enqueue ledger, SQLite's files
    names = {path.name for path in out.iterdir()} - ledger
    dataset = {"manifest.jsonl", "metadata.jsonl", "not_generated.jsonl"}
    assert names - dataset == {Path(entry["file"]).name for entry in latest.values()}
    assert dataset <= names
    assert "ledger.db" in {path.name for path in out.iterdir()}
    assert f"Summary: {len(expected)} requests: {len(expected)} succeeded" in stdout
    assert f"{len(expected)} of {len(expected)} saved in {out}/" in stdout
    assert "shared emulator at http://127.0.0.1:" in stderr


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


@pytest.mark.slow  # the shared emulator: a process of its own
def test_generate_with_an_embedded_emulator_needs_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--emulator`` runs without OXEN_API_KEY and says where its emulator listens."""
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    status, stdout, stderr = run(
        ["generate", "an ox", "--emulator", *FAST, "--out", str(tmp_path)], capsys
    )

    assert status == 0, stderr
    assert "shared emulator at" in stderr
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


def test_status_of_an_unknown_generation_exits_2(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """An id the hub does not know is a refused request: exit 2 and a one-line error naming
    the 404."""
    status, _, stderr = run(["status", "no-such-generation"], capsys)
    assert status == 2
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


def test_models_of_an_unknown_model_exits_2(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown model id is a refused request: exit 2 and the hub's 404, no traceback."""
    status, _, stderr = run(["models", "no-such-model"], capsys)
    assert status == 2
    assert "404" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow  # the shared emulator: a process of its own
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
    assert statuses[4] == 2
    assert any("HTTP Request" in record.getMessage() for record in caplog.records)
    for _, stdout, stderr in outputs:
        _assert_key_absent(stdout + stderr)
    _assert_key_absent(caplog.text)


@pytest.mark.slow
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
    """A hub that refuses the key: exit 2 with the 401, and the key is not in the message."""
    with Emulator(config=EmulatorConfig(api_key="the-only-good-key")) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        status, stdout, stderr = run(["models", "-v"], capsys)

    assert status == 2
    assert "401" in stderr
    _assert_key_absent(stdout + stderr)


# --- the emulator command ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
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
                time.sleep(0.05)  # polling: nothing tells when another process listens
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
