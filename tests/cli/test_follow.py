"""Following generations without holding a terminal: ``submit`` prints ids, ``wait`` reports
each as it finishes, ``download`` saves finished ones, ``status`` and ``cancel`` take several
ids; and piped output arrives one line per finished request, as each finishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oxen_queue.testing import Emulator, ManualClock

from .support import (
    SECRET_KEY,
    LineReader,
    assert_image,
    enqueue_directly,
    run,
    spawn,
    ticking,
    wait_until,
    write_prompts,
)

# --- submit -----------------------------------------------------------------------------------


def test_submit_prints_one_id_per_line_without_waiting(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """``submit -n 3`` enqueues one request of three and prints exactly their ids, one per
    line, while they are still queued (the clock never moves): it does not wait, and sends
    nothing but the enqueue."""
    emulator, _ = manual_hub
    status, stdout, stderr = run(["submit", "an ox", "-n", "3", "--resolution", "1024x768"], capsys)

    assert status == 0, stderr
    ids = stdout.splitlines()
    assert len(ids) == 3
    assert set(ids) == set(emulator.state.jobs)
    assert all(job.status == "queued" for job in emulator.state.jobs.values())
    assert all(job.params["resolution"] == "1024x768" for job in emulator.state.jobs.values())
    assert emulator.stats()["requests"] == {"POST /api/ai/queue": 1}  # the enqueue, only


def test_submit_rejects_invalid_parameters_before_enqueueing(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad resolution is bad usage: exit 2, nothing printed on stdout, nothing enqueued."""
    emulator, _ = manual_hub
    status, stdout, stderr = run(["submit", "an ox", "--resolution", "1x1"], capsys)
    assert status == 2
    assert stdout == ""
    assert "resolution" in stderr
    assert emulator.stats()["jobs_created"] == 0


# --- wait ---------------------------------------------------------------------------------------


