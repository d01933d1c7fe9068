"""Generation ids on the command line that could not be a path segment of the API's URLs
(issue 14, "ids become paths"): one line naming the id on stderr, exit status 2 (bad usage),
no traceback, and nothing sent, not even for the good ids given with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from oxen_queue.testing import Emulator, ManualClock

from .support import enqueue_directly, finish, run, spawn


def sent(emulator: Emulator) -> int:
    return sum(emulator.stats()["requests"].values())


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["cancel", ".."], "'..'"),
        (["cancel", "%2e%2e"], "'%2e%2e'"),
        (["cancel", "."], "'.'"),
        (["status", "a/b"], "'a/b'"),
        (["status", "--json", "x?y"], "'x?y'"),
        (["wait", "a\nb"], "'a\\nb'"),
        (["wait", "a\x00b"], "'a\\x00b'"),
        (["download", "x#y"], "'x#y'"),
        (["cancel", "a\r\nb"], "'a\\r\\nb'"),
    ],
)
def test_an_implausible_id_is_refused_in_one_line_with_status_2_and_nothing_sent(
    manual_hub: tuple[Emulator, ManualClock],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    shown: str,
) -> None:
    emulator, _ = manual_hub
    if argv[0] == "download":
        argv = [*argv, "--out", str(tmp_path / "out")]
    status, stdout, stderr = run(argv, capsys)
    assert status == 2
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr  # one line
    assert "generation_id" in stderr
    assert shown in stderr
    assert "Traceback" not in stderr
    assert sent(emulator) == 0
    assert not (tmp_path / "out").exists()  # download refused before making its directory


@pytest.mark.parametrize("command", ["cancel", "status", "wait", "download"])
def test_one_bad_id_among_good_ones_stops_the_command_before_anything_is_sent(
    manual_hub: tuple[Emulator, ManualClock],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    emulator, _ = manual_hub
    good = enqueue_directly(emulator, "an ox that stays queued")
    before = sent(emulator)
    extra = ["--out", str(tmp_path)] if command == "download" else []
    status, _, stderr = run([command, good, "..", *extra], capsys)
    assert status == 2
    assert "'..'" in stderr
    assert sent(emulator) == before
    assert emulator.state.jobs[good].status == "queued"  # not cancelled


@pytest.mark.slow
def test_a_real_process_refuses_a_dot_segment_id_with_one_line_and_status_2(
    manual_hub: tuple[Emulator, ManualClock],
) -> None:
    emulator, _ = manual_hub
    status, stdout, stderr = finish(spawn("cancel", ".."))
    assert status == 2
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert "generation_id cannot be '..' (a dot segment of a path)" in stderr
    assert "Traceback" not in stderr
    assert sent(emulator) == 0
