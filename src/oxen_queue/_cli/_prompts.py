"""Prompts files: what ``batch`` and ``demo`` read, and what they refuse.

A prompts file holds one request per line: plain text is a prompt; a line starting with ``{``
is a JSON object of parameters (``{"prompt": "...", "resolution": "1024x1024"}``, optionally
with its own ``"model"``). Blank lines and ``#`` comments are skipped. :func:`read_prompts` is
the one reader; its docstring says exactly what it accepts and refuses.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._files import describe

__all__ = ["PromptLine", "PromptsFileError", "decode_prompts", "read_prompts"]

# The byte order marks a prompts file may start with, longest first: UTF-32's little-endian
# mark begins with UTF-16's.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Surrounding whitespace, and the byte order marks that concatenated files leave at the start
# of a line (U+FEFF is no whitespace to str.strip).
_EDGES: Final = re.compile(r"\A[\s\ufeff]+|[\s\ufeff]+\Z")


class PromptsFileError(ValueError):
    """A prompts file that cannot be used: the message starts with ``FILE:LINE:`` (or
    ``FILE:`` when no line is to blame). Nothing is sent (exit status 2)."""


@dataclass(frozen=True, slots=True)
class PromptLine:
    """One request of a prompts file.

    Attributes:
        number: Its 1-based line number (for messages only).
        params: Its parameters (``prompt`` and any others), without ``model``.
        model: Its own model, when the line names one.
        occurrence: How many identical requests come before it in the file.
    """

    number: int
    params: dict[str, Any]
    model: str | None = None
    occurrence: int = 0

    @property
    def digest(self) -> str:
        content = json.dumps([self.model, self.params], sort_keys=True)
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """Identifies the request across runs by its content, not its position: adding a
        comment or a prompt above it must not make a rerun enqueue (and bill) it again.
        Identical requests are told apart by their order."""
        return f"{self.digest}#{self.occurrence}"

    @property
    def prompt(self) -> str:
        return str(self.params.get("prompt", ""))


def read_prompts(path: Path) -> list[PromptLine]:
    """Read a prompts file (see :func:`decode_prompts` for what it accepts).

    Raises:
        PromptsFileError: The file cannot be read, or :func:`decode_prompts` refuses it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptsFileError(f"cannot read the prompts file {describe(exc)}") from None
    return decode_prompts(data, name=str(path))


def decode_prompts(data: bytes, *, name: str) -> list[PromptLine]:
    """The requests of a prompts file's bytes.

    **Accepted**: UTF-8, with or without a byte order mark (the mark is not part of the first
    line); UTF-16 or UTF-32 with their byte order mark. Lines end at ``\\n`` (or ``\\r\\n``)
    only: U+2028, U+2029, NEL, VT, FF and FS/GS/RS are characters of a prompt, never line
    ends (``str.splitlines`` would split one request into several). Each line is stripped of
    surrounding whitespace and byte order marks (which concatenated files leave at a line's
    start); blank lines and lines starting with ``#`` are skipped. A line
    starting with ``{`` is a JSON object with a string ``prompt`` (and an optional string
    ``model``); any other line is a prompt.

    **Refused**, naming the line (``name:LINE: why``), before anything is sent: bytes that
    are not text in the file's encoding; a NUL character in a line (also as ``\\u0000`` in
    a JSON line), or an unpaired surrogate in a JSON line's strings (no text, nothing an API
    can take); a JSON line that is malformed, too deeply nested, not an object, without a
    string ``prompt``, or with a ``model`` that is not a string.

    Args:
        data: The file's bytes.
        name: The file's name, for messages.

    Raises:
        PromptsFileError: Refused, as above.
    """
    text = _decode(data, name)
    lines: list[PromptLine] = []
    seen: Counter[str] = Counter()
    for number, raw in enumerate(text.split("\n"), start=1):
        if "\x00" in raw:
            raise PromptsFileError(
                f"{name}:{number}: holds a NUL character (not text, or UTF-16 without its "
                "byte order mark?)"
            )
        stripped = _EDGES.sub("", raw)
        if not stripped or stripped.startswith("#"):
            continue
        if not stripped.startswith("{"):
            lines.append(_counted(PromptLine(number, {"prompt": stripped}), seen))
            continue
        lines.append(_counted(_json_line(stripped, number, name), seen))
    return lines


def _decode(data: bytes, name: str) -> str:
    """The text of a prompts file, its byte order mark dropped."""
    encoding = next((codec for bom, codec in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode(encoding, errors="replace")
        number = prefix.count("\n") + 1
        if encoding == "utf-8":
            byte = data[exc.start]
            raise PromptsFileError(
                f"{name}:{number}: not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"
            ) from None
        shown = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
        raise PromptsFileError(f"{name}:{number}: not {shown} text ({exc.reason})") from None


def _json_line(text: str, number: int, name: str) -> PromptLine:
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptsFileError(f"{name}:{number}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # a number past int's limit, deep nesting
        raise PromptsFileError(f"{name}:{number}: not usable JSON ({exc})") from None
    if not isinstance(params, dict) or not isinstance(params.get("prompt"), str):
        raise PromptsFileError(f'{name}:{number}: a JSON line needs a string "prompt"')
    problem = _untextual(params)
    if problem is not None:
        raise PromptsFileError(f"{name}:{number}: {problem}")
    model = params.pop("model", None)
    if model is not None and not isinstance(model, str):
        raise PromptsFileError(f'{name}:{number}: "model" must be a string')
    return PromptLine(number, params, model)


def _untextual(value: object) -> str | None:
    """What makes a JSON value's strings (keys included) no text to send, if anything."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "holds a NUL character (\\u0000)"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"holds an unpaired surrogate (\\u{ord(item[exc.start]):04x})"
    return None


def _counted(line: PromptLine, seen: Counter[str]) -> PromptLine:
    occurrence = seen[line.digest]
    seen[line.digest] += 1
    return dataclasses.replace(line, occurrence=occurrence) if occurrence else line
