"""What the console script shows is data, end to end: prompts and server messages with rich
markup, ANSI sequences and bidi overrides run through real commands against the emulator,
and come out escaped, never interpreted (``[/]`` crashed ``batch`` and ``status`` before)."""

from __future__ import annotations

import itertools
import json
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock

from .support import SECRET_KEY, enqueue_directly, manifest_entries, run

HOSTILE: Final = (
    "[/]",
    "[bold]",
    "[/bold]",
    "[link=https://evil.test]",
    ":ox:",
    "\x1b[31m",
    "\x1b[2J",
    "\x1b]8;;https://evil.test\x07",
    "\x9b1m",
    "\u202e",
    "\u2067",
    "\u200b",
    "\u2028",
    "\x85",
    "\x0c",
    "\r",
    "\t",
)
_RAW: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def raw_invisible(text: str) -> set[str]:
    """The control, format and separator characters in ``text``, line ends apart."""
    return {c for c in text if c != "\n" and unicodedata.category(c) in _RAW}


@pytest.fixture(scope="module")
def hub() -> Iterator[Emulator]:
    """One emulator for every example of the property (jobs finish at once)."""
    config = EmulatorConfig(seed=3, time_scale=0.0, unrelated_event_rate=0)
    with Emulator(config=config) as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OXEN_BASE_URL", emulator.base_url)
        patch.setenv("OXEN_API_KEY", SECRET_KEY)
        patch.setenv("COLUMNS", "250")
        yield emulator


_runs = itertools.count()
prompt_text = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE),
        st.text(
            alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\x00"),
            max_size=6,
        ),
    ),
    min_size=1,
    max_size=6,
).map("".join)


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(prompt_text, min_size=1, max_size=3, unique=True))
def test_a_batch_of_hostile_prompts_completes_and_shows_them_escaped(
    hub: Emulator, capsys: pytest.CaptureFixture[str], texts: list[str]
) -> None:
    """Prompts made of markup, ANSI and OSC sequences, bidi overrides and Unicode line
    breaks: the batch sends each as written (one job each), prints its summary, exits 0,
    and its output holds no raw control, format or separator character."""
    # This example's jobs, among the module emulator's: "|" ends the number, so that ox 9's
    # prompts are not ox 90's, and the prefix survives the strip of a prompt with no text.
    tag = f"ox {next(_runs)}| "
    prompts = [tag + text for text in texts]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "prompts.txt"
        path.write_text("".join(f"{prompt}\n" for prompt in prompts), encoding="utf-8")
        out = Path(directory) / "out"
        status, stdout, stderr = run(["batch", str(path), "--out", str(out)], capsys)

        assert status == 0, stdout + stderr
        assert "Summary" in stdout
        assert f"{len(prompts)} of {len(prompts)} saved" in stdout
        assert not raw_invisible(stdout)
        assert not raw_invisible(stderr)
        mine = tag.rstrip()
        sent = {p: n for p, n in hub.stats()["jobs_by_prompt"].items() if p.startswith(mine)}
        assert sent == dict.fromkeys((p.strip() for p in prompts), 1)
        recorded = {entry["prompt"] for entry in manifest_entries(out)}
        assert recorded == {p.strip() for p in prompts}


def test_status_shows_an_error_message_of_markup_as_text(
    manual_hub: tuple[Emulator, ManualClock], capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed row whose ``error_message`` is ``[/]`` and an ANSI sequence: ``status`` shows
    it escaped and exits 1; ``wait`` prints it on its line; ``--json`` keeps it exactly."""
    emulator, clock = manual_hub
    generation_id = enqueue_directly(emulator, "an ox [/]")
    message = "[/] \x1b[2J\x1b[31mred \u202eexe.gnp"
    emulator.state.jobs[generation_id].planned_error = message  # before it starts
    clock.advance(600)

    status, stdout, stderr = run(["status", generation_id], capsys)
    assert status == 1, stderr
    assert "[/] \\x1b[2J\\x1b[31mred \\u202eexe.gnp" in stdout
    assert not raw_invisible(stdout)

    status, stdout, _ = run(["wait", generation_id], capsys)
    assert status == 1
    assert stdout == f"{generation_id} failed: [/] \\x1b[2J\\x1b[31mred \\u202eexe.gnp\n"

    status, stdout, _ = run(["status", generation_id, "--json"], capsys)
    assert status == 1
    assert all(" " <= char <= "~" for char in stdout.rstrip("\n"))
    assert json.loads(stdout)["error_message"] == message


def test_a_prompt_of_markup_is_shown_by_generate_and_status(
    oxen_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``generate "[/]..."`` saves its image and says so; ``status`` shows the prompt row
    as text."""
    prompt = "[/] [bold]\x1b[5man ox"
    status, stdout, stderr = run(["generate", prompt, "--out", str(tmp_path)], capsys)
    assert status == 0, stderr
    assert stdout.startswith("saved ")
    (generation_id,) = oxen_emulator.state.jobs
    status, stdout, _ = run(["status", generation_id], capsys)
    assert status == 0
    assert "[/] [bold]\\x1b[5man ox" in stdout
    assert "\x1b" not in stdout
