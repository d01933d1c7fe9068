"""What the command line shows is data (``oxen_queue._cli._shown``): markup is text, and no
control, bidi or other invisible character reaches the terminal raw. Property-based first,
then the rule that every way out of the CLI goes through the one owner."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, Final

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from oxen_queue._cli import _shown
from oxen_queue._cli._shown import DataConsole, DataLogHandler, json_line, shown

INVISIBLE_CATEGORIES: Final = ("Cc", "Cf", "Cs", "Zl", "Zp")
CLI_SOURCES: Final = Path(_shown.__file__).parent

# What hostile text is made of: markup, ANSI and OSC sequences, bidi overrides and isolates,
# zero-width and tag characters, C1 controls, Unicode line breaks, lone surrogates.
HOSTILE_PIECES: Final = (
    "[/]",
    "[bold]",
    "[/bold]",
    "[link=https://evil.test]x[/link]",
    ":ox:",
    "\\",
    "\x1b[31m",
    "\x1b[2J",
    "\x1b]8;;https://evil.test\x07",
    "\x1b]0;title\x07",
    "\x9b31m",
    "\x85",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u2028",
    "\U000e0041",
    "\x00",
    "\x7f",
    "\t",
    "\r",
    "\n",
    "\ud800",
    "\udfff",
)
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=8)), max_size=12
).map("".join)


def render(renderable: Any, *, console_class: type[Console] = Console) -> str:
    """What a console writes for ``renderable``: plain text, no wrapping, no colour codes."""
    file = io.StringIO()
    console = console_class(
        file=file, width=10_000, color_system=None, soft_wrap=True, highlight=False
    )
    console.print(renderable)
    return file.getvalue()


def escaped_by_category(text: str) -> str:
    """The rule, written from ``unicodedata`` alone (independent of the owner's class)."""
    out = []
    for char in text:
        if unicodedata.category(char) not in INVISIBLE_CATEGORIES:
            out.append(char)
        elif char in "\t\n\r":
            out.append(repr(char)[1:-1])
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def raw_invisible(text: str) -> set[str]:
    return {char for char in text if unicodedata.category(char) in INVISIBLE_CATEGORIES}


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(blacklist_categories=INVISIBLE_CATEGORIES)))
def test_shown_printable_text_renders_as_the_literal_input(text: str) -> None:
    """Printable text, markup and emoji codes included, renders exactly as it is: through
    ``shown`` and as a plain string given to the data console."""
    assert render(shown(text)) == text + "\n"
    assert render(text, console_class=DataConsole) == text + "\n"


@settings(max_examples=300)
@given(hostile_text)
def test_shown_escapes_every_control_bidi_and_invisible_character(text: str) -> None:
    """Any text: what reaches the terminal holds no raw control, format, separator or
    surrogate character (the final newline is the console's own), and each was replaced by
    its escape, as the categories of unicodedata say."""
    assert shown(text).plain == escaped_by_category(text)
    for output in (render(shown(text)), render(text, console_class=DataConsole)):
        assert output.endswith("\n")
        assert not raw_invisible(output[:-1])
        assert "\x1b" not in output


