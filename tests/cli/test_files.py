"""The files the CLI reads and writes, run for real against the emulator: prompts files in any
encoding it accepts, ``--out`` that cannot be written, a disk that fills up or a file system
that fails mid-run. Each ends in one line and a documented exit status, never a traceback;
a rerun once the disk is mended completes, with no request sent twice."""

from __future__ import annotations

import codecs
import errno
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from oxen_queue import _download
from oxen_queue._cli._commands import COMMANDS
from oxen_queue.testing import Emulator, ManualClock

from .support import (
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

PROMPTS: Final = ("ox one", "ox two", "ox three", "ox four", "ox five")
RESUME_HINT: Final = "run the same command again with the same --out to resume"


def one_error_line(stderr: str) -> str:
    """The single line stderr holds, which must be an error (and no traceback)."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def assert_done_exactly_once(emulator: Emulator, out: Path, prompts: tuple[str, ...]) -> None:
    """Every prompt made one job, no more, and ended saved in the manifest."""
    assert emulator.stats()["jobs_by_prompt"] == dict.fromkeys(prompts, 1)
    latest = latest_by_line(out)
    assert sorted(entry["prompt"] for entry in latest.values()) == sorted(prompts)
    for entry in latest.values():
        assert entry["status"] == "succeeded"
        assert Path(entry["file"]).is_file()


# --- prompts files --------------------------------------------------------------------------


def test_batch_runs_a_utf16_prompts_file_with_unicode_line_breaks_inside_prompts(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A UTF-16 file with its BOM, CRLF line ends and a U+2028 and a NEL inside prompts: one
    request per line, each prompt whole; the summary shows the separators escaped."""
    prompts = tmp_path / "prompts.txt"
    text = "# header\r\nan ox\u2028in two parts\r\na \x85third ox\r\n"
    prompts.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    out = tmp_path / "out"
    status, stdout, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)

    assert status == 0, stderr
    assert oxen_emulator.stats()["jobs_by_prompt"] == {
        "an ox\u2028in two parts": 1,
        "a \x85third ox": 1,
    }
    assert "an ox\\u2028in two parts" in stdout
    assert "\u2028" not in stdout
    assert "\x85" not in stdout


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"an ox\n\xff\xfe broken\n", ":2: not UTF-8 text (byte 0xff)"),
        (b"an ox\nan \x00 ox\n", ":2: holds a NUL character"),
        ("an ox\n".encode("utf-16-le"), ":1: holds a NUL character"),
    ],
)
def test_batch_refuses_a_prompts_file_that_is_not_text_in_one_line(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: bytes,
    message: str,
) -> None:
    """Bytes that are no text, or a NUL: exit 2, one line naming the file and line, nothing
    sent, no manifest."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(data)
    out = tmp_path / "out"
    status, stdout, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)

    assert status == 2
    assert one_error_line(stderr).startswith(f"error: {prompts}{message}")
    assert oxen_emulator.stats()["jobs_created"] == 0
    assert not (out / "manifest.jsonl").exists()
    assert stdout == ""


# --- --out ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    # demo runs on the shared emulator, a process of its own: slow
    ["batch", pytest.param("demo", marks=pytest.mark.slow), "generate", "download"],
)
def test_an_out_that_is_an_existing_file_is_refused_before_anything_is_sent(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``--out`` naming a file: exit 2, one line saying so, nothing sent, the file intact."""
    prompts = write_prompts(tmp_path, "an ox")
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"mine")
    argv = {
        "batch": ["batch", str(prompts)],
        "demo": ["demo", "--prompts", str(prompts), "--time-scale", "0.02"],
        "generate": ["generate", "an ox"],
        "download": ["download", "3f2a0000-0000-4000-8000-000000000000"],
    }[command]
    status, stdout, stderr = run([*argv, "--out", str(taken)], capsys)

    assert status == 2
    error = [line for line in stderr.splitlines() if "shared emulator at" not in line]
    assert one_error_line("\n".join(error)) == f"error: --out {taken} is a file, not a directory"
    assert oxen_emulator.stats()["jobs_created"] == 0
    assert taken.read_bytes() == b"mine"
    assert stdout == ""


