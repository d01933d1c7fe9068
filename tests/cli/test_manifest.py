"""Prompts files and the batch manifest of the console script (``oxen_queue._cli._manifest``)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Final
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue._cli._files import OutDirectoryError, WriteFailedError
from oxen_queue._cli._manifest import Manifest, parse_manifest, read_manifest
from oxen_queue._cli._prompts import PromptLine, PromptsFileError, read_prompts


def test_read_prompts_takes_plain_and_json_lines_and_skips_the_rest(tmp_path: Path) -> None:
    """Plain lines are prompts, JSON lines are parameters (``model`` apart); blank lines and
    ``#`` comments are skipped; line numbers count every line."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# header\n"
        "  an ox  \n"
        "\n"
        '{"prompt": "a square ox", "resolution": "1024x1024", "model": "gpt-image-2"}\n',
        encoding="utf-8",
    )
    assert read_prompts(prompts) == [
        PromptLine(2, {"prompt": "an ox"}),
        PromptLine(4, {"prompt": "a square ox", "resolution": "1024x1024"}, "gpt-image-2"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "an ox",', "not valid JSON"),
        ('{"prompt": 3}', 'a JSON line needs a string "prompt"'),
        ('{"prompt": "x", "model": ["a"]}', '"model" must be a string'),
    ],
)
def test_read_prompts_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    """A JSON line that is not a usable request is reported with its file and line number."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"an ox\n{line}\n", encoding="utf-8")
    with pytest.raises(PromptsFileError) as caught:
        read_prompts(prompts)
    assert str(caught.value).startswith(f"{prompts}:2: ")
    assert message in str(caught.value)


def test_prompt_line_key_changes_with_content_and_model() -> None:
    """A line keeps its key across runs; editing its parameters or model gives a new one."""
    line = PromptLine(1, {"prompt": "an ox"})
    assert line.key == PromptLine(1, {"prompt": "an ox"}).key
    assert line.key != PromptLine(1, {"prompt": "an ox", "quality": "low"}).key
    assert line.key != PromptLine(1, {"prompt": "an ox"}, "other-model").key


def test_manifest_writes_one_whole_line_per_event_and_fsyncs_them_as_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each event is one ``os.write`` of one complete JSON line, at once; one ``os.fsync``
    makes the group durable (here, at close)."""
    calls: list[tuple[str, bytes | None]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        calls.append(("write", bytes(data)))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        calls.append(("fsync", None))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    manifest = Manifest(tmp_path / "manifest.jsonl")
    line = PromptLine(1, {"prompt": "an ox"})
    manifest.append(line, generation_id="g-1", status="queued")
    manifest.append(line, generation_id="g-1", status="succeeded", file="out/g-1.png")
    manifest.close()

    assert [kind for kind, _ in calls] == ["write", "write", "fsync"]
    for _, data in calls[:2]:
        assert data is not None
        assert data.endswith(b"\n")
        assert data.count(b"\n") == 1
        entry = json.loads(data)
        assert entry["prompt"] == "an ox"
        assert entry["generation_id"] == "g-1"


def test_manifest_reads_back_the_latest_entry_of_each_request(tmp_path: Path) -> None:
    """Reopened, a manifest knows each request's latest event, with its fields."""
    path = tmp_path / "manifest.jsonl"
    first, second = PromptLine(1, {"prompt": "ox one"}), PromptLine(2, {"prompt": "ox two"})
    manifest = Manifest(path)
    manifest.append(first, generation_id="g-1", status="queued")
    manifest.append(second, generation_id="g-2", status="queued")
    manifest.append(first, generation_id="g-1", status="succeeded", file="g-1.png")
    manifest.close()

    latest = Manifest(path).latest
    assert latest[first.key]["status"] == "succeeded"
    assert latest[first.key]["file"] == "g-1.png"
    assert latest[second.key]["status"] == "queued"
    assert latest[second.key]["generation_id"] == "g-2"


def test_manifest_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A line cut short by a crash is skipped; every complete line before it is read."""
    path = tmp_path / "manifest.jsonl"
    line = PromptLine(1, {"prompt": "an ox"})
    manifest = Manifest(path)
    manifest.append(line, generation_id="g-1", status="queued")
    manifest.close()
    with path.open("a", encoding="utf-8") as file:
        file.write('{"key": "' + line.key + '", "status": "succ')

    reopened = Manifest(path)
    reopened.close()
    assert reopened.latest[line.key]["status"] == "queued"
    assert reopened.latest[line.key]["generation_id"] == "g-1"


def test_manifest_after_a_torn_line_keeps_the_next_event(tmp_path: Path) -> None:
    """The first event appended after a crash mid-line is read back by the next run."""
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"key": "1:0123456789ab", "sta', encoding="utf-8")
    line = PromptLine(2, {"prompt": "an ox"})
    manifest = Manifest(path)
    manifest.append(line, generation_id="g-2", status="queued")
    manifest.close()

    assert Manifest(path).latest[line.key]["generation_id"] == "g-2"


def test_manifest_skips_lines_that_are_not_entries(tmp_path: Path) -> None:
    """JSON lines without a string ``key`` (foreign or damaged) are ignored, not fatal."""
    path = tmp_path / "manifest.jsonl"
    path.write_text('[1, 2]\n{"key": 3}\n"text"\n\n', encoding="utf-8")
    manifest = Manifest(path)
    manifest.close()
    assert manifest.latest == {}


# --- reading a manifest people and crashes have touched -------------------------------------

IDS: Final = [f"3f2a{n:04d}-0000-4000-8000-000000000000" for n in range(4)]


def _valid_manifest(path: Path, events: list[tuple[int, str, str | None]]) -> dict[str, Any]:
    """Write a manifest of ``(prompt number, status, file)`` events; return what each
    request's latest entry must be."""
    manifest = Manifest(path)
    for number, status, file in events:
        line = PromptLine(number, {"prompt": f"ox \u2603 {number}"})
        fields = {"generation_id": IDS[number], "status": status}
        if file is not None:
            fields["file"] = file
        manifest.append(line, **fields)
    manifest.close()
    return {key: dict(entry) for key, entry in manifest.latest.items()}


def _wrong(entry: dict[str, Any], field: str, value: Any) -> bytes:
    return json.dumps({**entry, field: value}).encode() + b"\n"


events = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["queued", "succeeded", "failed"]),
        st.one_of(st.none(), st.just("out/x.png")),
    ),
    max_size=6,
)
_ENTRY: Final = {"key": "k#0", "line": 1, "prompt": "ox", "status": "queued", "at": 1.0}
garbage_lines = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"not json at all",
            b"[1, 2]",
            b'"text"',
            b"\xff\xfe\x00",
            b'{"key": "k#0", "prompt": "ox \xe2\x98',  # torn inside a character
            b'{"key": "k#0", "status": "que',
            b'{"a":' * 5000,
            b'{"key": 3, "status": "queued"}',
            _wrong(_ENTRY, "status", ""),
            _wrong(_ENTRY, "status", ["queued"]),
            _wrong(_ENTRY, "file", 3),
            _wrong(_ENTRY, "file", ""),
            _wrong(_ENTRY, "generation_id", 12345),
            _wrong(_ENTRY, "generation_id", "../../api/ai"),
            _wrong(_ENTRY, "generation_id", True),
            _wrong(_ENTRY, "error", {"message": "x"}),
            _wrong(_ENTRY, "params", "resolution=1"),
            _wrong(_ENTRY, "line", "1"),
            _wrong(_ENTRY, "at", None),
        ]
    ),
)


