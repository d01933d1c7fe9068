"""``oxen-queue batch --dry-run`` and ``--max-spend``, against the emulator: what a batch
would cost before anything is sent, and a budget that stops a batch where a later run can
pick it up."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import pytest

from oxen_queue.testing import Emulator

from .support import finish, latest_by_line, run, spawn, write_prompts

KLING: Final = "kling-video-v2-6-pro-text-to-video"
MIXED: Final = (
    "An ox at sunset",
    '{"prompt": "a square ox", "resolution": "1024x1024", "quality": "low"}',
    '{"prompt": "a 4K ox", "resolution": "3840x2160"}',
    f'{{"prompt": "a river", "model": "{KLING}", "duration": 10, "generate_audio": true}}',
)


def requests(emulator: Emulator) -> dict[str, int]:
    return dict(emulator.stats()["requests"])


def dry_rows(stdout: str) -> dict[int, dict[str, Any]]:
    """The per-request detail of ``--dry-run --json``, by line."""
    rows = [json.loads(line) for line in stdout.splitlines()]
    return {row["line"]: row for row in rows}


def summary_rows(stdout: str) -> list[list[str]]:
    """The cells of the dry run's summary table, header row apart."""
    return [re.split(r"\s*│\s*", row.strip()) for row in stdout.splitlines() if "│" in row]