def test_an_out_that_cannot_be_created_or_written_is_refused(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A directory under a file (cannot be made), then a read-only file system (no file can
    be made in it; root ignores permission bits, so the file system's answer is faked):
    exit 2, one line each with the reason, nothing sent."""
    prompts = write_prompts(tmp_path, "an ox")
    (tmp_path / "file").write_text("x")
    under_a_file = tmp_path / "file" / "out"
    status, _, stderr = run(["batch", str(prompts), "--out", str(under_a_file)], capsys)
    assert status == 2
    line = one_error_line(stderr)
    assert line == f"error: --out {under_a_file}: cannot create it: Not a directory"

    def read_only(*args: Any, **kwargs: Any) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "out" / "probe"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "out"
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)
    assert status == 2
    line = one_error_line(stderr)
    assert line == f"error: --out {out}: cannot write in it: Read-only file system"
    assert oxen_emulator.stats()["jobs_created"] == 0


def test_a_manifest_that_is_a_directory_is_refused_in_one_line(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts, out = write_prompts(tmp_path, "an ox"), tmp_path / "out"
    (out / "manifest.jsonl").mkdir(parents=True)
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)
    assert status == 2
    line = one_error_line(stderr)
    assert line.endswith("manifest.jsonl is not a regular file: move it out of the way")
    assert oxen_emulator.stats()["jobs_created"] == 0


# --- a disk that fails mid-run, and the rerun that completes --------------------------------


def test_a_full_disk_on_a_manifest_append_stops_the_run_and_a_rerun_completes_exactly(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC on the third manifest line: exit 1, one line naming the manifest and the
    reason and saying how to resume. Space freed, the same command completes: every prompt
    made exactly one job (the ledger beside the manifest holds what it missed)."""
    prompts, out = write_prompts(tmp_path, *PROMPTS), tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "2", "--timeout", "1"]
    real_write = os.write
    appended = 0

    def filling(fd: int, data: bytes) -> int:
        nonlocal appended
        if bytes(data[:7]) == b'{"key":':
            appended += 1
            if appended >= 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", filling)
    status, _, stderr = run(argv, capsys)
    monkeypatch.setattr(os, "write", real_write)  # space freed

    assert status == 1
    line = one_error_line(stderr)
    manifest = out / "manifest.jsonl"
    assert line == (
        f"error: cannot write {manifest}: No space left on device; the run stopped: {RESUME_HINT}"
    )
    assert len(manifest_entries(out)) == 2

    status, stdout, stderr = run(argv, capsys)
    assert status == 0, stdout + stderr
    assert_done_exactly_once(oxen_emulator, out, PROMPTS)


class _FullDiskFile:
    """A result file being written on a disk that is full."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self._file.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Result files (opened "xb" by the download's spool) fail their writes with ENOSPC until
    the function returned is called (space freed)."""

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = open(file, mode, *args, **kwargs)  # noqa: SIM115 (closed through the wrapper)
        return _FullDiskFile(opened) if mode == "xb" else opened

    monkeypatch.setattr(_download, "open", opener, raising=False)
    return lambda: monkeypatch.delattr(_download, "open")


def test_a_full_disk_on_saving_a_result_stops_the_run_and_a_rerun_completes_exactly(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    full_disk: Callable[[], None],
) -> None:
    """ENOSPC writing a result file: exit 1, one line naming the generation, the directory
    and the reason; the generation is not recorded as failed. Space freed, the same command
    saves every result, each prompt having made exactly one job."""
    prompts, out = write_prompts(tmp_path, *PROMPTS), tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "2", "--timeout", "1"]
    status, _, stderr = run(argv, capsys)
    full_disk()  # space freed

    assert status == 1
    line = one_error_line(stderr)
    assert line.startswith("error: cannot save generation ")
    assert line.endswith(f" in {out}: No space left on device; the run stopped: {RESUME_HINT}")
    assert {entry["status"] for entry in manifest_entries(out)} <= {"queued"}
    assert not [path for path in out.iterdir() if path.suffix == ".png"]

    status, stdout, stderr = run(argv, capsys)
    assert status == 0, stdout + stderr
    assert_done_exactly_once(oxen_emulator, out, PROMPTS)


def test_generate_on_a_full_disk_says_which_generation_could_not_be_saved(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    full_disk: Callable[[], None],
) -> None:
    """``generate`` whose result cannot be written: its line says so in words (no errno, no
    temporary file name), exit 1, and the id is there to download it later."""
    status, stdout, stderr = run(["generate", "an ox", "--out", str(tmp_path)], capsys)

    assert status == 1, stderr
    (generation_id,) = oxen_emulator.state.jobs
    assert stdout == f"error {generation_id}: could not save it: No space left on device\n"
    assert "Traceback" not in stderr


_LIMITED: Final = (
    "import resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG\n"
    "limit = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "from oxen_queue._cli import main\n"
    "raise SystemExit(main())\n"
)


@pytest.mark.slow
@posix_only
def test_a_real_file_size_limit_stops_the_process_in_one_line_and_a_rerun_completes(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path
) -> None:
    """A real process whose files may not pass 50 kB (RLIMIT_FSIZE: the kernel refuses the
    write of an image or of the ledger's journal, as a full disk would): exit 1, the last line
    the error that stopped the run and how to resume, no traceback. Run again without the
    limit, every prompt is saved, each having made one job."""
    emulator, clock = manual_hub
    prompts, out = write_prompts(tmp_path, *PROMPTS[:3]), tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--timeout", "1"]
    with ticking(clock):
        process = spawn_limited(50_000, *argv)
        status, _, stderr = finish(process)

    # The library may first warn of what it could not write (the ledger is on the same
    # disk); the CLI's own answer is the last line.
    assert status == 1, stderr
    assert "Traceback" not in stderr
    *warnings, line = stderr.strip().splitlines()
    assert all(warning.startswith("warning: ") for warning in warnings), stderr
    assert line.startswith("error: ")
    assert line.endswith(f"; the run stopped: {RESUME_HINT}")

    with ticking(clock):
        status, stdout, stderr = finish(spawn(*argv))
    assert status == 0, stdout + stderr
    assert_done_exactly_once(emulator, out, PROMPTS[:3])


