"""What the command line shows is data: the one owner of how outside text reaches the terminal.

Everything the CLI prints that it did not write itself (a prompt, a file name, a server's
message, status, URL, id or row field, an exception's text) is shown by `shown`, and
the consoles the CLI prints through (`DataConsole`, the ``-v`` log handler
`DataLogHandler`) send every string they are given through it too, so a call site
that forgets cannot reintroduce the problem.

**What is shown as it is**: every printable character, rich markup included (``[bold]``,
``[/]`` are text, never styles, so no text can crash the display with ``MarkupError``),
emoji codes (``:ox:`` stays ``:ox:``), backslashes, and any script or emoji.

**What is made visible instead of being sent to the terminal**: C0 controls (U+0000-U+001F,
tab and newline included: a server's message cannot start a fake line of output), DEL, the
C1 controls (U+0080-U+009F, NEL and CSI included), the line and paragraph separators
U+2028/U+2029, lone surrogates (which no encoding can write), and the invisible format
characters (Unicode category Cf: the bidi embeddings, overrides and isolates U+202A-U+202E
and U+2066-U+2069, LRM/RLM/ALM, zero-width spaces and joiners, the BOM, soft hyphens, tag
characters...). Each is written as its escape: ``\\t``, ``\\n``, ``\\r``, ``\\x1b``,
``\\u202e``, ``\\U000e0001``. An ESC can then never start a terminal control sequence, and
a bidi override can never reorder what follows it (Trojan Source, CVE-2021-42574).

Only ``newlines=True`` keeps ``\\n`` as a line break, for multi-line text shown as a block (a
model's description, a traceback with ``-v``).

JSON output (``status --json``) is made safe in JSON's own syntax by `json_line`: ASCII
only, every other character as a ``\\u`` escape, so it stays valid JSON with the same meaning.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console, ConsoleRenderable, RichCast
from rich.logging import RichHandler
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import HighlighterType, JustifyMethod, OverflowMethod
    from rich.style import StyleType

__all__ = [
    "DataConsole",
    "DataLogHandler",
    "WarningLines",
    "assemble",
    "error_line",
    "json_line",
    "shown",
    "warning_line",
]

# Unicode categories Cc, Cf, Cs, Zl and Zp: Unicode 14's (Python 3.11's unicodedata), and the
# format controls Unicode 15 added (U+13439-U+1343F). Precompiled, not looked up per character:
# the summary of a large batch shows many prompts. A test compares the class with the running
# Python's unicodedata, and says when a newer Unicode adds to it.
_INVISIBLE: Final = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f"  # zero-width space, non-joiner, joiner; LRM, RLM
    "\u2028-\u202e"  # line and paragraph separators; bidi embeddings and overrides
    "\u2060-\u2064\u2066-\u206f"  # word joiner, invisible operators; bidi isolates
    "\ud800-\udfff"  # lone surrogates
    "\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"  # tag characters
    "]"
)
_INVISIBLE_BUT_NEWLINE: Final = re.compile(f"(?!\n){_INVISIBLE.pattern}")


_SHORT: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(value: object, style: StyleType = "", *, newlines: bool = False) -> Text:
    """``value`` as text to show: ``str(value)`` with the invisible characters escaped.

    The result is a rich `Text`, which rich never parses as markup. See the
    module for what is escaped.

    Args:
        value: What to show (a string, a path, a number, an exception...).
        style: A style of ours for all of it (``"red"``); never taken from ``value``.
        newlines: Keep ``\\n`` as a line break (for a block of text); escaped otherwise.
    """
    text = value if isinstance(value, str) else str(value)
    pattern = _INVISIBLE_BUT_NEWLINE if newlines else _INVISIBLE
    return Text(pattern.sub(_escape, text), style=style)


def assemble(*parts: object) -> Text:
    """One line assembled from parts, each shown by `shown`: a value, or a ``(value,
    style)`` pair styled with ``style`` (ours); a `Text` is taken as it is,
    having been made by `shown` already."""
    result = Text()
    for part in parts:
        if isinstance(part, Text):
            result.append_text(part)
        elif isinstance(part, tuple):
            value, style = part
            result.append_text(shown(value, style))
        else:
            result.append_text(shown(part))
    return result


def error_line(message: object) -> Text:
    """``error: message``, the one line every failure of the CLI ends with."""
    return assemble(("error:", "red"), " ", message)


def warning_line(message: object) -> Text:
    """``warning: message``, for what the CLI skipped or repaired and carried on."""
    return assemble(("warning:", "yellow"), " ", message)


def json_line(value: Any) -> str:
    """``value`` as one line of JSON in printable ASCII (every other character as a ``\\u``
    escape, DEL included, which JSON itself leaves raw): the same JSON, safe to show."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


class DataConsole(Console):
    """A rich console for which every string is data.

    Whatever a string reaches rich by (``print``, ``out``, a table cell or title, a live
    display), it is made a `Text` by `shown`: no markup, no emoji
    codes, no highlighting, no raw control or format characters. Styles are ours only, given
    as ``style=`` or in `assemble` pairs. Objects that are neither strings nor renderables
    (a path, a number) are shown as their ``str()``.
    """

    def render_str(
        self,
        text: str,
        *,
        style: str | StyleType = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        rendered = shown(text, style)
        rendered.justify = justify
        rendered.overflow = overflow
        return rendered

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*map(_renderable, objects), **options)


def _renderable(value: object) -> object:
    """Strings and renderables as they are (rich renders them, strings by ``render_str``);
    anything else shown as its ``str()``, which rich would print unescaped."""
    return value if isinstance(value, str | ConsoleRenderable | RichCast) else shown(value)


class DataLogHandler(RichHandler):
    """The ``-v`` log handler: a record's message is shown by `shown` (a server's text
    in a log line is data too); the traceback text a record may carry keeps its lines."""

    def render_message(self, record: logging.LogRecord, message: str) -> ConsoleRenderable:
        head = record.getMessage()
        if message.startswith(head):
            return assemble(shown(head), shown(message[len(head) :], newlines=True))
        return shown(message, newlines=True)


class WarningLines(logging.Handler):
    """The library's warnings and errors without ``-v``: one ``warning:`` line each, shown
    as data, with no traceback (``-v`` shows those)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(warning_line(record.getMessage()))
        except Exception:  # a handler never raises into the code that logged
            self.handleError(record)
