"""``.ci/docstrings.py``: reST roles and literal blocks in docstrings become the Markdown that
mkdocstrings renders, and ``--check`` says what is left.

The unit tests feed it docstring text; the last test converts a copy of the checkout as the
lead will convert the real one, regenerates the blocking client, and builds the site from the
copy (slow: a docs build, twice).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "docstrings.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docstrings_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


docstrings = _load()

KNOWN = {
    "Client": "oxen_queue.Client",
    "close": "oxen_queue.Client.close",
    "oxen_queue.Generation": "oxen_queue.Generation",
    "Generation.updates": "oxen_queue.Generation.updates",
}


def _link(target: str, context: Any) -> str | None:
    del context
    return KNOWN.get(target)


def convert(text: str, *, indent: int = 4, first_column: int = 7, closing: int = 0) -> str:
    context = docstrings.Context(
        "oxen_queue._x", ("Client",), first_column, closing, indent, "oxen_queue._x.Client"
    )
    result: str = docstrings.convert_text(text, context=context, link=_link)
    return result


def test_a_role_whose_target_the_site_documents_becomes_a_link() -> None:
    """Each form of role: plain, ``~`` (the last part shown), titled, with the ``py:`` domain."""
    assert convert("See :class:`Client`.") == "See [`Client`][oxen_queue.Client]."
    assert convert(":meth:`~Generation.updates`") == "[`updates`][oxen_queue.Generation.updates]"
    assert convert(":class:`the handle <oxen_queue.Generation>`") == (
        "[`the handle`][oxen_queue.Generation]"
    )
    assert convert(":py:meth:`close`") == "[`close`][oxen_queue.Client.close]"


def test_a_role_whose_target_is_not_documented_becomes_a_code_span() -> None:
    """Private or foreign targets: a code span, the leading dots of a relative path dropped."""
    assert convert(":func:`._money.amount` and :class:`~decimal.Decimal`") == (
        "`_money.amount` and `Decimal`"
    )
    assert convert(":data:`MAX_STEM`") == "`MAX_STEM`"


def test_roles_shown_as_code_and_in_code_blocks_are_left_as_they_are() -> None:
    """A role inside a literal span or a fenced block is text someone meant to show."""
    text = "Write ``:meth:`close``` in reST.\n\n```python\nx = ':class:`Client`'\n```"
    assert convert(text) == text


def test_a_literal_block_becomes_a_fenced_block_in_the_language_it_compiles_as() -> None:
    """``text::`` keeps one colon; Python (top-level await allowed) is ``python``, a drawing is
    ``text``; the block is dedented to the paragraph's indentation."""
    text = "Use it so::\n\n        async with Client() as client:\n            ...\n\n    After."
    assert convert(text) == (
        "Use it so:\n\n    ```python\n    async with Client() as client:\n        ...\n"
        "    ```\n\n    After."
    )
    tree = "The tree::\n\n        Base\n        └── Child\n"
    assert convert(tree, indent=4) == "The tree:\n\n    ```text\n    Base\n    └── Child\n    ```\n"


def test_a_lone_marker_goes_and_a_spaced_one_leaves_no_colon() -> None:
    """``::`` alone on its line is dropped; ``text ::`` drops its marker entirely."""
    lone = "Intro.\n\n    ::\n\n        x = 1\n"
    assert convert(lone) == "Intro.\n\n    ```python\n    x = 1\n    ```\n"
    spaced = "Like this ::\n\n        x = 1\n"
    assert convert(spaced).startswith("Like this\n\n    ```python\n")


def test_an_example_section_keeps_its_block_under_its_heading() -> None:
    """``Example::`` would be a Google section with nothing in it: the block is its content."""
    text = "Summary.\n\n    Example::\n\n        print(1)\n    "
    assert (
        convert(text)
        == "Summary.\n\n    Example:\n        ```python\n        print(1)\n        ```\n    "
    )


def test_a_line_the_link_makes_too_long_is_rewrapped_into_its_paragraph() -> None:
    """Words past the line length go to the next line of the same paragraph, and so on; no
    line ends up longer than the limit, no word is lost, a link is never cut."""
    words = "word " * 15
    text = (
        f"First line.\n\n    Some {words}:class:`Client` and more\n"
        f"    {words}end.\n\n    Next paragraph."
    )
    result = convert(text)
    lines = result.split("\n")
    assert all(len(line) <= docstrings.LINE_LENGTH for line in lines)
    assert result.split() == convert(text.replace("\n    ", " ")).split()  # the same words
    assert "[`Client`][oxen_queue.Client]" in result
    assert lines[-1] == "    Next paragraph."