@settings(max_examples=100)
@given(events, st.lists(garbage_lines, min_size=1, max_size=5), st.booleans())
def test_reading_a_manifest_never_fails_keeps_every_valid_entry_and_warns_of_the_rest(
    events: list[tuple[int, str, str | None]], garbage: list[bytes], torn: bool
) -> None:
    """A valid manifest with anything appended (torn lines, bytes that are no UTF-8, JSON of
    the wrong shape, fields of the wrong type, ids no server makes), even without a final
    newline: reading never raises, keeps each request's latest valid entry, and warns of
    every line it skipped, by number. Opened again, the next event still reads back."""
    # fsync is beside the point here, and costs a disk flush per event.
    with tempfile.TemporaryDirectory() as directory, mock.patch.object(os, "fsync"):
        path = Path(directory) / "manifest.jsonl"
        expected = _valid_manifest(path, events)
        valid_lines = len(events)
        tail = b"\n".join(garbage) + (b"" if torn else b"\n")
        with path.open("ab") as file:
            file.write(tail)

        read = parse_manifest(path.read_bytes(), name="m")
        assert read.latest == expected
        skipped = [chunk for chunk in tail.split(b"\n") if chunk.strip()]
        assert len(read.warnings) == len(skipped)
        for warning in read.warnings:
            number = int(warning.split(":")[1])
            assert number > valid_lines
            assert "\n" not in warning

        manifest = Manifest(path)  # ends a torn line, then appends
        line = PromptLine(9, {"prompt": "after the garbage"})
        manifest.append(line, generation_id=IDS[0], status="queued")
        manifest.close()
        assert Manifest(path).latest == {**expected, line.key: manifest.latest[line.key]}


