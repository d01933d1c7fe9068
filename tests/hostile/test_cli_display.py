"""The console script in front of a hostile server: every text the server sends (a row's
fields, an error body, a failure message) is shown as data: markup as text, terminal control
and bidi characters as escapes, one line per error, never a crash or a traceback."""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Final

import pytest

from oxen_queue._cli import main

from .actions import reply
from .server import HostileServer
from .support import API_KEY

# What a hostile server would put in its text: markup that crashed the display, ANSI and OSC
# sequences (clear screen, hyperlinks, window titles), C1 CSI, a bidi override, a fake line.
HOSTILE: Final = (
    "[/] [bold]\x1b[2J\x1b[31mred\x1b]8;;https://evil.test\x07link\x1b]0;title\x07"
    "\x9b1m \u202eexe.gnp\u2066\r\nFAKE: all good"
)
ESCAPED: Final = (
    "[/] [bold]\\x1b[2J\\x1b[31mred\\x1b]8;;https://evil.test\\x07link\\x1b]0;title\\x07"
    "\\x9b1m \\u202eexe.gnp\\u2066\\r\\nFAKE: all good"
)
_RAW: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, server: HostileServer) -> None:
    monkeypatch.setenv("OXEN_API_KEY", API_KEY)
    monkeypatch.setenv("OXEN_BASE_URL", server.base_url)
    monkeypatch.setenv("COLUMNS", "400")  # whole lines, to compare


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def raw_invisible(text: str) -> set[str]:
    return {c for c in text if c != "\n" and unicodedata.category(c) in _RAW}


def hostile_row(generation_id: str) -> dict[str, Any]:
    return {
        "generation_id": generation_id,
        "status": "failed",
        "model_name": "[/]gpt-image-2\x1b[8m",
        "media_type": "image",
        "prompt": HOSTILE,
        "error_message": HOSTILE,
        "enqueued_at": 1_700_000_000,
        "\x1b]0;pwned\x07[bold]key": "[/]value",
    }


def test_status_of_a_row_full_of_markup_and_escapes_shows_each_field_as_text(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (job,) = server.add_jobs(API_KEY, 1)
    row = json.dumps(hostile_row(job.generation_id)).encode()
    server.on("GET", f"/api/ai/queue/{job.generation_id}", reply(200, row))
    status, stdout, stderr = cli(["status", job.generation_id], capsys)

    assert status == 1, stderr  # failed
    assert ESCAPED in stdout
    assert "[/]gpt-image-2\\x1b[8m" in stdout
    assert not raw_invisible(stdout)
    assert "Traceback" not in stderr


def test_status_json_of_a_hostile_row_is_printable_json_with_the_same_values(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (job,) = server.add_jobs(API_KEY, 1)
    row = json.dumps(hostile_row(job.generation_id)).encode()
    server.on("GET", f"/api/ai/queue/{job.generation_id}", reply(200, row))
    status, stdout, _ = cli(["status", job.generation_id, "--json"], capsys)

    assert status == 1
    line = stdout.removesuffix("\n")
    assert "\n" not in line
    assert all(" " <= char <= "~" for char in line)
    shown = json.loads(line)
    assert shown["error_message"] == HOSTILE
    assert shown["prompt"] == HOSTILE


def test_a_refusal_whose_message_is_markup_and_escapes_is_one_escaped_line(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 404 whose message is hostile: exit 2, one ``error:`` line, the message as text."""
    (job,) = server.add_jobs(API_KEY, 1)
    body = json.dumps({"error": {"message": HOSTILE}}).encode()
    server.on("GET", f"/api/ai/queue/{job.generation_id}", reply(404, body))
    status, stdout, stderr = cli(["status", job.generation_id], capsys)

    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert ESCAPED in lines[0]
    assert not raw_invisible(stderr)
    assert stdout == ""


def test_wait_prints_a_hostile_failure_message_on_its_one_line(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (job,) = server.add_jobs(API_KEY, 1)
    row = json.dumps(hostile_row(job.generation_id)).encode()
    server.on("GET", f"/api/ai/queue/{job.generation_id}", reply(200, row), times=1000)
    status, stdout, stderr = cli(["wait", job.generation_id], capsys)

    assert status == 1, stderr
    assert stdout == f"{job.generation_id} failed: {ESCAPED}\n"


def test_a_server_error_body_of_escapes_on_a_listing_is_one_escaped_line(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``models`` against a server that answers 400 with a hostile message: exit 2, one line,
    escaped."""
    body = json.dumps({"error": {"message": HOSTILE}}).encode()
    server.on("GET", "/api/ai/models", reply(400, body))
    status, _, stderr = cli(["models"], capsys)

    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert ESCAPED in lines[0]
    assert not raw_invisible(stderr)