def spawn_limited(limit: int, *argv: str) -> Any:
    """The console script as a real process, its files limited to ``limit`` bytes."""
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-c", _LIMITED, str(limit), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- a manifest touched by hand or torn, resumed --------------------------------------------


def test_a_hand_edited_manifest_line_is_skipped_with_a_warning_and_the_request_reattached(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A number where a file name belongs, in a finished run's (compacted) manifest: the
    rerun warns of that line, reattaches the request by the id the line still names (no new
    job), and saves its file again."""
    prompts, out = write_prompts(tmp_path, "ox one", "ox two"), tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    manifest = out / "manifest.jsonl"
    raw = manifest.read_text(encoding="utf-8").splitlines()
    number, entry = next(
        (n, json.loads(text))
        for n, text in enumerate(raw, start=1)
        if json.loads(text)["status"] == "succeeded"
    )
    raw[number - 1] = json.dumps({**entry, "file": 3})
    manifest.write_text("\n".join(raw) + "\n", encoding="utf-8")

    status, stdout, stderr = run(argv, capsys)
    assert status == 0, stderr
    assert stderr.strip() == (
        f'warning: {manifest}:{number}: skipped: "file" must be a string or null, not an '
        "integer; its generation id is kept, to reattach"
    )
    assert "1 already settled, 1 reattached by id" in stdout
    assert_done_exactly_once(oxen_emulator, out, ("ox one", "ox two"))


@pytest.mark.slow
@posix_only
def test_a_batch_whose_only_manifest_lines_are_damaged_resumes_from_the_ledger(
    manual_hub: tuple[Emulator, ManualClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed with two requests enqueued, its manifest lines then damaged (one torn
    inside a character, one with an id no server makes): the manifest no longer shows them
    sent, but the ledger beside it does. The rerun warns of both lines, reattaches both
    jobs from the ledger, and enqueues only the other prompts, once each."""
    emulator, clock = manual_hub
    prompts = write_prompts(tmp_path, *(f"{p} \u2603" for p in PROMPTS))
    out = tmp_path / "out"
    process = spawn("batch", str(prompts), "--out", str(out), "--concurrency", "2")
    wait_for_queued(process, out, 2)
    process.kill()
    finish(process)
    assert emulator.stats()["jobs_created"] == 2
    manifest = out / "manifest.jsonl"
    first, second = manifest.read_bytes().splitlines()[:2]
    torn = first[: first.index("\u2603".encode()) + 1]
    wrong = json.dumps({**json.loads(second), "generation_id": "../../api/ai"}).encode()
    manifest.write_bytes(wrong + b"\n" + torn)

    with ticking(clock):
        status, stdout, stderr = run(
            ["batch", str(prompts), "--out", str(out), "--concurrency", "2"], capsys
        )
    assert status == 0, stdout + stderr
    warnings = stderr.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f'warning: {manifest}:1: skipped: "generation_id" is not')
    assert warnings[1].startswith(f"warning: {manifest}:2: dropped a torn last line: not UTF-8")
    assert_done_exactly_once(emulator, out, tuple(f"{p} \u2603" for p in PROMPTS))


# --- never a traceback ----------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_its_traceback_only_with_verbose(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (an error no code path expects): one line naming it, escaped like any text,
    exit 1; with -v, its traceback."""

    async def broken(context: Any) -> int:
        raise TypeError("a bug [/] \x1b[2J")

    monkeypatch.setitem(COMMANDS, "models", broken)
    status, _, stderr = run(["models"], capsys)
    assert status == 1
    assert one_error_line(stderr) == (
        "error: unexpected TypeError: a bug [/] \\x1b[2J (-v shows the traceback)"
    )

    status, _, stderr = run(["models", "-v"], capsys)
    assert status == 1
    assert "Traceback (most recent call last):" in stderr
    assert "TypeError: a bug [/] \\x1b[2J" in stderr
    assert "\x1b" not in stderr


def test_an_os_error_anywhere_is_one_line_naming_the_file(
    oxen_emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``OSError`` a command did not expect (EIO reading something): exit 1, one line with
    the file and the reason, no errno, no traceback."""

    async def failing(context: Any) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/data/somewhere")

    monkeypatch.setitem(COMMANDS, "models", failing)
    status, _, stderr = run(["models"], capsys)
    assert status == 1
    assert one_error_line(stderr) == "error: /data/somewhere: Input/output error"
