"""Convert the reST left in the docstrings of ``src/`` to the Markdown mkdocstrings renders.

The docs site renders docstrings as Markdown (mkdocstrings, Google style), where reST's
cross-reference roles and literal blocks show as they are written: ``:meth:`close``` as a
colon, a word and a code span, and ``Example::`` as a paragraph ending in ``::`` above an
indented block. This script rewrites both, in place:

- A role (``:meth:``, ``:class:``, ``:func:``, ``:attr:``, ``:mod:``, ``:data:``, ``:exc:``,
  ``:obj:``, ``:const:``, with or without the ``py:`` domain, ``~`` and ``Title <target>``
  forms) becomes an autorefs link, ``[`close`][oxen_queue.Client.close]``, when its target is
  an object the site documents; otherwise a code span, ``` `close` ```. The target is looked
  up as Sphinx would: in the enclosing classes, the module (and what it imports), the package,
  then as written; a leading dot is relative to the module's package.
- A literal block (a paragraph ending in ``::``, then an indented block) becomes a fenced
  block: ```` ```python ```` when the block compiles as Python (top-level ``await``
  allowed), ```` ```text ```` otherwise. ``text::`` becomes ``text:``; a lone ``::`` goes.

What the site documents is read from its inventory (``objects.inv``): by default the script
builds the site into a temporary directory first (``mkdocs build``; the ``docs`` dependency
group), or ``--inventory PATH`` names one. A line that the longer link text pushes past the
line length is rewrapped, carrying the words over into the lines of its paragraph or entry.

Besides ``src/``, the template of the blocking ``Client``'s class docstring in
``.ci/codegen.py`` (``CLIENT_DOC``) is converted, so that the generated code agrees. After a
conversion, regenerate and check::

    uv run --group docs python .ci/docstrings.py
    uv run python .ci/codegen.py
    uv run ruff format . && uv run ruff check .
    NO_MKDOCS_2_WARNING=1 uv run --group docs mkdocs build --strict

``--check`` writes nothing: it lists every docstring that still holds a role or a literal
block, and exits 1 if there is one (0 otherwise); it needs no build. Roles in the docstring of
a documented object whose target is private are listed as well (not an error): the rendered
page would show a private name, so their wording wants a look.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
PACKAGE: Final = "oxen_queue"
LINE_LENGTH: Final = 100  # pyproject.toml's [tool.ruff] line-length
CODEGEN: Final = Path(".ci/codegen.py")
# Docstring text held in a constant of codegen.py, by the constant's name: the module and class
# whose docstring it becomes (for looking up targets), and the indentation it gets there (for
# the lines' lengths).
CODEGEN_DOCS: Final = {"CLIENT_DOC": (f"{PACKAGE}._sync_client", ("Client",), 4)}

ROLE: Final = re.compile(
    r"(?<![\w`]):(?:py:)?(?P<role>meth|class|func|attr|mod|data|exc|obj|const):"
    r"`(?P<tilde>~?)(?P<text>[^`]+)`"
)
_TITLED: Final = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_LITERAL_SPAN: Final = re.compile(r"``.+?``")
_FENCE: Final = re.compile(r"^\s*(```|~~~)")
_QUOTES: Final = re.compile(r"^(?P<prefix>[rRuU]?)(?P<quote>\"\"\"|'''|\"|')")
_ENTRY: Final = re.compile(r"^(?P<indent>\s*)\**[A-Za-z_][\w.]*(?:\s*\([^)]*\))?:\s+\S")
_BULLET: Final = re.compile(r"^(?P<indent>\s*)(?P<marker>[-*+]|\d+[.)])\s+\S")
_SECTION: Final = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_GOOGLE_SECTION: Final = re.compile(r"^\s*(Example|Examples|Note|Notes|Warning|Warnings)$")
_SPAN: Final = re.compile(r"\[`[^`]*`\]\[[^\]]*\]|``[^`]+``|`[^`]+`|\S")


# -- what the site documents ---------------------------------------------------------------


def read_inventory(path: Path) -> set[str]:
    """The names of a Sphinx inventory (version 2) that mkdocstrings wrote: every object the
    site documents, under its public path and its aliases."""
    data = path.read_bytes()
    parts = data.split(b"\n", 4)
    if not parts[0].startswith(b"# Sphinx inventory version 2") or len(parts) < 5:
        raise SystemExit(f"{path}: not a Sphinx inventory, version 2")
    names = set()
    for line in zlib.decompress(parts[4]).decode("utf-8").splitlines():
        fields = line.split(" ", 4)
        if len(fields) == 5 and fields[2] == "1":  # priority 1: the path the page shows
            names.add(fields[0])
    return names


def build_inventory(root: Path) -> set[str]:
    """Build the site into a temporary directory (not strict: the docstrings may be why it
    fails) and read its inventory."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", scratch],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        inventory = Path(scratch) / "objects.inv"
        if done.returncode != 0 or not inventory.exists():
            raise SystemExit(
                "could not build the docs site for its inventory (is the docs group installed? "
                f"uv run --group docs ...):\n{done.stderr}"
            )
        return read_inventory(inventory)