def test_a_dry_run_prints_a_summary_per_parameter_set_and_the_total_and_sends_nothing(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_prompts(tmp_path, *MIXED, "Another ox")
    out = tmp_path / "out"
    status, stdout, stderr = run(["batch", str(prompts), "--out", str(out), "--dry-run"], capsys)
    assert status == 0, stdout + stderr
    # One row per model and parameter set: lines 1 and 5 at gpt-image-2's defaults (high,
    # 1920x1080); line 2 its own quality and size; line 3 the default quality (high) at 4K;
    # line 4 ten seconds of video with audio.
    assert summary_rows(stdout) == [
        ["gpt-image-2", "-", "2", "0.28", "0.56"],
        ["gpt-image-2", "quality=low resolution=1024x1024", "1", "0.02", "0.02"],
        ["gpt-image-2", "resolution=3840x2160", "1", "1.47", "1.47"],
        [KLING, "duration=10 generate_audio=true", "1", "1.40", "1.40"],
    ]
    assert "oxen-queue batch --dry-run · 5 requests to send" in stdout
    assert "estimated total: 3.45 for 5 requests" in stdout
    assert "dry run: nothing was sent" in stdout
    # One model fetch per model (its prices and schema), and nothing else: no enqueue, no
    # event stream, no file.
    assert requests(oxen_emulator) == {"GET /api/ai/models/{id}": 2}
    assert not out.exists()


def test_a_dry_run_in_json_gives_each_request_to_a_machine(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json``: one JSON object per request on stdout (its line, model, parameters,
    estimate, and whether the budget covers it); the summary on stderr."""
    prompts = write_prompts(tmp_path, *MIXED, '{"prompt": "bad size", "resolution": "999x999"}')
    argv = ["batch", str(prompts), "--dry-run", "--json", "--max-spend", "1.5"]
    status, stdout, stderr = run([*argv, "--out", str(tmp_path / "out")], capsys)
    assert status == 2, stderr  # a request with bad parameters: a run would have it refused
    rows = dry_rows(stdout)
    assert [rows[n]["estimate"] for n in (1, 2, 3, 4, 5)] == ["0.28", "0.02", "1.47", "1.40", None]
    assert [rows[n]["within_budget"] for n in (1, 2, 3, 4, 5)] == [True, True, False, False, False]
    assert rows[4]["model"] == KLING
    assert rows[2]["params"] == {
        "prompt": "a square ox",
        "resolution": "1024x1024",
        "quality": "low",
    }
    assert "resolution='999x999' is not allowed" in rows[5]["problem"]
    assert "estimated total: 3.17 for 4 requests; 1 request without an estimate" in stderr


def test_a_dry_run_says_where_a_budget_would_stop_and_what_has_no_price(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_prompts(
        tmp_path, *MIXED, '{"prompt": "bad size", "resolution": "999x999"}', "another ox"
    )
    status, stdout, _ = run(
        ["batch", str(prompts), "--dry-run", "--max-spend", "1.5", "--out", str(tmp_path)], capsys
    )
    assert status == 2  # a request with bad parameters: a run would have it refused
    assert (
        "--max-spend 1.5 covers 2 requests (0.30): #3 (line 3) would pass it, so the run stops "
        "there and 4 would be left unsent"
    ) in stdout
    assert ["gpt-image-2", "resolution=999x999", "1", "unknown", "0"] in summary_rows(stdout)
    assert "#5 (line 5): resolution='999x999' is not allowed for gpt-image-2" in stdout
    assert "estimated total: 3.45 for 5 requests; 1 request without an estimate" in stdout
    assert oxen_emulator.stats()["jobs_created"] == 0


@pytest.mark.slow
def test_a_dry_run_as_a_real_process(oxen_emulator: Emulator, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path, "ox one", "ox two")
    status, stdout, stderr = finish(spawn("batch", str(prompts), "--dry-run"))
    assert status == 0, stderr
    assert "estimated total: 0.56 for 2 requests" in stdout
    assert set(requests(oxen_emulator)) == {"GET /api/ai/models/{id}"}


def test_a_budget_stops_the_batch_and_a_later_run_sends_the_rest(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-spend 0.6 covers two 0.28 images: the third is refused before it is sent, the
    fourth never tried; neither is marked in the manifest, so the next run sends exactly
    those two."""
    prompts = write_prompts(tmp_path, "ox one", "ox two", "ox three", "ox four")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "1"]
    status, stdout, stderr = run([*argv, "--max-spend", "0.6"], capsys)

    assert status == 1, stdout + stderr
    assert oxen_emulator.stats()["jobs_created"] == 2
    assert "2 requests left unsent" in stdout
    assert "Run again with the same --out" in stdout
    assert "cost of 2 generations: estimated 0.56, charged 0.56" in stdout
    assert stdout.count("unsent") >= 3  # the message, and the two rows of the summary
    assert sorted(latest_by_line(out)) == [1, 2]

    status, stdout, stderr = run([*argv, "--dry-run"], capsys)
    assert status == 0, stderr
    assert "estimated total: 0.56 for 2 requests" in stdout
    assert "2 requests done or enqueued in an earlier run: not counted" in stdout

    status, stdout, stderr = run([*argv, "--max-spend", "1"], capsys)
    assert status == 0, stdout + stderr
    assert oxen_emulator.stats()["jobs_created"] == 4
    assert oxen_emulator.stats()["jobs_by_prompt"] == dict.fromkeys(
        ("ox one", "ox two", "ox three", "ox four"), 1
    )
    assert "cost of 4 generations: estimated 1.12, charged 1.12" in stdout
    assert all(e["status"] == "succeeded" for e in latest_by_line(out).values())


def test_a_budget_stops_in_file_order_whatever_the_concurrency(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the dry run says: the first request that does not fit stops the run, even if a
    cheaper one after it would fit (a later run sends them in order)."""
    prompts = write_prompts(tmp_path, *MIXED[:3], '{"prompt": "a bad one", "quality": "max"}')
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--max-spend", "1"]
    status, stdout, _ = run([*argv, "--dry-run"], capsys)
    assert "covers 2 requests (0.30): #3 (line 3) would pass it" in stdout
    status, stdout, stderr = run(argv, capsys)  # --concurrency 16
    assert status == 1, stderr
    assert oxen_emulator.stats()["jobs_by_prompt"] == {"An ox at sunset": 1, "a square ox": 1}
    assert "2 requests left unsent" in stdout
    assert sorted(latest_by_line(out)) == [1, 2]


def test_the_summary_shows_estimated_and_charged_cost_without_a_budget(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_prompts(tmp_path, *MIXED[:3])
    status, stdout, stderr = run(["batch", str(prompts), "--out", str(tmp_path / "o")], capsys)
    assert status == 0, stderr
    assert "cost of 3 generations: estimated 1.77, charged 1.77" in stdout
    # The charges come from the history (one page), not one read per generation.
    assert requests(oxen_emulator).get("GET /api/ai/generations/{generation_id}", 0) == 0
    assert requests(oxen_emulator)["GET /api/ai/generations"] == 1


@pytest.mark.parametrize(
    "amount", ["-1", "lots", "NaN", "Infinity", "1e1000000", "1e-1000000", "1_000", ""]
)
def test_a_bad_budget_is_a_usage_error(
    amount: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_prompts(tmp_path, "ox")
    status, _, stderr = run(["batch", str(prompts), f"--max-spend={amount}"], capsys)
    assert status == 2
    assert "--max-spend" in stderr and "amount from 0 to 10**12" in stderr
    assert "Traceback" not in stderr
