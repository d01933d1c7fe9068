"""``oxen-queue batch``, driven for real against the emulator: prompts files, the manifest,
and resuming an interrupted batch without enqueueing anything twice.

Interrupted-batch tests use a :class:`ManualClock`: nothing finishes until a test moves time,
so what the first run enqueued is known exactly.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from oxen_queue import BatchItem
from oxen_queue._cli._manifest import Manifest
from oxen_queue._cli._run import _save, into
from oxen_queue.testing import Emulator, ManualClock

from ..fakes import FakeAPI
from ..helpers import fake_client
from .support import (
    assert_image,
    finish,
    latest_by_line,
    manifest_entries,
    posix_only,
    run,
    spawn,
    ticking,
    wait_for_queued,
    write_prompts,
)

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


def test_batch_manifest_records_queued_then_finished_and_ends_compacted(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each request gets a ``queued`` line with its generation id, then a ``succeeded`` line
    with the same id and its file; when the run ends, the manifest is compacted to the
    latest line of each request, which carries prompt, id, status, file and cost."""
    prompts = write_prompts(tmp_path, "ox one", "ox two")
    out = tmp_path / "out"
    before: list[dict[str, Any]] = []
    compact = Manifest.compact

    def observed(manifest: Manifest, visit: Any = None) -> None:
        before.extend(manifest_entries(out))
        compact(manifest, visit)

    monkeypatch.setattr(Manifest, "compact", observed)
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)

    assert status == 0, stderr
    assert len(before) == 4
    for prompt in ("ox one", "ox two"):
        queued, succeeded = (e for e in before if e["prompt"] == prompt)
        assert queued["status"] == "queued"
        assert succeeded["status"] == "succeeded"
        assert queued["generation_id"] == succeeded["generation_id"]
    entries = manifest_entries(out)
    assert len(entries) == 2
    for entry in entries:
        assert entry["generation_id"] in oxen_emulator.state.jobs
        assert entry["status"] == "succeeded"
        assert Path(entry["file"]).is_file()
        assert entry["cost"] == "0.28"
        assert entry.get("error") is None


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


@pytest.mark.slow
@posix_only
def test_batch_interrupted_by_ctrl_c_resumes_without_enqueueing_twice(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT during a batch: exit 130 with one line that hints to rerun, no traceback, the ids
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
    assert len(stderr.strip().splitlines()) == 1  # one line says what became of the work
    assert stderr.startswith("interrupted: 2 generations left running upstream.")
    assert "same --out" in stderr
    assert "Traceback" not in stderr
    assert emulator.stats()["jobs_created"] == 2
    # Interrupting the CLI must not cancel the work it paid for: the jobs are still queued.
    assert all(job.status == "queued" for job in emulator.state.jobs.values())

    _resume_and_finish(emulator, clock, prompts, out, capsys, reattached=2)


@pytest.mark.slow
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


# --- where results are saved ---------------------------------------------------------------


@pytest.mark.anyio
async def test_results_go_into_out_as_a_directory_one_file_per_generation(
    tmp_path: Path,
) -> None:
    """The CLI saves into ``--out`` as a directory, said so (not left to ``is_dir()``): with
    the directory gone by the time results land, two generations still make two files in
    it, not one file named ``out`` written twice."""
    api = FakeAPI()
    png = b"\x89PNG\r\n\x1a\n" + bytes(256)

    def files(request: httpx.Request) -> httpx.Response | None:
        if request.url.host != "files.oxen.test":
            return None
        return httpx.Response(200, content=png, headers={"content-type": "image/png"})

    api.before.append(files)
    out = tmp_path / "gone"
    async with fake_client(api) as client:
        generations = await client.enqueue_many("gpt-image-2", 2, prompt="ox")
        items = [BatchItem(params={}, record=await generation) for generation in generations]
        paths = [await _save(client, item, out) for item in items]
    assert paths == [out / f"{generation.id}.png" for generation in generations]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{g.id}.png" for g in generations)
    assert into(out).endswith(os.sep)
