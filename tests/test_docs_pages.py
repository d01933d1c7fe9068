"""The README and the docs pages as a newcomer meets them: what they open with, where their
links lead, and that what they say about the library agrees with it.

Fast checks on the Markdown sources; the built site is checked by ``test_docs_site.py`` and the
code blocks run in ``test_docs_code.py``.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest

import oxen_queue
import oxen_queue.asgi
import oxen_queue.testing

ROOT: Final = Path(__file__).resolve().parents[1]
README: Final = ROOT / "README.md"
DOCS: Final = ROOT / "docs"
PAGES: Final = [README, *sorted(DOCS.rglob("*.md"))]
GUIDES: Final = sorted((DOCS / "guides").glob("*.md"))

_FENCE: Final = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK: Final = re.compile(r"(?<!\])\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING: Final = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
_CODE_SPAN: Final = re.compile(r"(?<![`\[])`([A-Za-z_][\w.]*)`(?!\]\[)")
_AUTOREF: Final = re.compile(r"\]\[([\w.]+)\]")


def _prose(text: str) -> str:
    """``text`` without its fenced blocks (their lines kept, blank, so lines still count)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _slug(heading: str) -> str:
    """A heading's anchor, as GitHub and mkdocs' toc both make it for plain headings."""
    text = re.sub(r"`|\[([^\]]*)\]\[[^\]]*\]", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in _HEADING.findall(_prose(path.read_text(encoding="utf-8")))}