def test_an_argument_entry_wraps_under_its_own_indentation() -> None:
    """In an ``Args:`` section, an entry's words carry over to its continuation lines (8
    spaces), never into the next entry."""
    long = "a " * 38
    text = (
        f"Summary.\n\n    Args:\n        name: {long}:class:`Client`.\n        other: Kept.\n    "
    )
    lines = convert(text).split("\n")
    assert lines[3].startswith("        name: ")
    assert lines[4].startswith("            ")
    assert "[`Client`][oxen_queue.Client]" in lines[4]
    assert lines[5] == "        other: Kept."


def test_the_first_line_counts_the_quotes_before_it() -> None:
    """The summary line shares its physical line with the opening quotes (and the closing ones
    on a one-line docstring): both count against the line length."""
    summary = "x " * 40 + ":class:`Client`."
    result = convert(summary, indent=8, first_column=11, closing=3)
    first, second = result.split("\n")
    assert 11 + len(first) <= docstrings.LINE_LENGTH
    assert second.startswith("        ")
    assert len(second) + 3 <= docstrings.LINE_LENGTH


@pytest.mark.slow
def test_check_lists_what_is_left_and_passes_once_converted(tmp_path: Path) -> None:
    """``--check`` names each docstring holding a role or a literal block, exits 1, writes
    nothing; converted with an inventory, the tree is clean."""
    package = tmp_path / "src" / "pkgdoc"
    package.mkdir(parents=True)
    module = package / "__init__.py"
    module.write_text(
        textwrap.dedent(
            '''\
            """A package.

            Use :func:`helper` so::

                helper()
            """

            from __future__ import annotations


            def helper() -> None:
                """Help; see :class:`int`."""
            '''
        ),
        encoding="utf-8",
    )
    before = module.read_text(encoding="utf-8")
    left = docstrings.pending(tmp_path)
    assert [line.split(":")[1] for line in left] == ["1", "12"]
    assert "a literal block (::)" in left[0]
    assert "roles :class:`int`" in left[1]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert module.read_text(encoding="utf-8") == before

    inventory = tmp_path / "objects.inv"
    _write_inventory(inventory, ["pkgdoc.helper py:function 1 reference/#$ -"])
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path), "--inventory", str(inventory)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = module.read_text(encoding="utf-8")
    assert "Use [`helper`][pkgdoc.helper] so:\n\n```python\nhelper()\n```\n" in text
    assert '"""Help; see `int`."""' in text
    assert docstrings.pending(tmp_path) == []


def _write_inventory(path: Path, lines: list[str]) -> None:
    import zlib

    header = b"# Sphinx inventory version 2\n# Project: x\n# Version: 0\n# zlib\n"
    path.write_bytes(header + zlib.compress(("\n".join(lines) + "\n").encode()))


@pytest.mark.slow
def test_a_converted_copy_of_the_checkout_builds_clean_and_stays_consistent(
    tmp_path: Path,
) -> None:
    """As the lead will run it: convert a copy of the checkout (its inventory from a build),
    regenerate the blocking client; then ``--check``, ``codegen --check``, ruff and a strict
    docs build all pass, and the built pages show no reST role, no ``::`` paragraph and no
    private name."""
    pytest.importorskip("mkdocs", reason="the docs dependency group is not installed")
    from tests.test_docs_site import build_site, page_problems

    copy = tmp_path / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = copy / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "NO_MKDOCS_2_WARNING": "1"}

    def run(*command: str) -> str:
        done = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, check=False, timeout=600
        )
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    python = sys.executable
    converted = run(python, ".ci/docstrings.py", "--root", str(copy))
    assert "converted the docstrings of" in converted
    run(python, ".ci/codegen.py", "--root", str(copy))
    run(python, ".ci/docstrings.py", "--root", str(copy), "--check")
    run(python, ".ci/codegen.py", "--root", str(copy), "--check")
    ruff = shutil.which("ruff", path=str(Path(python).parent)) or "ruff"
    run(ruff, "format", "--check", "--no-cache", ".")
    run(ruff, "check", "--no-cache", ".")
    site = tmp_path / "site"
    build_site(copy, site, env=env)
    problems = page_problems(site)
    assert problems == {}, problems
    # The conversion did something: the reference links where roles were.
    clients = (site / "reference" / "clients" / "index.html").read_text(encoding="utf-8")
    assert 'href="#oxen_queue.Client.close"' in clients