@pytest.mark.oxen_emulator(failure_rate=0.5, seed=3)
def test_wait_prints_one_line_per_generation_and_exits_1_if_one_failed(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait ID...`` prints ``ID succeeded URL`` or ``ID failed: message`` for each id;
    exit 1 when one of them failed, 0 when all succeeded."""
    monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)  # the user who enqueued them
    ids = [enqueue_directly(oxen_emulator, f"ox {n}") for n in range(6)]
    status, stdout, stderr = run(["wait", *ids], capsys)

    jobs = oxen_emulator.state.jobs
    failed = {i for i in ids if jobs[i].status == "failed"}
    assert failed
    assert failed != set(ids)
    assert status == 1, stderr
    lines = {line.split()[0]: line for line in stdout.splitlines()}
    assert set(lines) == set(ids)
    for generation_id, line in lines.items():
        if generation_id in failed:
            assert line == f"{generation_id} failed: Insufficient credits"
        else:
            assert line.startswith(f"{generation_id} succeeded http://")

    succeeded = sorted(set(ids) - failed)
    status, stdout, _ = run(["wait", *succeeded], capsys)
    assert status == 0
    assert len(stdout.splitlines()) == len(succeeded)


def test_wait_for_an_unknown_id_exits_2(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id the hub does not know is a refused request: its line says 404, exit 2, and the
    other ids are still reported."""
    monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
    known = enqueue_directly(oxen_emulator, "an ox")
    status, stdout, _ = run(["wait", "no-such-generation", known], capsys)

    assert status == 2
    lines = {line.split()[0]: line for line in stdout.splitlines()}
    assert "404" in lines["no-such-generation"]
    assert lines[known].startswith(f"{known} succeeded")


@pytest.mark.slow
def test_wait_prints_each_line_as_its_generation_finishes(
    fixed_hub: tuple[Emulator, ManualClock],
) -> None:
    """Piped, ``wait A B`` prints A's line while B is still running: lines arrive as
    generations finish, not at the end."""
    emulator, clock = fixed_hub
    first = enqueue_directly(emulator, "an early ox")
    clock.advance(1.0)
    second = enqueue_directly(emulator, "a late ox")
    process = spawn("wait", first, second)
    with LineReader(process) as lines:
        _finish_only(emulator, clock, first)
        assert lines.next().startswith(f"{first} succeeded")
        assert process.poll() is None  # still waiting for the second
        assert emulator.state.jobs[second].status == "processing"
        with ticking(clock):
            assert lines.next().startswith(f"{second} succeeded")
        status, rest, stderr = lines.finish()
    assert status == 0, stderr
    assert rest == ""


def _finish_only(emulator: Emulator, clock: ManualClock, generation_id: str) -> None:
    """Move the clock in small steps until ``generation_id`` has succeeded."""
    job = emulator.state.jobs[generation_id]
    for _ in range(10_000):
        if job.status == "succeeded":
            return
        clock.advance(0.01)
    pytest.fail(f"{generation_id} never finished")


# --- download -----------------------------------------------------------------------------------


def test_download_saves_finished_results_and_reports_the_rest(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``download A B C --out DIR``: a finished A is saved as DIR/A.png (a real image); a
    queued B has no result yet (exit 1); an unknown C is refused (exit 2 wins)."""
    emulator, clock = manual_hub
    done = enqueue_directly(emulator, "a done ox")
    with ticking(clock):
        wait_until(lambda: emulator.state.jobs[done].status == "succeeded")
    queued = enqueue_directly(emulator, "a queued ox")
    out = tmp_path / "files"

    status, stdout, _ = run(["download", done, "--out", str(out)], capsys)
    assert status == 0
    assert stdout == f"{done} saved {out / (done + '.png')}\n"
    assert_image(out / f"{done}.png", resolution="1920x1080", output_format="png")

    status, stdout, _ = run(["download", queued, "--out", str(out)], capsys)
    assert status == 1
    assert "queued: no result yet" in stdout

    status, stdout, _ = run(["download", done, queued, "nope", "--out", str(out)], capsys)
    assert status == 2
    assert len(stdout.splitlines()) == 3
    assert "404" in stdout.splitlines()[2]


# --- status and cancel with several ids ---------------------------------------------------------


def test_status_of_several_ids_prints_one_json_row_per_line(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """``status A B --json`` prints one JSON row per line, in the order given; the table form
    shows both ids."""
    emulator, _ = manual_hub
    ids = [enqueue_directly(emulator, "ox a"), enqueue_directly(emulator, "ox b")]

    status, stdout, stderr = run(["status", *ids, "--json"], capsys)
    assert status == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [row["generation_id"] for row in rows] == ids
    assert [row["prompt"] for row in rows] == ["ox a", "ox b"]

    status, stdout, _ = run(["status", *ids], capsys)
    assert status == 0
    assert all(generation_id in stdout for generation_id in ids)


def test_status_reports_an_unknown_id_and_still_shows_the_others(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """``status A nope``: A's row on stdout, the 404 on stderr, exit 2."""
    emulator, _ = manual_hub
    known = enqueue_directly(emulator, "ox a")
    status, stdout, stderr = run(["status", known, "nope", "--json"], capsys)
    assert status == 2
    assert json.loads(stdout)["generation_id"] == known
    assert "404" in stderr


def test_cancel_of_several_ids_cancels_each(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """``cancel A B`` cancels both and says so for each."""
    emulator, _ = manual_hub
    ids = [enqueue_directly(emulator, "ox a"), enqueue_directly(emulator, "ox b")]
    status, stdout, stderr = run(["cancel", *ids], capsys)
    assert status == 0, stderr
    for generation_id in ids:
        assert f"{generation_id}: cancelled" in stdout
        assert emulator.state.jobs[generation_id].status == "cancelled"


# --- piped output, as it happens ----------------------------------------------------------------


@pytest.mark.slow
def test_piped_batch_prints_each_finished_request_as_it_finishes(
    fixed_hub: tuple[Emulator, ManualClock], tmp_path: Path
) -> None:
    """Piped, ``batch`` prints one plain line per finished request the moment it is saved,
    successes included, before the run ends; then the summary."""
    emulator, clock = fixed_hub
    prompts = write_prompts(tmp_path, "the first ox", "the second ox")
    out = tmp_path / "out"
    process = spawn("batch", str(prompts), "--out", str(out), "--concurrency", "1")
    with LineReader(process) as lines:
        assert lines.next() == f"oxen-queue batch · gpt-image-2 · 2 prompts → {out}/"
        wait_until(lambda: emulator.stats()["jobs_created"] == 1, process)
        (first,) = emulator.state.jobs
        _finish_only(emulator, clock, first)

        line = lines.next()
        assert line.startswith("[1/2] 'the first ox' saved ")
        assert line.endswith(f"{first}.png")
        assert process.poll() is None  # the second request has not finished
        with ticking(clock):
            assert lines.next().startswith("[2/2] 'the second ox' saved ")
        status, stdout, stderr = lines.finish()
    assert status == 0, stderr
    assert "Summary" in stdout
    assert "2 of 2 saved" in stdout


def test_piped_lines_print_prompts_and_paths_as_they_are(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Square brackets in a prompt or a path are text, not rich markup: they are printed
    whole in the per-request lines of ``batch`` and ``generate``."""
    prompts = write_prompts(tmp_path, "an ox [bold]in brackets[/bold]")
    out = tmp_path / "[out]"
    status, stdout, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)
    assert status == 0, stderr
    assert "[1/1] 'an ox [bold]in brackets[/bold]' saved " in stdout

    status, stdout, stderr = run(["generate", "an ox", "--out", str(out / "[gen]")], capsys)
    assert status == 0, stderr
    (file,) = (out / "[gen]").iterdir()
    assert f"saved {file}" in stdout
