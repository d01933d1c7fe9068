"""Every ```python block of README.md runs, against the emulator, so the README stays true.

Each block runs in a fresh namespace, in a temporary working directory, with
``OXEN_API_KEY``/``OXEN_BASE_URL`` pointing at an emulator whose jobs run 100 times faster.
A block with top-level ``await`` (or ``async with``) runs on asyncio and on trio. A block of
``>>>`` lines is a transcript: each statement runs, and the text under it is what it must
print, or the ``Error: message`` it must raise (compared with whitespace collapsed).

An HTML comment on the line above a fence changes how its block runs:

- ``<!-- readme-test: skip (why) -->``: not run; the reason is listed in the test report.
- ``<!-- readme-test: with client -->``: run inside ``async with AsyncClient() as client:``
  (a fragment that uses a client made elsewhere).

The harness knows nothing about particular sections: a new block is picked up as it is.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from oxen_queue import AsyncClient
from oxen_queue.testing import Emulator

README: Final = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_SKIP = re.compile(r"skip\s*(?:\((.*)\))?\Z", re.DOTALL)
_FLAGS: Final = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


@dataclass(frozen=True)
class Block:
    """One ```python block of the README."""

    line: int
    source: str
    marker: str | None

    @property
    def skip_reason(self) -> str | None:
        match = _SKIP.match(self.marker or "")
        return (match.group(1) or "no reason given") if match else None

    @property
    def with_client(self) -> bool:
        return self.marker == "with client"

    @property
    def transcript(self) -> bool:
        return self.source.lstrip().startswith(">>> ")

    @property
    def is_async(self) -> bool:
        if self.transcript or self.with_client:
            return True
        code = compile(self.source, f"README.md:{self.line}", "exec", flags=_FLAGS)
        return bool(code.co_flags & inspect.CO_COROUTINE)


def readme_blocks(text: str) -> list[Block]:
    """Every ```python block of ``text``, with the marker comment just above it, if any."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        last_line = before.rsplit("\n", 1)[-1]
        marker = _MARKER.search(last_line)
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, match.group(1), marker.group(1) if marker else None))
    return blocks


BLOCKS: Final = readme_blocks(README.read_text(encoding="utf-8"))
SYNC_BLOCKS: Final = [b for b in BLOCKS if b.skip_reason or not b.is_async]
ASYNC_BLOCKS: Final = [b for b in BLOCKS if not b.skip_reason and b.is_async]


def _ids(block: Block) -> str:
    return f"README.md:{block.line}"


