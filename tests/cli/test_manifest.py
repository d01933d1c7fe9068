"""Prompts files and the batch manifest of the console script (``oxen_queue._cli._manifest``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oxen_queue._cli._manifest import Manifest, PromptLine, PromptsFileError, read_prompts


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


def test_manifest_appends_one_whole_line_per_event_and_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each event is one ``os.write`` of one complete JSON line, followed by ``os.fsync``."""
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
    manifest = Manifest(tmp_path / "out" / "manifest.jsonl")
    line = PromptLine(1, {"prompt": "an ox"})
    manifest.append(line, generation_id="g-1", status="queued")
    manifest.append(line, generation_id="g-1", status="succeeded", file="out/g-1.png")
    manifest.close()

    assert [kind for kind, _ in calls] == ["write", "fsync", "write", "fsync"]
    for _, data in calls[::2]:
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
