"""``oxen-queue batch`` at dataset scale (issue 17): prompts read as a stream in every format
(text, JSON Lines, CSV, standard input), the compact index, the dry run's summary, the
manifest's group commit and compaction, and the output loaded as a Hugging Face dataset."""

from __future__ import annotations

import codecs
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from oxen_queue._cli._dataset import DatasetWriter, MetadataFormat
from oxen_queue._cli._files import WriteFailedError
from oxen_queue._cli._index import RequestIndex, key_number
from oxen_queue._cli._manifest import Manifest
from oxen_queue._cli._prompts import (
    FORMATS,
    PromptLine,
    PromptsFileError,
    PromptsFormat,
    PromptsReader,
    _decoded_lines,
    decode_prompts,
)
from oxen_queue.testing import Emulator, EmulatorConfig, _media

from .support import (
    CLI,
    SECRET_KEY,
    finish,
    latest_by_line,
    manifest_entries,
    posix_only,
    run,
    spawn,
    write_prompts,
)

KLING: Final = "kling-video-v2-6-pro-text-to-video"


def dry_json(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def requests_of(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(row["model"], row["params"]) for row in rows]


# --- formats -------------------------------------------------------------------------------


@pytest.mark.slow
def test_text_jsonl_csv_and_stdin_give_the_same_requests(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same three requests as a text file, JSON Lines, CSV (a ``prompt`` column, a
    ``model`` column, parameter columns: empty cells left out, numbers and booleans typed)
    and on standard input: the dry run prices the same requests, in the same order."""
    text = write_prompts(
        tmp_path,
        "an ox",
        '{"prompt": "a square ox", "resolution": "1024x1024"}',
        f'{{"prompt": "a river, \\"calm\\"", "model": "{KLING}", "duration": 10, '
        '"generate_audio": true}',
    )
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(
        '{"prompt": "an ox"}\n\n{"prompt": "a square ox", "resolution": "1024x1024"}\n'
        f'{{"prompt": "a river, \\"calm\\"", "model": "{KLING}", "duration": 10, '
        '"generate_audio": true}\n',
        encoding="utf-8",
    )
    table = tmp_path / "prompts.csv"
    table.write_text(
        "prompt,model,resolution,duration,generate_audio\r\n"
        "an ox,,,,\r\n"
        "a square ox,,1024x1024,,\r\n"
        f'"a river, ""calm""",{KLING},,10,true\r\n',
        encoding="utf-8",
    )
    seen = []
    for path in (text, jsonl, table):
        status, stdout, stderr = run(["batch", str(path), "--dry-run", "--json"], capsys)
        assert status == 0, stderr
        seen.append(requests_of(dry_json(stdout)))
    piped = subprocess.run(
        [*CLI, "batch", "-", "--dry-run", "--json"],
        input=text.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    seen.append(requests_of(dry_json(piped.stdout.decode())))
    assert seen[0] == [
        ("gpt-image-2", {"prompt": "an ox"}),
        ("gpt-image-2", {"prompt": "a square ox", "resolution": "1024x1024"}),
        (KLING, {"prompt": 'a river, "calm"', "duration": 10, "generate_audio": True}),
    ]
    assert seen[1:] == [seen[0]] * 3


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.csv", "text,model\nan ox,\n", 'p.csv:1: the header has no "prompt" column'),
        ("p.csv", "prompt,,x\nan ox,,\n", "p.csv:1: the header has an empty or repeated"),
        ("p.csv", "prompt,quality\nan ox\nb,low\n", "p.csv:2: 1 cells where the header has 2"),
        ("p.csv", 'prompt\n"an ox\n', "p.csv:2: not CSV"),
        ("p.csv", "", "p.csv: empty: a CSV file needs a header row"),
        ("p.jsonl", '{"prompt": "ox"}\nan ox\n', "p.jsonl:2: not a JSON object"),
        ("p.jsonl", '{"prompt": "ox"}\n# a comment\n', "p.jsonl:2: not a JSON object"),
        ("p.csv", "prompt\nan \x00ox\n", "p.csv:2: holds a NUL character"),
    ],
)
def test_a_csv_or_json_lines_file_that_is_not_one_is_refused_naming_the_line(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    status, _, stderr = run(["batch", str(path), "--out", str(tmp_path / "out")], capsys)
    assert status == 2
    assert message in stderr
    assert "\n" not in stderr.strip()
    assert oxen_emulator.stats()["jobs_created"] == 0
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_the_input_format_option_overrides_the_file_name(tmp_path: Path) -> None:
    """``--input-format text`` reads a ``.jsonl`` file's plain lines and comments; a CSV cell
    that is a number stays one, text stays text (even digits with a leading zero)."""
    path = tmp_path / "mixed.jsonl"
    path.write_text('# mine\nan ox\n{"prompt": "a square ox"}\n', encoding="utf-8")
    lines = list(PromptsReader(str(path), prompts_format="text").requests())
    assert [line.prompt for line in lines] == ["an ox", "a square ox"]
    table = tmp_path / "cells.txt"
    table.write_text("prompt,seed,cfg_scale,tag,flag\nox,007,0.5,1024x1024,false\n")
    (line,) = PromptsReader(str(table), prompts_format="csv").requests()
    assert line.params == {
        "prompt": "ox",
        "seed": "007",
        "cfg_scale": 0.5,
        "tag": "1024x1024",
        "flag": False,
    }
    assert line.number == 2


@settings(max_examples=200)
@given(
    st.text(
        alphabet=st.sampled_from(["a", "\n", "\r", "{", "é", "\u2028", "#", " ", "\ufeff"]),
        max_size=40,
    ),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]),
    st.lists(st.integers(1, 7), min_size=1, max_size=20),
)
def test_a_file_read_in_blocks_of_any_size_reads_as_a_whole(
    text: str, encoding: str, cuts: list[int]
) -> None:
    """The stream decoder gets the file in blocks that may split a character, a byte order
    mark or a line anywhere: it reads the same lines as the whole file in one block."""
    data = text.encode(encoding)
    blocks = []
    at = 0
    for cut in cuts * (len(data) // max(sum(cuts), 1) + 1):
        if at >= len(data):
            break
        blocks.append(data[at : at + cut])
        at += cut
    blocks.append(data[at:])
    assert list(_decoded_lines(iter(blocks), "p")) == list(_decoded_lines(iter([data]), "p"))


def test_a_utf16_file_in_big_endian_names_the_line_of_its_bad_bytes() -> None:
    data = codecs.BOM_UTF16_BE + "an ox\nok\n".encode("utf-16-be") + b"\xd8\x00\x00a"
    with pytest.raises(PromptsFileError) as caught:
        decode_prompts(data, name="p")
    assert str(caught.value).startswith("p:3: not UTF-16 text")


# --- the index -----------------------------------------------------------------------------


def test_the_index_counts_identical_requests_and_keeps_the_manifests_word() -> None:
    index = RequestIndex()
    line = PromptLine(1, {"prompt": "an ox"})
    index.record(key_number(line.key), "succeeded", 120)
    index.record(key_number("hand-made key"), "queued", 0)
    assert [index.occurrence(line.digest) for _ in range(3)] == [0, 1, 2]
    assert index.state(line.digest) == ("succeeded", 120)
    assert index.state(line.digest | 1 << 64) == (None, -1)
    index.record(line.digest | 2 << 64, "flux-capacitating", 7)
    assert index.state(line.digest | 2 << 64) == ("other", 7)
    index.new_pass()
    assert index.occurrence(line.digest) == 0  # counted afresh
    assert index.offsets() == [0, 7, 120]
    assert key_number(f"{line.digest:016x}#5") == line.digest | 5 << 64


def test_the_index_holds_about_100_bytes_a_request() -> None:
    """What the index allocates for 200,000 distinct requests read from a prompts file
    (tracemalloc: Python's own count, the same on every machine)."""
    digests = [PromptLine(1, {"prompt": f"ox {n}"}).digest for n in range(2000)]
    digests = [(d * 2654435761 + n) % 2**64 for n in range(100) for d in digests]
    index = RequestIndex()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for digest in digests:
            index.occurrence(digest)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(index) == len(set(digests))
    assert held / len(index) < 130  # the dict's slot and the 64-bit int key


# --- the manifest: group commit, compaction ------------------------------------------------


def test_appends_are_written_at_once_and_synced_once_per_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event is in the file (the OS's) as soon as it is appended; ``sync`` makes every
    event since the last one durable with one fsync, and costs nothing when none is new."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "manifest.jsonl"
    manifest = Manifest(path)
    for number in range(1, 101):
        manifest.append(PromptLine(number, {"prompt": f"ox {number}"}), status="queued")
    assert len(path.read_bytes().splitlines()) == 100
    assert synced == []
    manifest.sync()
    manifest.sync()
    manifest.append(PromptLine(1, {"prompt": "ox 1"}), status="failed", error="no")
    manifest.close()
    assert len(synced) == 2


def test_compaction_keeps_each_requests_latest_entry_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    manifest = Manifest(path)
    lines = [PromptLine(n, {"prompt": f"ox {n}"}) for n in range(1, 4)]
    for line in lines:
        manifest.append(line, generation_id=f"g-{line.number}", status="queued")
    manifest.append(lines[0], generation_id="g-1", status="succeeded", file="x.png")
    manifest.close()
    with path.open("ab") as file:
        file.write(b"not json\n")
    manifest = Manifest(path)
    assert manifest.warnings == [f"{path}:5: skipped: not JSON (Expecting value)"]
    visited: list[str] = []
    manifest.compact(lambda entry: visited.append(entry["status"]))
    manifest.append(lines[1], generation_id="g-2", status="succeeded", file="y.png")
    manifest.close()
    entries = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    assert [(e["line"], e["status"]) for e in entries] == [
        (2, "queued"),
        (3, "queued"),
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    assert visited == ["queued", "queued", "succeeded"]
    assert not list(tmp_path.glob(".*compacting"))
    assert {entry["line"] for entry in Manifest(path).latest.values()} == {1, 2, 3}


def test_a_compaction_that_cannot_write_leaves_the_manifest_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "manifest.jsonl"
    manifest = Manifest(path)
    line = PromptLine(1, {"prompt": "an ox"})
    manifest.append(line, generation_id="g-1", status="queued")
    manifest.append(line, generation_id="g-1", status="succeeded", file="x.png")
    before = path.read_bytes()

    def full(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteFailedError, match=r"cannot compact .*No space left on device"):
        manifest.compact()
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*compacting"))


# --- runs: the counter, the dataset --------------------------------------------------------


def test_piped_progress_numbers_each_finished_request_once_in_order(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Many requests finishing at once, piped: one line each, numbered 1, 2, 3... (never a
    number twice, none skipped), out of the requests this run handles."""
    prompts = write_prompts(tmp_path, *(f"ox {n}" for n in range(30)))
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "12"]
    status, stdout, stderr = run(argv, capsys)
    assert status == 0, stderr
    numbers = [line.split("]")[0] for line in stdout.splitlines() if line.startswith("[")]
    assert numbers == [f"[{n}/30" for n in range(1, 31)]


def load_imagefolder(
    out: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """``datasets.load_dataset("imagefolder", data_dir=out)``, offline (nothing downloaded,
    the cache in ``cache``): its rows in the order of their lines."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent / "hf"))
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(out), split="train", cache_dir=str(cache)
    )
    return sorted(loaded, key=lambda row: row["line"])


def test_a_batchs_output_loads_with_datasets_as_an_imagefolder(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``datasets.load_dataset("imagefolder", data_dir=OUT)`` (offline) loads one row per
    saved image, with its prompt, model, parameters, id, status and cost; a line that failed
    and a line the budget left unsent are not rows, but are listed in not_generated.jsonl."""
    prompts = write_prompts(
        tmp_path,
        "an ox at dawn",
        '{"prompt": "a square ox", "resolution": "1024x1024", "quality": "low"}',
        '{"prompt": "an impossible ox", "resolution": "999x999"}',
        "an ox at dusk",
        "one ox too many",
    )
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "1", "--max-spend", "0.6"]
    status, stdout, stderr = run(argv, capsys)
    assert status == 1, stdout + stderr
    assert "dataset: " in stdout and "(3 rows)" in stdout and "(2 lines)" in stdout

    rows = load_imagefolder(out, tmp_path / "cache", monkeypatch)
    assert [row["prompt"] for row in rows] == ["an ox at dawn", "a square ox", "an ox at dusk"]
    assert {row["model"] for row in rows} == {"gpt-image-2"}
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert [row["cost"] for row in rows] == [0.28, 0.02, 0.28]
    assert rows[1]["resolution"] == "1024x1024" and rows[1]["quality"] == "low"
    assert rows[0]["resolution"] is None  # the model's default: not a parameter of the line
    for row in rows:
        assert isinstance(row["image"], Image.Image)
        assert row["generation_id"] in oxen_emulator.state.jobs
    assert rows[1]["image"].size == (1024, 1024)
    left = [json.loads(raw) for raw in (out / "not_generated.jsonl").read_text().splitlines()]
    assert [(row["line"], row["status"]) for row in left] == [(5, "unsent"), (3, "error")] or [
        (row["line"], row["status"]) for row in left
    ] == [(3, "error"), (5, "unsent")]
    assert {row["prompt"] for row in left} == {"an impossible ox", "one ox too many"}


def test_a_rerun_rewrites_the_dataset_with_what_it_added(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget-stopped run, then a run that sends the rest: the dataset has every line, the
    not-generated list is empty, and the manifest holds one entry per line."""
    prompts = write_prompts(tmp_path, "ox one", "ox two", "ox three")
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "1"]
    assert run([*argv, "--max-spend", "0.3"], capsys)[0] == 1
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 1
    assert len((out / "not_generated.jsonl").read_text().splitlines()) == 2
    assert run(argv, capsys)[0] == 0
    rows = [json.loads(raw) for raw in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(row["prompt"] for row in rows) == ["ox one", "ox three", "ox two"]
    assert (out / "not_generated.jsonl").read_text() == ""
    assert len(manifest_entries(out)) == 3
    assert {entry["status"] for entry in latest_by_line(out).values()} == {"succeeded"}


# A prompt that is data, not markup or terminal control, whatever it holds.
HOSTILE_PROMPT: Final = "[bold red]an ox[/] \x1b[31m\x07\t<b>&amp;</b> \u2028 🐂 \\N{OX}"


@pytest.mark.slow
def test_parquet_metadata_loads_with_datasets_and_a_switch_back_leaves_one_metadata_file(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--metadata parquet`` writes ``metadata.parquet`` instead of ``metadata.jsonl``:
    ``datasets.load_dataset("imagefolder")`` loads it, rows, prompts (markup and control
    characters as they were), parameters and images. Run again without it, the dataset is
    ``metadata.jsonl`` alone (``datasets`` refuses a folder with metadata of two kinds)."""
    prompts = write_prompts(
        tmp_path,
        "an ox at dawn",
        '{"prompt": "a square ox", "resolution": "1024x1024", "quality": "low"}',
        json.dumps({"prompt": HOSTILE_PROMPT}),
    )
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), "--concurrency", "1"]
    status, stdout, stderr = run([*argv, "--metadata", "parquet"], capsys)
    assert status == 0, stdout + stderr
    assert f"dataset: {out / 'metadata.parquet'} (3 rows)" in stdout
    assert sorted(path.name for path in out.glob("metadata.*")) == ["metadata.parquet"]
    import pyarrow.parquet

    schema = pyarrow.parquet.read_schema(out / "metadata.parquet")
    assert (str(schema.field("cost").type), str(schema.field("line").type)) == ("double", "int64")

    rows = load_imagefolder(out, tmp_path / "cache", monkeypatch)
    assert [row["prompt"] for row in rows] == ["an ox at dawn", "a square ox", HOSTILE_PROMPT]
    assert [row["cost"] for row in rows] == [0.28, 0.02, 0.28]
    assert [row["resolution"] for row in rows] == [None, "1024x1024", None]
    for row in rows:
        assert isinstance(row["image"], Image.Image)
        assert row["generation_id"] in oxen_emulator.state.jobs
    assert rows[1]["image"].size == (1024, 1024)
    assert (out / "not_generated.jsonl").read_text() == ""

    status, stdout, stderr = run(argv, capsys)
    assert status == 0, stdout + stderr
    assert sorted(path.name for path in out.glob("metadata.*")) == ["metadata.jsonl"]
    again = load_imagefolder(out, tmp_path / "cache-jsonl", monkeypatch)
    assert [row["prompt"] for row in again] == [row["prompt"] for row in rows]
    assert oxen_emulator.stats()["jobs_created"] == 3  # the rerun sent nothing


def test_a_parquet_conversion_pyarrow_refuses_keeps_the_rows_as_json_lines(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should pyarrow refuse the rows (none is known to make it), the run ends with one
    error line, never a traceback, and the rows stay in ``metadata.jsonl``, the only
    metadata file (an earlier run's ``metadata.parquet`` is gone: it is out of date)."""
    import pyarrow
    import pyarrow.parquet

    prompts, out = write_prompts(tmp_path, "an ox", "a cow"), tmp_path / "out"
    out.mkdir()
    (out / "metadata.parquet").write_bytes(b"an earlier run's")

    class Refusing(pyarrow.parquet.ParquetWriter):  # type: ignore[misc]
        def write_table(self, *_: object, **__: object) -> None:
            raise pyarrow.lib.ArrowInvalid("Could not convert 'ox' with type str: tried to convert")

    monkeypatch.setattr(pyarrow.parquet, "ParquetWriter", Refusing)
    argv = ["batch", str(prompts), "--out", str(out), "--metadata", "parquet"]
    status, stdout, stderr = run(argv, capsys)
    assert status == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: cannot convert the dataset's rows to metadata.parquet (Could not convert 'ox' "
        f"with type str: tried to convert); they are in {out / 'metadata.jsonl'} as JSON lines"
    )
    assert sorted(path.name for path in out.glob("metadata.*")) == ["metadata.jsonl"]
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(row["prompt"] for row in rows) == ["a cow", "an ox"]


def test_parquet_metadata_holds_the_json_lines_rows_typed_in_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rows as ``metadata.jsonl``, the union of their columns (a parameter a row
    lacks is null), typed by what each column holds: integers, numbers, booleans and
    strings as such; lists, objects, integers past 64 bits and mixed columns as JSON text;
    ``cost`` a double and ``line`` an integer even when no row has a value. Written a row
    group at a time."""
    import pyarrow.parquet

    monkeypatch.setattr("oxen_queue._cli._dataset.ROW_GROUP", 2)
    params: list[dict[str, Any]] = [
        {"prompt": HOSTILE_PROMPT, "steps": 10, "n": 1, "flag": True, "tags": ["a"], "mix": 1},
        {"prompt": "ox two", "steps": 2.5, "n": 2, "mix": "one", "none": None},
        {"prompt": "ox three", "big": 2**70},
        {"prompt": "ox four", "style": {"warm": True}},
        {"prompt": "ox five"},
    ]
    entries = []
    for number, request in enumerate(params, start=1):
        (tmp_path / f"{number}.png").write_bytes(b"png")
        entries.append(
            {
                "key": f"{number:016x}#0",
                "line": number,
                "model": "gpt-image-2",
                "params": request,
                "generation_id": f"id-{number}",
                "status": "succeeded",
                "file": str(tmp_path / f"{number}.png"),
            }
        )
    written: dict[str, bytes] = {}
    formats: tuple[MetadataFormat, ...] = ("jsonl", "parquet")
    for metadata in formats:
        writer = DatasetWriter(tmp_path, RequestIndex(), model="gpt-image-2", metadata=metadata)
        for entry in entries:
            writer.entry(entry)
        writer.commit()
        assert writer.rows == 5
        if metadata == "jsonl":
            written["jsonl"] = (tmp_path / "metadata.jsonl").read_bytes()

    assert not (tmp_path / "metadata.jsonl").exists()
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]
    parquet = pyarrow.parquet.ParquetFile(tmp_path / "metadata.parquet")
    assert parquet.metadata.num_row_groups == 3
    types = {field.name: str(field.type) for field in parquet.schema_arrow}
    assert types == {
        "file_name": "string",
        "prompt": "string",
        "model": "string",
        "steps": "double",
        "n": "int64",
        "flag": "bool",
        "tags": "string",
        "mix": "string",
        "generation_id": "string",
        "status": "string",
        "cost": "double",
        "line": "int64",
        "none": "null",
        "big": "string",
        "style": "string",
    }
    rows = parquet.read().to_pylist()
    as_json = [json.loads(line) for line in written["jsonl"].splitlines()]  # not at U+2028
    text = {"tags", "mix", "big", "style"}
    for row, line in zip(rows, as_json, strict=True):
        assert {column: value for column, value in row.items() if value is not None} == {
            column: json.dumps(value) if column in text else value
            for column, value in line.items()
            if value is not None
        }
    assert rows[0]["prompt"] == HOSTILE_PROMPT
    assert (rows[0]["tags"], rows[0]["mix"], rows[1]["mix"]) == ('["a"]', "1", '"one"')
    assert rows[2]["big"] == str(2**70) and rows[3]["style"] == '{"warm": true}'
    assert [row["steps"] for row in rows] == [10.0, 2.5, None, None, None]


# A parameter's values: what JSON carries, and more. The prompts readers refuse NaN,
# Infinity and 1e999 in a JSON line (a CSV cell keeps them as text), NUL and unpaired
# surrogates; non-finite numbers and NUL are given here all the same (a manifest edited by
# hand may hold them).
_DATASET_TEXT: Final = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    [HOSTILE_PROMPT, "", "\x00\x1f\x7f", '"[/]', "\u2028\u202e", "🐂x" * 30_000]
)
_DATASET_NUMBERS: Final = st.one_of(
    st.integers(),
    st.sampled_from([2**53 + 1, -(2**53) - 2, 2**63 - 1, -(2**63), 2**63, 10**4299]),
    st.floats(),
    st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan]),
)
_DATASET_SCALARS: Final = (st.none(), st.booleans(), _DATASET_NUMBERS, _DATASET_TEXT)
_DATASET_SCALAR: Final = st.one_of(_DATASET_SCALARS)
_ABSENT: Final = object()
"""A parameter a row leaves out."""
_DATASET_KINDS: Final = (
    st.just(_ABSENT),
    *_DATASET_SCALARS,
    st.lists(_DATASET_SCALAR, max_size=2)
    | st.dictionaries(_DATASET_TEXT, _DATASET_SCALAR | st.lists(_DATASET_SCALAR), max_size=2),
)
# Parameter names: the dataset's own columns (listed as param_NAME), names like that, others.
_DATASET_NAMES: Final = st.sampled_from(
    [
        *("file_name", "model", "generation_id", "status", "cost", "line", "error"),
        *("param_cost", "param_param_cost", "param_", "resolution", "", "a.b", "🐂"),
    ]
) | st.text(st.characters(codec="utf-8"), max_size=4)
_DatasetLine = tuple[str, str, str | None, dict[str, Any], int | None, str | None]


@st.composite
def _dataset_lines(draw: st.DrawFn) -> list[_DatasetLine]:
    """Lines as a run hands them to the dataset: a status, a prompt, a model of its own or
    none, parameters, its line and cost in the manifest. Each parameter name takes values
    of one to three kinds (or is left out), so that a column's kinds vary across rows."""
    names = draw(st.lists(_DATASET_NAMES, min_size=1, max_size=3, unique=True))
    kinds = st.lists(st.sampled_from(_DATASET_KINDS), min_size=1, max_size=3).map(st.one_of)
    params = st.fixed_dictionaries({name: draw(kinds) for name in names}).map(
        lambda drawn: {name: value for name, value in drawn.items() if value is not _ABSENT}
    )
    line = st.tuples(
        st.sampled_from(["succeeded", "succeeded", "succeeded", "failed", "queued", "unsent"]),
        _DATASET_TEXT,  # the prompt
        st.none() | st.sampled_from(["gpt-image-2", "", HOSTILE_PROMPT]),  # its model
        params,
        st.none() | st.integers(),  # the manifest's line
        st.none() | st.sampled_from(["0.28", "0", "-0", "1E+999", "1e-999", "NaN", "ox"]),
    )
    return draw(st.lists(line, min_size=1, max_size=6))


def _json_text(value: object) -> str:
    """A value exactly as JSON (1 and 1.0, True and 1, -0.0 and 0.0, NaN all told apart)."""
    return json.dumps(value, ensure_ascii=False)


def _dataset_row(params: dict[str, Any], model: str, **columns: Any) -> dict[str, Any]:
    """A row of ``metadata.jsonl`` as the module documents its columns: ``file_name``,
    ``prompt``, ``model``, each parameter (``param_NAME`` for a name of the dataset's own
    columns or one like it), then the others."""
    own = {"file_name", "model", "generation_id", "status", "cost", "line", "error"}
    row = {"file_name": columns.pop("file_name"), "prompt": params["prompt"], "model": model}
    for name, value in params.items():
        renamed = f"param_{name}" if name in own or name.startswith("param_") else name
        if name != "prompt":
            assert renamed not in row, f"{name!r} took another column"
            row[renamed] = value
    return {**row, **columns}


def _parquet_type(column: str, values: list[Any]) -> str:
    """A column's type in ``metadata.parquet`` as `_schema` documents it, from the values
    it holds (``json``: a string column of each value's JSON text)."""
    kinds = set()
    for value in values:
        if type(value) is int and abs(value) > 2**53:
            kinds.add("wide" if -(2**63) <= value < 2**63 else "json")
        elif type(value) in (bool, int, float, str):
            kinds.add(type(value).__name__)
        elif value is not None:
            kinds.add("json")  # a list or an object
    if not kinds:
        return {"cost": "double", "line": "int64"}.get(column, "null")
    if kinds <= {"int", "wide"}:
        return "int64"
    if kinds <= {"int", "float"}:
        return "double"
    typed = {frozenset({"bool"}): "bool", frozenset({"str"}): "string"}
    return typed.get(frozenset(kinds), "json")  # of several kinds, lists, objects


@settings(max_examples=100)
@given(_dataset_lines(), st.integers(1, 4), st.sampled_from([None, None, None, 1, 2]))
def test_parquet_metadata_holds_any_rows_as_the_json_lines_do(
    lines: list[_DatasetLine],
    group: int,
    fail_at: int | None,
) -> None:
    """Whatever the rows (parameters of any JSON value, of kinds varying within a column,
    named like the dataset's own columns), written as the run writes them (``entry`` for a
    manifest's entry, ``not_generated`` for a line left unsent): ``metadata.jsonl`` holds
    each row's columns as the module documents them, ``metadata.parquet`` the same rows in
    order, in row groups of `ROW_GROUP`, each value typed as `_schema` says or as its JSON
    text, and ``not_generated.jsonl`` the same bytes. No file is left over: not the other
    format's, not a temporary one, also when the disk fails (only ``WriteFailedError``)."""
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        out = Path(directory)
        (out / "ox.png").write_bytes(b"png")
        patch.setattr("oxen_queue._cli._dataset.ROW_GROUP", group)
        patch.setattr(os, "fsync", lambda fd: None)  # durability is not in question here
        index = RequestIndex()
        entries: list[dict[str, Any]] = []
        expected: list[dict[str, Any]] = []
        for number, (status, prompt, model, params, line, cost) in enumerate(lines, start=1):
            entry: dict[str, Any] = {"key": f"{number:016x}#0", "status": status}
            index.occurrence(number)  # read from this run's prompts file
            entry.update(params={**params, "prompt": prompt}, line=line, cost=cost)
            entry.update(generation_id=f"gen-{number}", file=str(out / "ox.png"))
            entry.update({"model": model} if model is not None else {})
            entries.append(entry)
            if status == "succeeded":
                try:
                    number_cost: float | None = float(Decimal(cost)) if cost else None
                except InvalidOperation:
                    number_cost = None
                expected.append(
                    _dataset_row(
                        entry["params"],
                        "gpt-image-2" if model is None else model,
                        file_name="ox.png",
                        generation_id=f"gen-{number}",
                        status="succeeded",
                        cost=number_cost,
                        line=line,
                    )
                )

        left_out: dict[str, bytes] = {}
        formats: tuple[MetadataFormat, ...] = ("jsonl", "parquet")
        for metadata in formats:
            writer = DatasetWriter(out, index, model="gpt-image-2", metadata=metadata)
            for entry in entries:
                if entry["status"] == "unsent":
                    request = writer.request(entry.get("model", "gpt-image-2"), entry["params"])
                    writer.not_generated(
                        line=entry["line"], request=request, status="unsent", error="not sent"
                    )
                else:
                    writer.entry(entry)
            if metadata == "parquet" and fail_at is not None:
                calls = iter(range(1, 3))  # the Parquet file's, then not_generated.jsonl's

                def failing(fd: int, calls: Any = calls) -> None:
                    if next(calls) == fail_at:
                        raise OSError(28, os.strerror(28))

                patch.setattr(os, "fsync", failing)
                with pytest.raises(WriteFailedError):
                    writer.commit()
                assert not [path for path in out.iterdir() if path.name.startswith(".")]
                return
            writer.commit()
            left = sum(entry["status"] in ("failed", "unsent") for entry in entries)
            assert (writer.rows, writer.left_out) == (len(expected), left)
            left_out[metadata] = (out / "not_generated.jsonl").read_bytes()
            if metadata == "jsonl":
                stored = [
                    json.loads(raw) for raw in (out / "metadata.jsonl").read_bytes().splitlines()
                ]
                assert list(map(_json_text, stored)) == list(map(_json_text, expected))

        assert sorted(path.name for path in out.iterdir()) == [
            "metadata.parquet",
            "not_generated.jsonl",
            "ox.png",
        ]
        assert left_out["parquet"] == left_out["jsonl"]
        import pyarrow.parquet

        parquet = pyarrow.parquet.ParquetFile(out / "metadata.parquet")
        assert parquet.metadata.num_row_groups == -(-len(expected) // group)
        table = parquet.read()
        columns = list(dict.fromkeys(column for row in expected for column in row))
        assert table.column_names == columns
        for field in table.schema:
            held = [row.get(field.name) for row in expected]
            kind = _parquet_type(field.name, held)
            assert str(field.type) == ("string" if kind == "json" else kind), field.name
            for value, want in zip(table.column(field.name).to_pylist(), held, strict=True):
                if want is None:
                    assert value is None
                elif kind == "json":
                    assert value == _json_text(want)
                elif kind == "double":
                    assert _json_text(value) == _json_text(float(want))
                else:
                    assert _json_text(value) == _json_text(want)


def test_a_dry_run_with_parquet_metadata_needs_no_pyarrow(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--dry-run`` writes no dataset: ``--metadata parquet`` with it runs where pyarrow
    cannot be imported."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    prompts = write_prompts(tmp_path, "an ox")
    argv = ["batch", str(prompts), "--out", str(tmp_path / "out"), "--metadata", "parquet"]
    status, stdout, stderr = run([*argv, "--dry-run"], capsys)
    assert status == 0, stdout + stderr
    assert "nothing was sent" in stdout + stderr
    assert oxen_emulator.stats()["jobs_created"] == 0


@pytest.mark.slow
def test_a_batch_from_standard_input_runs_and_resumes(
    oxen_emulator: Emulator, tmp_path: Path
) -> None:
    """``batch -`` reads the prompts from standard input (twice: it keeps a copy beside the
    results for its second pass, and leaves none behind); run again with the same input and
    --out, it settles everything from the manifest and sends nothing."""
    out = tmp_path / "out"
    data = b'ox one\n{"prompt": "ox two", "quality": "low"}\nox one\n'
    for _ in range(2):
        done = subprocess.run(
            [*CLI, "batch", "-", "--out", str(out)], input=data, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert b"3 of 3 saved" in done.stdout
    assert oxen_emulator.stats()["jobs_by_prompt"] == {"ox one": 2, "ox two": 1}
    assert not [path for path in out.iterdir() if path.name.startswith(".stdin")]
    assert b"Resuming: 3 already settled" in done.stdout


@pytest.mark.slow
def test_an_empty_standard_input_is_refused(oxen_emulator: Emulator, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "batch", "-", "--out", str(tmp_path / "out")],
        input=b"# nothing\n",
        capture_output=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == "error: <stdin> holds no prompts"


def test_a_dry_run_of_many_parameter_sets_lists_the_largest_and_sums_the_rest(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = ("1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160")
    qualities = ("low", "medium", "high", "auto")
    lines = [
        json.dumps({"prompt": f"ox {n}", "resolution": size, "quality": quality})
        for n, (size, quality) in enumerate(
            (size, quality) for size in sizes for quality in qualities
        )
    ]
    prompts = write_prompts(tmp_path, *lines, *lines[:3])
    status, stdout, stderr = run(["batch", str(prompts), "--dry-run"], capsys)
    assert status in (0, 1), stderr
    rows = [row for row in stdout.splitlines() if "│" in row]
    assert len(rows) == 20 + 1  # twenty sets, the others in one row
    assert "... 4 more sets" in rows[-1]
    assert rows[-1].split("│")[2].strip() == "4"
    assert rows[0].split("│")[2].strip() == "2"  # the sets seen twice come first


def test_the_lines_stream_with_their_bytes_copied_for_a_second_pass() -> None:
    copy = io.BytesIO()
    reader = PromptsReader("-", prompts_format="text", stream=io.BytesIO(b"ox\n\nox two\n"))
    assert [line.prompt for line in reader.requests(tee=copy)] == ["ox", "ox two"]
    assert copy.getvalue() == b"ox\n\nox two\n"


# --- a large batch killed mid-run ------------------------------------------------------------

_TINY_PNG: Final = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.mark.slow
@pytest.mark.long
@posix_only
@pytest.mark.timeout(600)
def test_a_10000_line_batch_killed_mid_run_resumes_with_exactly_one_job_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a 10,000-line batch (plain and JSON lines, some identical) once about a
    fifth of it is recorded, with requests in flight: the rerun reattaches what the manifest
    or the ledger knows, sends the rest, and ends with exactly one job per line, every line
    saved once in the compacted manifest and in the dataset."""
    # The results are 1x1 images: what is tested is the bookkeeping, not rendering 10,000.
    monkeypatch.setattr(_media, "render_artifact", lambda *_, **__: _TINY_PNG)
    lines = [
        json.dumps({"prompt": f"ox {n}", "quality": "low"}) if n % 3 else f"ox {n}"
        for n in range(9_900)
    ]
    lines += [f"ox {n}" for n in range(0, 300, 3)]  # 100 lines identical to earlier ones
    prompts = write_prompts(tmp_path, *lines)
    out = tmp_path / "out"
    config = EmulatorConfig(seed=11, time_scale=0.001, unrelated_event_rate=0)
    with Emulator(config=config) as hub:
        monkeypatch.setenv("OXEN_BASE_URL", hub.base_url)
        monkeypatch.setenv("OXEN_API_KEY", SECRET_KEY)
        monkeypatch.delenv("OXEN_LEDGER", raising=False)
        # The emulator answers in milliseconds; a request may be in flight for twice its
        # timeout, so the rerun holds back the lines identical to the killed run's unanswered
        # requests that long (at most) while it sends the others: with 5 s, at most 10 s
        # (30 s by default: a minute), which the rest of the run outlasts.
        argv = ("batch", str(prompts), "--out", str(out), "--concurrency", "64", "--timeout", "5")
        # Its output unread (a pipe nobody reads would block it once full).
        process = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL)
        manifest = out / "manifest.jsonl"
        try:
            deadline = time.monotonic() + 300
            while not (manifest.exists() and manifest.read_bytes().count(b"\n") >= 2_000):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the batch never got a fifth of the way"
                time.sleep(0.2)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
        made = hub.stats()["jobs_created"]
        assert 1_000 <= made < len(lines)

        status, stdout, stderr = finish(spawn(*argv), timeout=500)
        assert status == 0, stderr[-2000:]
        stats = hub.stats()
    assert stats["jobs_created"] == len(lines)
    expected = Counter(
        json.loads(line)["prompt"] if line.startswith("{") else line for line in lines
    )
    assert stats["jobs_by_prompt"] == expected
    entries = manifest_entries(out)
    assert len(entries) == len(lines)
    assert {entry["status"] for entry in entries} == {"succeeded"}
    assert len({entry["generation_id"] for entry in entries}) == len(lines)
    assert len((out / "metadata.jsonl").read_text().splitlines()) == len(lines)
    assert f"{len(lines)} of {len(lines)} saved" in stdout


# --- pricing each kind of request once ------------------------------------------------------

_KINDS: Final[list[tuple[str, dict[str, Any]]]] = [
    ("gpt-image-2", {"prompt": "an ox"}),
    ("gpt-image-2", {"prompt": "an ox, again"}),
    ("gpt-image-2", {"prompt": "   "}),  # blank: refused, whatever its length
    ("gpt-image-2", {"prompt": ""}),
    ("gpt-image-2", {"prompt": "ox", "resolution": "1024x1024", "quality": "low"}),
    ("gpt-image-2", {"prompt": "xo", "resolution": "1024x1024", "quality": "low"}),
    ("gpt-image-2", {"prompt": "ox", "resolution": "999x999"}),
    ("gpt-image-2", {"prompt": "ox", "qualty": "low"}),
    (KLING, {"prompt": "a river", "duration": 10, "generate_audio": True}),
    (KLING, {"prompt": "a river", "duration": 7}),
    ("no-such-model", {"prompt": "an ox"}),
]


@pytest.mark.anyio
async def test_pricing_each_kind_once_answers_as_pricing_each_request(
    oxen_emulator: Emulator,
) -> None:
    """The dry run's :class:`Pricer` (one estimate per model, other parameters, prompt length
    and blankness) gives every request the answer ``estimate_cost`` gives it alone: the same
    amount, or the same refusal."""
    from oxen_queue import AsyncClient
    from oxen_queue._cli._cost import Pricer, estimate, parameter_set

    async with AsyncClient(completion="poll") as client:
        pricer = Pricer(client)
        for _ in range(2):  # the second time, from what it remembers
            for model, params in _KINDS:
                alone = await estimate(client, model, params)
                assert await pricer.price(model, params, parameter_set(params)) == alone


# --- any bytes, in every format -------------------------------------------------------------

_PIECES: Final = st.one_of(
    st.sampled_from(
        [
            "\n",
            "\r\n",
            "\r",
            ",",
            '"',
            '""',
            "prompt",
            "model",
            "quality",
            "#",
            "{",
            "}",
            " ",
            "\x00",
            "\ufeff",
            "\u2028",
            '{"prompt": "ox"}',
            '{"prompt": 3}',
            "10",
            "true",
            "1e999",
            "-",
            "9" * 5000,
        ]
    ),
    st.text(max_size=5),
)


@settings(max_examples=300)
@given(
    st.lists(_PIECES, max_size=14).map("".join),
    st.sampled_from(FORMATS),
    st.booleans(),
)
def test_any_prompts_file_in_any_format_is_read_or_refused_naming_a_line(
    text: str, prompts_format: PromptsFormat, garble: bool
) -> None:
    """Whatever the bytes, a reader of any format yields requests (each with a string
    prompt, numbered within the file) or raises ``PromptsFileError`` naming the file, and a
    line of it when one is to blame; never another error."""
    data = text.encode("utf-8", errors="surrogatepass")
    if garble:
        data = data[: len(data) // 2] + b"\xff" + data[len(data) // 2 :]
    reader = PromptsReader("p", prompts_format=prompts_format, stream=io.BytesIO(data))
    lines = data.count(b"\n") + 1
    try:
        found = list(reader.requests())
    except PromptsFileError as exc:
        message = str(exc)
        assert message.startswith("p:")
        head = message.split(":")[1]
        assert head.startswith(" ") or 1 <= int(head) <= lines
        assert "\n" not in message
        return
    for line in found:
        assert isinstance(line.prompt, str)
        assert isinstance(line.params["prompt"], str)
        assert 1 <= line.number <= lines
        assert "\x00" not in json.dumps(line.params, ensure_ascii=False)


def test_a_manifest_that_cannot_be_synced_stops_the_run_in_one_line(
    oxen_emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A disk that refuses the group commit (EIO on fsync): exit 1, one line naming the
    manifest and saying how to resume; no dataset is written from a manifest not on disk."""
    prompts, out = write_prompts(tmp_path, "ox one", "ox two"), tmp_path / "out"

    def failing(fd: int) -> None:
        raise OSError(5, os.strerror(5))

    monkeypatch.setattr(os, "fsync", failing)
    status, _, stderr = run(["batch", str(prompts), "--out", str(out)], capsys)
    assert status == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {out / 'manifest.jsonl'}: Input/output error")
    assert line.endswith("run the same command again with the same --out to resume")
    assert not (out / "metadata.jsonl").exists()
    assert not list(out.glob(".*.writing"))


def test_json_without_dry_run_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_prompts(tmp_path, "ox")
    status, _, stderr = run(["batch", str(prompts), "--json"], capsys)
    assert status == 2
    assert "--json applies only to --dry-run" in stderr