def test_a_line_torn_inside_a_character_is_dropped_with_a_warning(tmp_path: Path) -> None:
    """A crash inside a multi-byte character leaves bytes that are no UTF-8: the torn last
    line is dropped with a warning saying so, the lines before it kept."""
    path = tmp_path / "manifest.jsonl"
    expected = _valid_manifest(path, [(0, "queued", None)])
    (key,) = expected
    raw = json.dumps({**expected[key], "status": "succeeded"}, ensure_ascii=False).encode()
    with path.open("ab") as file:
        file.write(raw[: raw.index("\u2603".encode()) + 2])  # 2 of the snowman's 3 bytes

    read = read_manifest(path)
    assert read.latest == expected
    assert len(read.warnings) == 1
    assert read.warnings[0].startswith(f"{path}:2: dropped a torn last line: not UTF-8 (byte 0xe2")


@pytest.mark.parametrize(
    ("field", "value", "reason", "kept"),
    [
        ("file", 3, '"file" must be a string or null, not an integer', True),
        ("generation_id", 42, '"generation_id" must be a string or null, not an integer', False),
        ("generation_id", "../../x", '"generation_id" is not an id a server makes', False),
        ("status", 7, '"status" is missing or not a string', True),
    ],
)
def test_a_hand_edited_line_of_the_wrong_shape_is_skipped_and_named(
    tmp_path: Path, field: str, value: Any, reason: str, kept: bool
) -> None:
    """A line edited by hand into the wrong shape is skipped with a warning naming its line
    and field. When it still names its request and a plausible generation id, that much is
    kept (the request counts as enqueued with that id: reattached, never sent again); else
    the request's earlier valid entry stands (here: enqueued, to reattach)."""
    path = tmp_path / "manifest.jsonl"
    expected = _valid_manifest(path, [(1, "queued", None)])
    (key,) = expected
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps({**expected[key], "status": "succeeded", field: value}) + "\n")

    read = read_manifest(path)
    assert len(read.warnings) == 1
    assert read.warnings[0].startswith(f"{path}:2: skipped: {reason}")
    if kept:
        assert read.latest == {key: {"key": key, "generation_id": IDS[1], "status": "queued"}}
        assert read.warnings[0].endswith("its generation id is kept, to reattach")
    else:
        assert read.latest == expected


def test_a_manifest_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """``manifest.jsonl`` as a directory (or a FIFO, which would block): refused in one line
    before anything is opened for writing."""
    (tmp_path / "manifest.jsonl").mkdir()
    with pytest.raises(OutDirectoryError, match="is not a regular file"):
        Manifest(tmp_path / "manifest.jsonl")


def test_a_failed_append_stops_the_manifest_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on append: ``WriteFailedError`` naming the file and the reason (no errno), the
    event not taken as recorded, and no further line written after the half-written one."""
    path = tmp_path / "manifest.jsonl"
    manifest = Manifest(path)
    line = PromptLine(1, {"prompt": "an ox"})
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if data.startswith(b'{"key"'):
            real_write(fd, data[:10])  # the disk filled up mid-line
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(WriteFailedError) as caught:
        manifest.append(line, generation_id=IDS[0], status="queued")
    message = str(caught.value)
    assert message.startswith(f"cannot write {path}: No space left on device; the run stopped")
    assert "Errno" not in message
    assert line.key not in manifest.latest
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(WriteFailedError):
        manifest.append(line, generation_id=IDS[0], status="queued")
    assert len(path.read_bytes()) == 10  # nothing after the half-written line


def test_a_short_write_is_finished_not_torn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``os.write`` may write part of what it was given: the rest is written, the line whole."""
    path = tmp_path / "manifest.jsonl"
    manifest = Manifest(path)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    line = PromptLine(1, {"prompt": "an ox"})
    manifest.append(line, generation_id=IDS[0], status="queued")
    manifest.close()
    monkeypatch.setattr(os, "write", real_write)
    assert Manifest(path).latest == {line.key: manifest.latest[line.key]}
