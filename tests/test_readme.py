"""Every ```python block of README.md and of the guides (docs/guides/*.md) runs, against the
emulator, so the documentation stays true.

Each block runs in a fresh namespace, in a temporary working directory, with
``OXEN_API_KEY``/``OXEN_BASE_URL`` pointing at an emulator whose jobs run 100 times faster.
A block with top-level ``await`` (or ``async with``) runs on asyncio and on trio. A block of
``>>>`` lines is a transcript: each statement runs, and the text under it is what it must
print, or the ``Error: message`` it must raise (compared with whitespace collapsed).

An HTML comment on the line above a fence changes how its block runs:

- ``<!-- readme-test: skip (why) -->``: not run; the reason is listed in the test report.
- ``<!-- readme-test: with client -->``: run inside ``async with AsyncClient() as client:``
  (a fragment that uses a client made elsewhere).
- ``<!-- readme-test: continues -->``: run after the block above, in the namespace it left
  (the next cell of one notebook); the blocks of such a chain are one test.

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

ROOT: Final = Path(__file__).resolve().parents[1]
README: Final = ROOT / "README.md"
DOCUMENTS: Final = [README, *sorted((ROOT / "docs" / "guides").glob("*.md"))]
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_SKIP = re.compile(r"skip\s*(?:\((.*)\))?\Z", re.DOTALL)
_FLAGS: Final = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


@dataclass(frozen=True)
class Block:
    """One ```python block of a document (the README's, unless named)."""

    line: int
    source: str
    marker: str | None
    document: str = "README.md"

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        match = _SKIP.match(self.marker or "")
        return (match.group(1) or "no reason given") if match else None

    @property
    def with_client(self) -> bool:
        return self.marker == "with client"

    @property
    def continues(self) -> bool:
        return self.marker == "continues"

    @property
    def transcript(self) -> bool:
        return self.source.lstrip().startswith(">>> ")

    @property
    def is_async(self) -> bool:
        if self.transcript or self.with_client:
            return True
        code = compile(self.source, self.where, "exec", flags=_FLAGS)
        return bool(code.co_flags & inspect.CO_COROUTINE)


@dataclass(frozen=True)
class Run:
    """Blocks run one after another in one namespace: a block, and those that continue it."""

    blocks: tuple[Block, ...]

    @property
    def skip_reason(self) -> str | None:
        return self.blocks[0].skip_reason

    @property
    def is_async(self) -> bool:
        return any(block.is_async for block in self.blocks)


def readme_blocks(text: str, document: str = "README.md") -> list[Block]:
    """Every ```python block of ``text``, with the marker comment just above it, if any."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        last_line = before.rsplit("\n", 1)[-1]
        marker = _MARKER.search(last_line)
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, match.group(1), marker.group(1) if marker else None, document))
    return blocks


def runs_of(blocks: list[Block]) -> list[Run]:
    """The blocks as runs: a block marked ``continues`` joins the run of the one above."""
    runs: list[Run] = []
    for block in blocks:
        if block.continues and runs:
            runs[-1] = Run((*runs[-1].blocks, block))
        else:
            runs.append(Run((block,)))
    return runs


def _document_blocks(path: Path) -> list[Block]:
    return readme_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


BLOCKS: Final = _document_blocks(README)
ALL_BLOCKS: Final = [block for path in DOCUMENTS for block in _document_blocks(path)]
RUNS: Final = runs_of(ALL_BLOCKS)
SYNC_RUNS: Final = [r for r in RUNS if r.skip_reason or not r.is_async]
ASYNC_RUNS: Final = [r for r in RUNS if not r.skip_reason and r.is_async]


def _ids(run: Run) -> str:
    return run.blocks[0].where


@pytest.fixture
def readme_env(oxen_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An emulator in the environment, and a scratch working directory for saved files."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compile(block: Block, source: str) -> Any:
    return compile(source, block.where, "exec", flags=_FLAGS)


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
        code = compile(statement, block.where, "eval", flags=_FLAGS)
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
        assert collapse(shown) == collapse(expected), f"{block.where}: {statement}"
        return
    if is_expression and result is not None:
        assert collapse(repr(result)) == collapse(expected), f"{block.where}: {statement}"
    else:
        assert not expected.strip(), f"{block.where}: {statement} raised nothing"


@pytest.mark.parametrize("run", SYNC_RUNS, ids=_ids)
def test_readme_block_runs(run: Run, readme_env: Path) -> None:
    """A synchronous block (or chain of blocks) of the README or a guide runs to completion
    against the emulator."""
    if run.skip_reason:
        pytest.skip(run.skip_reason)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    for block in run.blocks:
        exec(_compile(block, block.source), namespace)  # noqa: S102 - the docs' own code


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_RUNS, ids=_ids)
async def test_readme_async_block_runs(run: Run, readme_env: Path) -> None:
    """A block (or chain of blocks) with top-level await, of the README or a guide, runs to
    completion against the emulator, on asyncio and on trio."""
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    with anyio.fail_after(60):
        for block in run.blocks:
            await _run_async(block, namespace)


def test_readme_blocks_nearly_all_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The README has Python blocks; in it and in each guide at most one in five is
    skipped, each with a reason; the counts are printed with the test run."""
    lines = []
    for path in DOCUMENTS:
        blocks = _document_blocks(path)
        skipped = [b for b in blocks if b.skip_reason]
        summary = f"{path.relative_to(ROOT)}: {len(blocks)} python blocks, " + (
            f"{len(blocks) - len(skipped)} run, {len(skipped)} skipped ("
            + "; ".join(f"line {b.line}: {b.skip_reason}" for b in skipped)
            + ")"
        )
        lines.append(summary)
        assert blocks, summary
        assert len(skipped) * 5 <= len(blocks), summary
        assert all(b.skip_reason != "no reason given" for b in skipped), summary
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert len(BLOCKS) >= 5


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
async def test_a_continued_block_runs_after_the_one_above_in_its_namespace() -> None:
    """``continues`` chains a block to the run of the one above (the cells of a notebook):
    one test, one namespace, in order; a block without it starts a run of its own."""
    text = (
        "```python\nx = 1\n```\n<!-- readme-test: continues -->\n```python\nx += 1\n```\n"
        "<!-- readme-test: continues -->\n```python\nawait g(x)\n```\n```python\ny = 1\n```\n"
    )
    chain, alone = runs_of(readme_blocks(text, "docs/guides/x.md"))
    assert [b.line for b in chain.blocks] == [1, 5, 9]
    assert chain.is_async
    assert not alone.is_async
    assert _ids(chain) == "docs/guides/x.md:1"
    seen: list[int] = []

    async def g(value: int) -> None:
        seen.append(value)

    namespace: dict[str, Any] = {"g": g}
    for block in chain.blocks:
        await _run_source(block, namespace)
    assert seen == [2]


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