@pytest.fixture
def readme_env(oxen_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An emulator in the environment, and a scratch working directory for saved files."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compile(block: Block, source: str) -> Any:
    return compile(source, f"README.md:{block.line}", "exec", flags=_FLAGS)


async def _run_async(block: Block, namespace: dict[str, Any]) -> None:
    if block.with_client:
        async with AsyncClient() as client:
            namespace["client"] = client
            await _run_source(block, namespace)
    else:
        await _run_source(block, namespace)


async def _run_source(block: Block, namespace: dict[str, Any]) -> None:
    if block.transcript:
        for statement, expected in _transcript(block.source):
            await _check_statement(block, statement, expected, namespace)
        return
    result = eval(_compile(block, block.source), namespace)  # noqa: S307 - the README's own code
    if inspect.iscoroutine(result):
        await result


def _transcript(source: str) -> Iterator[tuple[str, str]]:
    """``(statement, expected output)`` pairs of a ``>>>`` transcript."""
    statement: list[str] = []
    expected: list[str] = []
    for line in textwrap.dedent(source).splitlines():
        if line.startswith(">>> "):
            if statement:
                yield "\n".join(statement), "\n".join(expected)
            statement, expected = [line[4:]], []
        elif line.startswith("... "):
            statement.append(line[4:])
        else:
            expected.append(line)
    if statement:
        yield "\n".join(statement), "\n".join(expected)


async def _check_statement(
    block: Block, statement: str, expected: str, namespace: dict[str, Any]
) -> None:
    def collapse(text: str) -> str:
        return " ".join(text.split())

    try:
        code = compile(statement, f"README.md:{block.line}", "eval", flags=_FLAGS)
    except SyntaxError:  # a statement, not an expression
        code, is_expression = _compile(block, statement), False
    else:
        is_expression = True
    try:
        result = eval(code, namespace)  # noqa: S307 - the README's own code
        if inspect.iscoroutine(result):
            result = await result
    except Exception as exc:
        shown = f"{type(exc).__name__}: {exc}"
        assert collapse(shown) == collapse(expected), f"README.md:{block.line}: {statement}"
        return
    if is_expression and result is not None:
        assert collapse(repr(result)) == collapse(expected), f"README.md:{block.line}: {statement}"
    else:
        assert not expected.strip(), f"README.md:{block.line}: {statement} raised nothing"


@pytest.mark.parametrize("block", SYNC_BLOCKS, ids=_ids)
def test_readme_block_runs(block: Block, readme_env: Path) -> None:
    """A synchronous README block runs to completion against the emulator."""
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(_compile(block, block.source), namespace)  # noqa: S102 - the README's own code


@pytest.mark.anyio
@pytest.mark.parametrize("block", ASYNC_BLOCKS, ids=_ids)
async def test_readme_async_block_runs(block: Block, readme_env: Path) -> None:
    """A README block with top-level await runs to completion against the emulator, on
    asyncio and on trio."""
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    with anyio.fail_after(60):
        await _run_async(block, namespace)


def test_readme_blocks_nearly_all_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The README has Python blocks, and at most one in five is skipped, each with a reason;
    the counts are printed with the test run."""
    skipped = [b for b in BLOCKS if b.skip_reason]
    summary = f"README.md: {len(BLOCKS)} python blocks, {len(BLOCKS) - len(skipped)} run, " + (
        f"{len(skipped)} skipped ("
        + "; ".join(f"line {b.line}: {b.skip_reason}" for b in skipped)
        + ")"
    )
    with capsys.disabled():
        print(f"\n{summary}")
    assert len(BLOCKS) >= 5
    assert len(skipped) * 5 <= len(BLOCKS), summary
    assert all(b.skip_reason != "no reason given" for b in skipped), summary


def test_markers_and_transcripts_are_read_as_documented() -> None:
    """The harness's own parsing: markers apply to the fence right below them only, skip
    reasons are kept, transcripts pair statements with what they print."""
    text = (
        "<!-- readme-test: skip (needs a GPU) -->\n```python\nx = 1\n```\n\n"
        "Some prose.\n<!-- readme-test: with client -->\n\n```python\n>>> 1 + 1\n2\n```\n"
        "```python\nawait f()\n```\n"
    )
    first, second, third = readme_blocks(text)
    assert (first.line, first.skip_reason, first.is_async) == (2, "needs a GPU", False)
    assert second.marker == "with client"  # a blank line between comment and fence is fine
    assert second.transcript
    assert list(_transcript(second.source)) == [("1 + 1", "2")]
    assert (third.marker, third.is_async) == (None, True)


@pytest.mark.anyio
async def test_a_transcript_that_does_not_print_what_it_shows_fails() -> None:
    """A transcript is checked, not just run: a wrong value or a wrong error message fails."""
    block = Block(1, ">>> 1 + 1\n3\n", None)
    with pytest.raises(AssertionError):
        await _run_source(block, {})
    block = Block(1, '>>> int("x")\nValueError: something else\n', None)
    with pytest.raises(AssertionError):
        await _run_source(block, {})
    block = Block(
        1, ">>> int(\"x\")\nValueError: invalid literal for int() with base 10:\n'x'\n", None
    )
    await _run_source(block, {})  # the right message, folded across lines as prose is