def _get(path: str) -> object | None:
    """The object at a dotted path, importing its modules; ``None`` if there is none.
    Class attributes are read without their descriptors (a property, not its value)."""
    parts = path.split(".")
    obj: object | None = None
    for index in range(len(parts), 0, -1):
        with contextlib.suppress(Exception):
            obj = importlib.import_module(".".join(parts[:index]))
            rest = parts[index:]
            break
    else:
        return None
    for name in rest:
        try:
            obj = inspect.getattr_static(obj, name)
        except AttributeError:
            return None
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
    return obj


@dataclass
class Resolver:
    """Finds the documented identifier of a role's target, as autorefs will resolve it."""

    documented: set[str]
    _public: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each documented object, by identity: a target found at any path (a private module,
        # an import) is linked under the path the site shows. Shorter paths first.
        for name in sorted(self.documented, key=lambda n: (n.count("."), n)):
            obj = _get(name)
            if obj is not None:
                self._public.setdefault(id(obj), []).append(name)

    def identifier(self, target: str, *, module: str, classes: tuple[str, ...]) -> str | None:
        """The documented identifier of ``target`` seen from ``module`` (inside ``classes``),
        or ``None`` when the site does not document it."""
        for path in self._candidates(target, module=module, classes=classes):
            found = self._documented_path(path)
            if found is not None:
                return found
        return None

    def shows(self, path: str) -> bool:
        """Whether the site shows the object at ``path`` (under any name)."""
        return self._documented_path(path) is not None

    def _candidates(self, target: str, *, module: str, classes: tuple[str, ...]) -> list[str]:
        if target.startswith("."):
            package = module.split(".")
            if not _is_package(module):
                package = package[:-1]
            dots = len(target) - len(target.lstrip("."))
            base = package[: len(package) - (dots - 1)] if dots > 1 else package
            return [".".join([*base, target.lstrip(".")])]
        scopes = [f"{module}.{'.'.join(classes[:depth])}" for depth in range(len(classes), 0, -1)]
        return [
            *(f"{scope}.{target}" for scope in scopes),
            f"{module}.{target}",
            f"{PACKAGE}.{target}",
            f"{PACKAGE}.testing.{target}",
            target,
        ]

    def _documented_path(self, path: str) -> str | None:
        if path in self.documented:
            return path
        parts = path.split(".")
        for index in range(len(parts), 0, -1):
            obj = _get(".".join(parts[:index]))
            if obj is None:
                continue
            names = self._public.get(id(obj), [])
            # Several names for one object (an alias, a small shared value): the one that ends
            # as the target does, else the shortest.
            names = sorted(names, key=lambda n: n.rsplit(".", 1)[-1] != parts[index - 1])
            for name in names:
                candidate = ".".join([name, *parts[index:]])
                if candidate in self.documented:
                    return candidate
            return None  # the object exists, and the site does not show it there
        return None


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return bool(spec and spec.submodule_search_locations)


# -- one docstring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """Where a docstring is: for looking targets up, and for its lines' lengths."""

    module: str
    classes: tuple[str, ...]
    first_column: int = 0  # the column of the docstring's first character, after the quotes
    closing: int = 0  # the length of the closing quotes, on the last line
    indent: int = 0  # the column of the literal: its lines' indentation, as PEP 257 has it
    owner: str = ""  # the dotted path of what the docstring documents
    shift: int = 0  # columns each line gains where the text ends up (codegen's templates)


def convert_text(
    text: str,
    *,
    context: Context,
    link: Callable[[str, Context], str | None],
) -> str:
    """``text`` (a docstring's source, between its quotes) with its literal blocks fenced and
    its roles turned into links or code spans, over-long lines rewrapped."""
    lines = text.split("\n")
    # The first line starts after the quotes: indented as the others while converting, so
    # that its paragraph, or the literal block it opens, is measured against theirs.
    # That is the literal's column (as PEP 257 and ruff have it), unless the text sits further
    # left (a template in a constant).
    pad = min([context.indent, *(_indent(line) for line in lines[1:] if line.strip())])
    lines[0] = " " * pad + lines[0]
    lines = _fence_literal_blocks(lines)
    before = list(lines)
    lines = _convert_roles(lines, context=context, link=link)
    changed = {index for index, (a, b) in enumerate(zip(before, lines, strict=True)) if a != b}
    shifted = Context(
        context.module,
        context.classes,
        context.first_column - pad,
        context.closing,
        pad,
        context.owner,
        context.shift,
    )
    lines = _rewrap(lines, changed, shifted)
    lines[0] = lines[0][pad:]
    return "\n".join(lines)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _fence_literal_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    in_fence = False
    while index < len(lines):
        line = lines[index]
        if _FENCE.match(line):
            in_fence = not in_fence
        stripped = line.rstrip()
        if in_fence or not stripped.endswith("::") or stripped.endswith(":::"):
            out.append(line)
            index += 1
            continue
        block_start = index + 1
        while block_start < len(lines) and not lines[block_start].strip():
            block_start += 1
        base = _indent(line)
        if (
            block_start == index + 1  # reST wants a blank line before the block
            or block_start >= len(lines)
            or _indent(lines[block_start]) <= base
        ):
            out.append(line)
            index += 1
            continue
        end = block_start
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        while end > block_start and not lines[end - 1].strip():
            end -= 1
        body = textwrap.dedent("\n".join(lines[block_start:end]))
        language = "python" if _compiles(body) else "text"
        head = stripped[:-2]
        # ``Example::`` would read as a Google section heading with nothing under it: the
        # block becomes the section's content, indented under the heading.
        section = _GOOGLE_SECTION.match(head) is not None
        pad = " " * (base + 4 if section else base)
        fenced = [f"{pad}```{language}", *(f"{pad}{b}" if b else "" for b in body.split("\n"))]
        fenced.append(f"{pad}```")
        if head.strip():
            out.append(head.rstrip() if head.endswith((" ", "\t")) else head + ":")
            if not section:
                out.append("")
        out.extend(fenced)
        index = end
    return out


def _compiles(code: str) -> bool:
    try:
        compile(code, "<docstring>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return False
    return True


def _convert_roles(
    lines: list[str], *, context: Context, link: Callable[[str, Context], str | None]
) -> list[str]:
    out = []
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        if in_fence or ":" not in line:
            out.append(line)
            continue
        pieces = []
        position = 0
        for span in _LITERAL_SPAN.finditer(line):  # ``:meth:`x` `` shows a role: leave it
            pieces.append(_roles_in(line[position : span.start()], context, link))
            pieces.append(span.group(0))
            position = span.end()
        pieces.append(_roles_in(line[position:], context, link))
        out.append("".join(pieces))
    return out


def _roles_in(text: str, context: Context, link: Callable[[str, Context], str | None]) -> str:
    def replace(match: re.Match[str]) -> str:
        written = match["text"].strip()
        titled = _TITLED.match(written)
        target = titled["target"].strip() if titled else written
        if titled:
            shown = titled["title"]
        elif match["tilde"]:
            shown = target.rsplit(".", 1)[-1]
        else:
            shown = target.lstrip(".")
        identifier = link(target, context)
        return f"[`{shown}`][{identifier}]" if identifier else f"`{shown}`"

    return ROLE.sub(replace, text)


def _rewrap(lines: list[str], changed: set[int], context: Context) -> list[str]:
    """Carry the words of each changed line past the line length over to the next line of its
    paragraph (or a new one), as far as needed."""
    lines = list(lines)
    index = 0
    while index < len(lines):
        if index in changed and _length(lines, index, context) > LINE_LENGTH:
            kept, carried = _split(lines[index], LINE_LENGTH - _offset(lines, index, context))
            if carried:
                continuation = _continuation_indent(lines, index)
                lines[index] = kept
                follower = index + 1
                if follower < len(lines) and _continues(lines, index, continuation):
                    lines[follower] = " " * continuation + carried + " " + lines[follower].lstrip()
                else:
                    lines.insert(follower, " " * continuation + carried)
                    changed = {i + 1 if i >= follower else i for i in changed}
                changed.add(follower)
        index += 1
    return lines


def _offset(lines: list[str], index: int, context: Context) -> int:
    """What the physical line holds besides ``lines[index]``: the quotes' column on the first
    line, the closing quotes on the last."""
    extra = context.shift + (context.first_column if index == 0 else 0)
    if index == len(lines) - 1:
        extra += context.closing
    return extra


def _length(lines: list[str], index: int, context: Context) -> int:
    return len(lines[index]) + _offset(lines, index, context)


def _split(line: str, width: int) -> tuple[str, str]:
    """``line`` cut at the last space that leaves it within ``width``, never inside a link or
    a code span: what stays, and what is carried (empty when no cut fits)."""
    indent = _indent(line)
    tokens = [(m.start(), m.end()) for m in _SPAN.finditer(line, indent)]
    words: list[tuple[int, int]] = []
    for start, end in tokens:  # glue tokens that touch into words
        if words and words[-1][1] == start:
            words[-1] = (words[-1][0], end)
        else:
            words.append((start, end))
    cut = None
    for position, (_start, end) in enumerate(words[:-1]):
        if end <= width:
            cut = position
    if cut is None:
        return line, ""
    kept_end = words[cut][1]
    return line[:kept_end], line[words[cut + 1][0] :].rstrip()


def _continuation_indent(lines: list[str], index: int) -> int:
    line = lines[index]
    following = lines[index + 1] if index + 1 < len(lines) else ""
    if following.strip() and _indent(following) > _indent(line) and _opens_item(line):
        return _indent(following)
    if _ENTRY.match(line) and _in_section(lines, index):
        return _indent(line) + 4
    bullet = _BULLET.match(line)
    if bullet:
        return _indent(line) + len(bullet["marker"]) + 1
    return _indent(line)


def _continues(lines: list[str], index: int, continuation: int) -> bool:
    following = lines[index + 1]
    return (
        bool(following.strip())
        and _indent(following) == continuation
        and not _FENCE.match(following)
        and not _BULLET.match(following)
        and not following.lstrip().startswith("|")
        and not _SECTION.match(following)
        and not (_ENTRY.match(following) and _in_section(lines, index + 1))
    )


def _opens_item(line: str) -> bool:
    return bool(_ENTRY.match(line) or _BULLET.match(line))


def _in_section(lines: list[str], index: int) -> bool:
    """Whether ``lines[index]`` sits under a Google section heading (``Args:``, ...)."""
    indent = _indent(lines[index])
    for previous in reversed(lines[:index]):
        if previous.strip() and _indent(previous) < indent:
            return bool(_SECTION.match(previous))
    return False


# -- files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A docstring in a file: where its literal is, and what surrounds it."""

    path: Path
    node: ast.Constant
    module: str
    classes: tuple[str, ...]
    owner: str
    """The dotted path of what it documents (for a function: the function)."""
    shift: int = 0
    """Columns each line gains where the text ends up (``CODEGEN_DOCS``)."""


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def docstrings(path: Path, module: str) -> Iterator[Found]:
    """Every string statement of a module (module, class and function docstrings, and the
    attribute docstrings mkdocstrings reads after an assignment)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def visit(node: ast.AST, classes: tuple[str, ...], owner: str) -> Iterator[Found]:
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.Expr)
                and isinstance(child.value, ast.Constant)
                and isinstance(child.value.value, str)
            ):
                yield Found(path, child.value, module, classes, owner)
            if isinstance(child, ast.ClassDef):
                yield from visit(child, (*classes, child.name), f"{owner}.{child.name}")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(child, classes, f"{owner}.{child.name}")
            else:
                yield from visit(child, classes, owner)

    yield from visit(tree, (), module)


def codegen_docs(path: Path) -> Iterator[Found]:
    """The constants of codegen.py that become docstrings (``CODEGEN_DOCS``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if (
            isinstance(target, ast.Name)
            and target.id in CODEGEN_DOCS
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            module, classes, shift = CODEGEN_DOCS[target.id]
            yield Found(path, node.value, module, classes, ".".join((module, *classes)), shift)


def all_docstrings(root: Path) -> Iterator[Found]:
    src = root / "src"
    for path in sorted(src.rglob("*.py")):
        yield from docstrings(path, module_name(path, src))
    if (root / CODEGEN).exists():
        yield from codegen_docs(root / CODEGEN)


def _literal(source_lines: list[str], node: ast.Constant) -> tuple[int, int, str]:
    """The literal's source: its start and end offsets in the file, and its text."""
    assert node.end_lineno is not None
    assert node.end_col_offset is not None
    starts = [0]
    for line in source_lines:
        starts.append(starts[-1] + len(line))
    # ast's columns count UTF-8 bytes: convert them to characters on their lines.
    first = source_lines[node.lineno - 1]
    last = source_lines[node.end_lineno - 1]
    start = starts[node.lineno - 1] + len(first.encode()[: node.col_offset].decode())
    end = starts[node.end_lineno - 1] + len(last.encode()[: node.end_col_offset].decode())
    return start, end, "".join(source_lines)[start:end]


def convert_file(path: Path, found: list[Found], link: Callable[[str, Context], str | None]) -> str:
    """The file's text with its docstrings converted."""
    source = path.read_text(encoding="utf-8")
    source_lines = source.splitlines(keepends=True)
    edits = []
    for item in found:
        start, end, literal = _literal(source_lines, item.node)
        quotes = _QUOTES.match(literal)
        if quotes is None:  # bytes, f-strings, implicit concatenation: not a docstring to touch
            continue
        opening = quotes.end()
        quote = quotes["quote"]
        body = literal[opening : len(literal) - len(quote)]
        column = start - source.rfind("\n", 0, start) - 1
        context = Context(
            item.module, item.classes, column + opening, len(quote), column, item.owner, item.shift
        )
        converted = convert_text(body, context=context, link=link)
        if converted != body:
            edits.append((start, end, literal[:opening] + converted + quote))
    for start, end, replacement in sorted(edits, reverse=True):
        source = source[:start] + replacement + source[end:]
    return source


# -- what is left ------------------------------------------------------------------------------


def pending(root: Path) -> list[str]:
    """``path:line: what`` for every docstring that still holds a role or a literal block."""
    left = []
    for item in all_docstrings(root):
        text = item.node.value
        assert isinstance(text, str)
        lines = text.split("\n")
        what = []
        if _fence_literal_blocks(lines) != lines:
            what.append("a literal block (::)")
        roles = {m.group(0) for line in _outside_fences(lines) for m in _roles_outside(line)}
        if roles:
            shown = ", ".join(sorted(roles)[:3]) + (" ..." if len(roles) > 3 else "")
            what.append(f"roles {shown}")
        if what:
            where = item.path.relative_to(root).as_posix()
            left.append(f"{where}:{item.node.lineno}: {'; '.join(what)}")
    return left


def _outside_fences(lines: list[str]) -> Iterator[str]:
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield line


def _roles_outside(line: str) -> Iterator[re.Match[str]]:
    yield from ROLE.finditer(_LITERAL_SPAN.sub(lambda m: " " * len(m.group(0)), line))


# -- the command -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any is left")
    parser.add_argument("--inventory", type=Path, help="the site's objects.inv (default: build it)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: this one)")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if args.check:
        left = pending(root)
        for line in left:
            print(line)
        print(f"{len(left)} docstrings hold reST roles or literal blocks" if left else "clean")
        return 1 if left else 0

    sys.path.insert(0, str(root / "src"))
    documented = read_inventory(args.inventory) if args.inventory else build_inventory(root)
    resolver = Resolver(documented)
    private_in_public: list[str] = []

    def link(target: str, context: Context) -> str | None:
        identifier = resolver.identifier(target, module=context.module, classes=context.classes)
        if identifier is None and _private(target) and resolver.shows(context.owner):
            private_in_public.append(f"{context.owner}: `{target}`")
        return identifier

    by_file: dict[Path, list[Found]] = {}
    for item in all_docstrings(root):
        by_file.setdefault(item.path, []).append(item)
    changed = 0
    for path, found in by_file.items():
        text = convert_file(path, found, link)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            changed += 1
    print(f"converted the docstrings of {changed} files")
    for line in sorted(set(private_in_public)):
        print(f"note: a documented object's docstring names a private target, {line}")
    left = pending(root)
    for line in left:
        print(f"left: {line}")
    return 1 if left else 0


def _private(target: str) -> bool:
    return any(part.startswith("_") for part in target.lstrip(".~").split(".") if part)


if __name__ == "__main__":
    sys.exit(main())