def _page(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_readme_opens_with_the_two_commands() -> None:
    """The README's first commands are the demo, then the tests, exactly as CI runs them."""
    first = _FENCE.search(README.read_text(encoding="utf-8"))
    assert first is not None
    assert first.group(1) == "bash"
    commands = [line.split("#", 1)[0].strip() for line in first.group(2).splitlines()]
    assert [c for c in commands if c][:2] == ["uv run oxen-queue demo", "uv run pytest"]


def test_the_readme_is_a_landing_page_that_links_every_guide() -> None:
    """At most 300 lines; it links the docs home, every guide, the changelog and the licence."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    targets = {target.split("#", 1)[0] for target in _LINK.findall(_prose(text))}
    wanted = {"docs/index.md", "CHANGELOG.md", "docs/license.md"}
    wanted |= {_page(guide) for guide in GUIDES}
    assert wanted - targets == set()


def test_the_readme_installs_from_a_checkout_or_a_wheel_only() -> None:
    """The package is not on the index yet: no install line names it bare."""
    text = README.read_text(encoding="utf-8") + (DOCS / "guides" / "getting-started.md").read_text(
        encoding="utf-8"
    )
    bare = re.findall(r"(?:uv add|pip install)\s+['\"]?oxen-queue\b", text)
    assert bare == []


@pytest.mark.parametrize("path", PAGES, ids=_page)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(path: Path) -> None:
    """Within the repository, as on GitHub: the file is there, and so is the heading an anchor
    names (links that leave docs/ lead to the repository on the built site)."""
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in _LINK.findall(_prose(text)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        missing_heading = (
            resolved.exists()
            and bool(anchor)
            and resolved.suffix == ".md"
            and anchor not in _anchors(resolved)
        )
        if not resolved.exists() or missing_heading:
            broken.append(target)
    assert broken == []


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / ".ci/mkdocs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_link_that_leaves_docs_leads_to_the_repository_on_the_site() -> None:
    """The site's hook sends links out of docs/ to the file in the repository, keeps links
    within docs/ for mkdocs to check, and leaves alone what would leave the repository."""
    outside_link = _hooks().outside_link
    repo = "https://github.com/o/r"
    assert outside_link("../README.md#install", page_path="index.md", repo_url=repo) == (
        f"{repo}/blob/main/README.md#install"
    )
    assert outside_link("../../examples/batch.py", page_path="guides/a.md", repo_url=repo) == (
        f"{repo}/blob/main/examples/batch.py"
    )
    assert outside_link("../../examples/", page_path="guides/a.md", repo_url=repo + "/") == (
        f"{repo}/tree/main/examples"
    )
    assert outside_link("../license.md", page_path="guides/a.md", repo_url=repo) is None
    assert outside_link("../../../etc/x", page_path="guides/a.md", repo_url=repo) is None


def test_the_docs_home_links_back_to_the_readme_commands() -> None:
    """The docs home sends a reader to the README's two commands (and shows them)."""
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    assert "(../README.md#the-two-commands)" in home
    assert "uv run oxen-queue demo\nuv run pytest\n" in home


@pytest.mark.parametrize("path", sorted(DOCS.rglob("*.md")), ids=_page)
def test_no_docs_page_names_a_private_module(path: Path) -> None:
    """Neither a ``:::`` directive nor the text names ``oxen_queue._something``: what a page
    documents is reached by its public path."""
    text = path.read_text(encoding="utf-8")
    assert re.findall(r"oxen_queue(?:\.\w+)*\._\w+", text) == []
    assert [d for d in re.findall(r"^:::\s*(\S+)", text, re.MULTILINE) if "._" in d] == []


def _public_objects() -> dict[str, object]:
    """Every public name a page may mention, by the identifier the reference gives it."""
    found: dict[str, object] = {}
    for module in (oxen_queue, oxen_queue.testing, oxen_queue.asgi):
        for name in module.__all__:
            if not name.startswith("_"):
                found.setdefault(name, f"{module.__name__}.{name}")
    return found


@pytest.mark.parametrize("path", [DOCS / "index.md", *GUIDES], ids=_page)
def test_each_guide_links_the_reference_entries_it_mentions(path: Path) -> None:
    """A public name in a code span (``AsyncClient``, ``Generation.updates``) is linked to its
    reference entry at least once on the page (autorefs: ``[`X`][oxen_queue.X]``)."""
    text = _prose(path.read_text(encoding="utf-8"))
    linked = set(_AUTOREF.findall(text))
    public = _public_objects()
    unlinked = set()
    for mention in _CODE_SPAN.findall(text):
        head, _, member = mention.partition(".")
        if head not in public:
            continue
        identifier = f"{public[head]}.{member}" if member else str(public[head])
        if member and not _documented_member(identifier):
            continue  # an attribute or a parameter, which has no entry of its own
        if identifier not in linked:
            unlinked.add(mention)
    assert sorted(unlinked) == []


def _documented_member(identifier: str) -> bool:
    """Whether the reference has an entry for it: a method or a property (fields and
    parameters are described in their class's entry)."""
    obj: object = oxen_queue
    for part in identifier.split(".")[1:]:
        obj = inspect.getattr_static(obj, part, None)
        if obj is None:
            return False
    return callable(obj) or isinstance(obj, property)


def test_the_error_tree_of_getting_started_is_the_library_s() -> None:
    """Every public error is drawn, each under its own base class, and nothing else is."""
    text = (DOCS / "guides" / "getting-started.md").read_text(encoding="utf-8")
    tree = next(m.group(2) for m in _FENCE.finditer(text) if m.group(2).startswith("OxenError"))
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in tree.splitlines():
        match = re.match(r"^([│ ]*)(?:[├└]── )?([A-Z]\w+Error)\b", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    errors = {
        name: obj
        for module in (oxen_queue, oxen_queue.asgi)
        for name in module.__all__
        if isinstance(obj := getattr(module, name), type)
        and issubclass(obj, oxen_queue.OxenError)
        and obj.__name__ == name  # PollTimeoutError is an alias, named in a note
    }
    assert len(parents) >= 20
    assert set(parents) == set(errors)
    for name, parent in parents.items():
        if parent is not None:
            assert errors[parent] in errors[name].__bases__, f"{name} is not a {parent}"


def test_the_licence_page_is_the_mit_licence_pyproject_declares() -> None:
    """``license = "MIT"`` in pyproject.toml, and the MIT text on the licence page."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    text = (DOCS / "license.md").read_text(encoding="utf-8")
    assert "MIT License" in text
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
