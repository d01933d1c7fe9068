"""Every ```python block of README.md and of the docs pages runs, against the emulator, so
what they show stays true.

The pages are README.md and every ``docs/**/*.md``. Each block runs in a fresh namespace, in a
temporary working directory, with ``OXEN_API_KEY``/``OXEN_BASE_URL`` pointing at an emulator
whose jobs run 100 times faster. A block with top-level ``await`` (or ``async with``) runs on
asyncio and on trio. A block of ``>>>`` lines is a transcript: each statement runs, and the text
under it is what it must print, or the ``Error: message`` it must raise (compared with
whitespace collapsed).

An HTML comment on the line above a fence (``docs-test:``; ``readme-test:`` is the older
spelling, read the same) changes how its block runs:

- ``<!-- docs-test: skip (why) -->``: not run; the reason is listed in the test report. For a
  block that cannot run offline; the summary test prints how many were skipped, and why.
- ``<!-- docs-test: with client -->``: run inside ``async with AsyncClient() as client:``
  (a fragment that uses a client made elsewhere).
- ``<!-- docs-test: continue -->``: run after the blocks before it on the page, in their
  namespace (a page that builds code up block by block); the chain starts at the nearest
  block above without this marker.
- ``<!-- docs-test: pytest -->``: a test module of the reader's own (it uses the
  ``oxen_emulator`` fixture, say): written to a file and run by pytest in a fresh process,
  which must pass. Marked ``slow``.

The harness knows nothing about particular pages or sections: a new page or block is picked
up as it is.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from oxen_queue import AsyncClient
from oxen_queue.testing import Emulator

ROOT: Final = Path(__file__).resolve().parents[1]
PAGES: Final = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*(?:docs|readme)-test:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_SKIP = re.compile(r"skip\s*(?:\((.*)\))?\Z", re.DOTALL)
_FLAGS: Final = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_KNOWN_MARKERS: Final = ("with client", "continue", "pytest")


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    line: int
    source: str
    marker: str | None
    page: str = "README.md"
    before: tuple[Block, ...] = ()
    """The blocks this one continues (``continue``), first to last."""

    @property
    def chain(self) -> tuple[Block, ...]:
        """The blocks to run, in order, in one namespace: those it continues, then itself."""
        return (*self.before, self)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        match = _SKIP.match(self.marker or "")
        return (match.group(1) or "no reason given") if match else None

    @property
    def with_client(self) -> bool:
        return self.chain[0].marker == "with client"

    @property
    def pytest_module(self) -> bool:
        return self.marker == "pytest"

    @property
    def transcript(self) -> bool:
        return self.source.lstrip().startswith(">>> ")

    @property
    def is_async(self) -> bool:
        if self.pytest_module:
            return False
        if self.with_client or any(b.transcript for b in self.chain):
            return True
        return any(
            compile(b.source, b.where, "exec", flags=_FLAGS).co_flags & inspect.CO_COROUTINE
            for b in self.chain
        )


def page_blocks(text: str, page: str = "README.md") -> list[Block]:
    """Every ```python block of ``text``, with the marker comment just above it, if any."""
    blocks: list[Block] = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        last_line = before.rsplit("\n", 1)[-1]
        found = _MARKER.search(last_line)
        marker = found.group(1) if found else None
        line = text.count("\n", 0, match.start()) + 1
        chain = blocks[-1].chain if marker == "continue" and blocks else ()
        blocks.append(Block(line, match.group(1), marker, page, chain))
    return blocks


def _all_blocks() -> list[Block]:
    blocks = []
    for path in PAGES:
        page = path.relative_to(ROOT).as_posix()
        blocks.extend(page_blocks(path.read_text(encoding="utf-8"), page))
    return blocks


BLOCKS: Final = _all_blocks()
SYNC_BLOCKS: Final = [b for b in BLOCKS if b.skip_reason or not (b.is_async or b.pytest_module)]
ASYNC_BLOCKS: Final = [b for b in BLOCKS if not b.skip_reason and b.is_async]
PYTEST_BLOCKS: Final = [b for b in BLOCKS if not b.skip_reason and b.pytest_module]


def _ids(block: Block) -> str:
    return block.where


@pytest.fixture
def docs_env(
    oxen_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """An emulator in the environment, and a scratch working directory for saved files.

    A block may configure logging, as a reader would: the levels and the root handlers are
    put back afterwards, so that no other test runs with them.
    """
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers = root.handlers[:]
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = root.level
    yield tmp_path
    root.handlers[:] = handlers
    root.setLevel(root_level)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


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
    for part in block.chain:
        if part.transcript:
            for statement, expected in _transcript(part.source):
                await _check_statement(part, statement, expected, namespace)
            continue
        result = eval(_compile(part, part.source), namespace)  # noqa: S307 - the docs' own code
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
        result = eval(code, namespace)  # noqa: S307 - the docs' own code
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


def _tiered(blocks: list[Block]) -> list[Any]:
    """The blocks as parameters, one that starts a process (``subprocess``) marked slow."""
    slow = pytest.mark.slow
    return [
        pytest.param(b, marks=slow) if "subprocess" in "".join(p.source for p in b.chain) else b
        for b in blocks
    ]


@pytest.mark.parametrize("block", _tiered(SYNC_BLOCKS), ids=_ids)
def test_docs_block_runs(block: Block, docs_env: Path) -> None:
    """A synchronous block of a page runs to completion against the emulator."""
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for part in block.chain:
        exec(_compile(part, part.source), namespace)  # noqa: S102 - the docs' own code


@pytest.mark.anyio
@pytest.mark.parametrize("block", _tiered(ASYNC_BLOCKS), ids=_ids)
async def test_docs_async_block_runs(block: Block, docs_env: Path) -> None:
    """A block with top-level await runs to completion against the emulator, on asyncio and
    on trio."""
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    with anyio.fail_after(60):
        await _run_async(block, namespace)


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTEST_BLOCKS, ids=_ids)
def test_docs_test_module_passes(block: Block, tmp_path: Path) -> None:
    """A block that is a test module of the reader's own passes under pytest, in a fresh
    process with oxen-queue's plugin and nothing of this suite's configuration."""
    (tmp_path / "test_from_docs.py").write_text(block.source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OXEN_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_from_docs.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}"
    assert " passed" in done.stdout, done.stdout


def test_docs_blocks_nearly_all_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The pages have Python blocks, at most one in five is skipped, each with a reason, and
    every marker is one the harness knows; the counts are printed with the test run, page by
    page."""
    skipped = [b for b in BLOCKS if b.skip_reason]
    per_page = Counter(b.page for b in BLOCKS)
    skipped_per_page = Counter(b.page for b in skipped)
    lines = [
        f"{page}: {count} python blocks, {count - skipped_per_page[page]} run"
        + (f", {skipped_per_page[page]} skipped" if skipped_per_page[page] else "")
        for page, count in per_page.items()
    ]
    summary = (
        f"docs code: {len(BLOCKS)} python blocks on {len(per_page)} pages, "
        f"{len(BLOCKS) - len(skipped)} run, {len(skipped)} skipped"
        + "".join(f"\n  skipped {b.where}: {b.skip_reason}" for b in skipped)
        + "".join(f"\n  {line}" for line in lines)
    )
    with capsys.disabled():
        print(f"\n{summary}")
    assert per_page["README.md"] >= 1
    assert len(BLOCKS) >= 20
    assert len(skipped) * 5 <= len(BLOCKS), summary
    assert all(b.skip_reason != "no reason given" for b in skipped), summary
    unknown = [
        b.where for b in BLOCKS if b.marker and not b.skip_reason and b.marker not in _KNOWN_MARKERS
    ]
    assert not unknown, f"unknown docs-test markers at {unknown}"


def test_markers_and_transcripts_are_read_as_documented() -> None:
    """The harness's own parsing: markers apply to the fence right below them only, skip
    reasons are kept, the older ``readme-test`` spelling is read too, transcripts pair
    statements with what they print."""
    text = (
        "<!-- docs-test: skip (needs a GPU) -->\n```python\nx = 1\n```\n\n"
        "Some prose.\n<!-- readme-test: with client -->\n\n```python\n>>> 1 + 1\n2\n```\n"
        "```python\nawait f()\n```\n"
        "<!-- docs-test: pytest -->\n```python\ndef test_x() -> None: ...\n```\n"
    )
    first, second, third, fourth = page_blocks(text, "page.md")
    assert (first.line, first.skip_reason, first.is_async) == (2, "needs a GPU", False)
    assert second.marker == "with client"  # a blank line between comment and fence is fine
    assert second.transcript
    assert list(_transcript(second.source)) == [("1 + 1", "2")]
    assert (third.marker, third.is_async) == (None, True)
    assert (fourth.pytest_module, fourth.is_async, fourth.where) == (True, False, "page.md:17")
    first, second = page_blocks(
        "```python\nx = 1\n```\n<!-- docs-test: continue -->\n```python\nawait f(x)\n```\n"
    )
    assert second.chain == (first, second)
    assert (first.is_async, second.is_async) == (False, True)


def test_a_block_that_continues_runs_in_the_namespace_of_those_before_it() -> None:
    """``continue`` chains blocks: the later one sees what the earlier ones defined."""
    first, second, third = page_blocks(
        "```python\nx = 2\n```\n<!-- docs-test: continue -->\n```python\ny = x * 3\n```\n"
        "<!-- docs-test: continue -->\n```python\nassert (x, y) == (2, 6)\n```\n"
    )
    namespace: dict[str, Any] = {}
    for part in third.chain:
        exec(_compile(part, part.source), namespace)  # noqa: S102 - a literal above
    assert (namespace["x"], namespace["y"]) == (2, 6)
    assert third.chain == (first, second, third)


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