@settings(max_examples=100)
@given(hostile_text)
def test_shown_with_newlines_keeps_only_the_line_breaks(text: str) -> None:
    """For a block of text, ``\\n`` stays a line break and nothing else invisible is raw."""
    plain = shown(text, newlines=True).plain
    assert plain.count("\n") == text.count("\n")
    assert raw_invisible(plain) <= {"\n"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(json_values)
def test_json_line_is_printable_ascii_json_with_the_same_meaning(value: Any) -> None:
    """``status --json`` output: one line of printable ASCII, which the owner leaves as it
    is, and which decodes to what plain JSON of the value does (hostile strings included;
    JSON itself joins a high and a low surrogate into one character)."""
    line = json_line(value)
    assert all(" " <= char <= "~" for char in line)
    assert shown(line).plain == line
    assert json.loads(line) == json.loads(json.dumps(value))


# --- examples -------------------------------------------------------------------------------


def test_the_invisible_class_is_every_control_format_separator_and_surrogate() -> None:
    """The owner's precompiled class matches every code point of categories Cc, Cf, Cs, Zl
    and Zp in this Python's Unicode, and nothing else it knows (only code points a newer
    Unicode assigned may be in the class and unassigned here)."""
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    matched = set(_shown._INVISIBLE.findall(everything))
    wanted = {char for char in everything if unicodedata.category(char) in INVISIBLE_CATEGORIES}
    assert wanted <= matched
    assert {unicodedata.category(char) for char in matched - wanted} <= {"Cn"}


def test_markup_is_shown_literally_even_on_a_colour_terminal() -> None:
    """A terminal console with colours: text that is rich markup is printed as it is, with no
    style codes and no ``MarkupError`` (``[/]`` crashed ``batch`` before)."""
    file = io.StringIO()
    console = DataConsole(file=file, force_terminal=True, color_system="truecolor", width=200)
    console.print("[/] [bold]not bold[/bold] :ox:")
    console.print(shown("[red]not red[/]"))
    assert file.getvalue() == "[/] [bold]not bold[/bold] :ox:\n[red]not red[/]\n"


def test_data_console_shows_table_cells_titles_and_objects_as_data() -> None:
    """Strings in a table (title, headers, cells) and objects that are not renderables
    (a path) are shown by the owner too: escaped, never markup."""
    table = Table(title="[/]\x1b[2J")
    table.add_column("\u202eheader")
    table.add_row("[bold]\x1b]8;;https://evil.test\x07cell")
    output = render(table, console_class=DataConsole) + render(
        Path("out/\x1b[31mred.png"), console_class=DataConsole
    )
    assert "\x1b" not in output
    assert "\u202e" not in output
    assert "[/]\\x1b[2J" in output
    assert "\\u202eheader" in output
    assert "[bold]\\x1b]8;;https://evil.test\\x07cell" in output
    assert "out/\\x1b[31mred.png" in output


def test_log_handler_shows_a_message_as_data_and_keeps_a_traceback_whole() -> None:
    """``-v`` logs: a server's text in a record is escaped (its newline too); the traceback
    a record carries keeps its lines."""
    file = io.StringIO()
    console = DataConsole(file=file, width=10_000, color_system=None)
    handler = DataLogHandler(console=console, show_path=False, show_time=False)
    logger = logging.getLogger("oxen_queue.tests.shown")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refresh failed: %s", "[/]\x1b[2J\nFAKE LINE")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = file.getvalue()
    assert "refresh failed: [/]\\x1b[2J\\nFAKE LINE" in output
    assert "\x1b" not in output
    assert "Traceback (most recent call last):" in output
    assert "RuntimeError: boom" in output.splitlines()[-1]


# --- every way out goes through the owner ---------------------------------------------------

_MARKUP_TAG: Final = re.compile(
    r"\[/\]|\[/?(?:bold|dim|italic|underline|reverse|blink|strike|link|red|green|yellow|blue|"
    r"magenta|cyan|white|black)\b[^\]]*\]"
)
_MAKERS: Final = frozenset({"Console", "RichHandler", "Text", "escape"})
_TEXT_FACTORIES: Final = frozenset({"assemble", "from_markup", "from_ansi", "styled"})
_OWNERS: Final = frozenset({"_shown.py"})
_STREAMS: Final = frozenset({"sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__"})


def _problems(path: Path) -> list[str]:
    """How a module of the CLI could bypass the owner: a rich Console, log handler or Text
    made outside it, markup switched on, markup written in a string, or a bare print."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in ("rich.text", "rich.markup"):
            problems.append(f"{where}: imports {node.module}")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if name in _MAKERS or name == "print":
                problems.append(f"{where}: calls {name}()")
            if isinstance(func, ast.Attribute) and func.attr in _TEXT_FACTORIES:
                problems.append(f"{where}: calls .{func.attr}()")
            if isinstance(func, ast.Attribute) and ast.unparse(func.value) in _STREAMS:
                problems.append(f"{where}: writes to {ast.unparse(func.value)} directly")
            switches = [k.arg for k in node.keywords if k.arg in ("markup", "emoji")]
            problems.extend(f"{where}: passes {switch}=" for switch in switches)
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and _MARKUP_TAG.search(text):
            problems.append(f"{where}: markup in a string: {text[:40]!r}")
    return problems


def test_cli_modules_show_outside_text_only_through_the_owner() -> None:
    """Every module of the CLI but the owner prints only through the data consoles: none
    makes a rich Console, log handler or Text of its own, switches markup on, writes markup,
    or prints around them (``__init__`` alone writes, a fixed message, before rich loads)."""
    modules = sorted(CLI_SOURCES.glob("*.py"))
    assert {path.name for path in modules} >= {"_main.py", "_commands.py", "_run.py"}
    problems = [
        problem
        for path in modules
        if path.name not in _OWNERS
        for problem in _problems(path)
        if not (path.name == "__init__.py" and "writes to sys.stderr" in problem)
    ]
    assert problems == []
