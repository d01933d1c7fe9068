"""The docs site, built as CI builds it (``mkdocs build --strict``), read as a visitor reads it.

What a visitor must never see: a raw reST role (``:meth:`close```, which mkdocstrings shows as
it is written), a paragraph ending in ``::`` (a reST literal block marker), or a private name of
the library (``_pytest_plugin``, ``oxen_queue._exceptions``). In code blocks of the guides, a
reader's own ``self._client`` is fine; everywhere else underscores that start a name are
flagged. Slow: a build takes several seconds; it needs the ``docs`` dependency group
(``uv sync --group docs``), and says so when it is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[1]
ROLE: Final = re.compile(r":(?:meth|class|func|attr|mod|data|exc|obj|const):")
# A name that starts with one underscore, not inside a word or a URL path (``/_emulator/``).
PRIVATE: Final = re.compile(r"(?<![\w/])_[a-z]\w*")

pytestmark = pytest.mark.slow


def build_site(root: Path, site: Path, *, env: dict[str, str] | None = None) -> None:
    """Build ``root``'s docs into ``site`` as CI does, warnings as errors."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env={**(env or os.environ), "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class _Page(HTMLParser):
    """A page's visible text, in pieces marked as inside a ``<pre>`` or not, and its
    paragraphs."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[tuple[str, bool]] = []
        self.paragraphs: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._paragraph: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag == "pre":
            self._pre += 1
        elif tag == "p":
            self._paragraph = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1
        elif tag == "pre":
            self._pre -= 1
        elif tag == "p" and self._paragraph is not None:
            self.paragraphs.append("".join(self._paragraph))
            self._paragraph = None

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.pieces.append((data, self._pre > 0))
        if self._paragraph is not None:
            self._paragraph.append(data)


def page_problems(site: Path) -> dict[str, list[str]]:
    """What each built page shows that it must not, by page (pages without any left out)."""
    problems: dict[str, list[str]] = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        name = path.relative_to(site).as_posix()
        text = "".join(piece for piece, _ in page.pieces)
        # A guide's code blocks are the reader's own code; the reference shows only ours.
        checked = text if name.startswith("reference/") else _outside_pre(page)
        found = [f"role {m.group(0)}" for m in ROLE.finditer(text)]
        found += [f"literal marker: {p.strip()[-60:]!r}" for p in page.paragraphs if _marks(p)]
        found += [f"private name {n}" for n in sorted(set(PRIVATE.findall(checked)))]
        if found:
            problems[name] = found
    return problems


def _outside_pre(page: _Page) -> str:
    return "".join(piece for piece, in_pre in page.pieces if not in_pre)


def _marks(paragraph: str) -> bool:
    return paragraph.rstrip().endswith("::")


def _pending_docstrings() -> list[str]:
    spec = importlib.util.spec_from_file_location("docstrings_check", ROOT / ".ci/docstrings.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    pending: list[str] = module.pending(ROOT)
    return pending


def test_no_docstring_holds_rest() -> None:
    """Every docstring of ``src/`` is Markdown: no reST role, no literal block
    (``.ci/docstrings.py`` converts what a change brings in)."""
    assert _pending_docstrings() == []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs dependency group is not installed")
    site = tmp_path_factory.mktemp("site")
    build_site(ROOT, site)
    return site


def test_no_page_shows_a_private_name(site: Path) -> None:
    """Neither the reference (module paths, table of contents, signatures) nor the guides'
    prose shows a name of the library's private modules or functions."""
    private = {
        page: [p for p in found if p.startswith("private")]
        for page, found in page_problems(site).items()
    }
    assert {page: found for page, found in private.items() if found} == {}


def test_no_guide_shows_a_raw_role_or_a_literal_marker(site: Path) -> None:
    """The pages written in Markdown (home, guides, licence) have no reST left in them."""
    problems = {
        page: [p for p in found if not p.startswith("private")]
        for page, found in page_problems(site).items()
        if not page.startswith("reference/")
    }
    assert {page: found for page, found in problems.items() if found} == {}


def test_no_page_shows_a_raw_role_or_a_literal_marker(site: Path) -> None:
    """The reference shows no reST either: its docstrings were converted to Markdown."""
    problems = {
        page: [p for p in found if not p.startswith("private")]
        for page, found in page_problems(site).items()
    }
    assert {page: found for page, found in problems.items() if found} == {}


def test_every_guide_is_built_and_links_out_of_docs_lead_to_the_repository(site: Path) -> None:
    """Each page of docs/guides/ is on the site; a link from a page to a file outside docs/
    (the README's commands, the changelog) leads to that file in the repository."""
    for guide in sorted((ROOT / "docs" / "guides").glob("*.md")):
        assert (site / "guides" / guide.stem / "index.html").exists(), guide.name
    home = (site / "index.html").read_text(encoding="utf-8")
    repository = "https://github.com/oxen-queue/oxen-queue/blob/main"
    assert f'href="{repository}/README.md#the-two-commands"' in home
    assert f'href="{repository}/CHANGELOG.md"' in home
