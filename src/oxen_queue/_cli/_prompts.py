"""Prompts files: what ``batch`` and ``demo`` read, and what they refuse.

Three formats, one request per record:

- ``text`` (the default): one request per line. Plain text is a prompt; a line starting with
  ``{`` is a JSON object of parameters (``{"prompt": "...", "resolution": "1024x1024"}``,
  optionally with its own ``"model"``). Blank lines and ``#`` comments are skipped.
- ``jsonl`` (JSON Lines; a ``.jsonl`` or ``.ndjson`` file): every non-blank line is such a
  JSON object.
- ``csv`` (a ``.csv`` file): a header row naming a ``prompt`` column, then one request per
  row (see `_csv_requests`).

A file is read as a stream, in blocks: memory does not grow with its length. Standard input
(``-``) is read the same way. `PromptsReader` is the one reader; `decode_text`
and `_csv_requests` say exactly what each format accepts and refuses.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

from ._files import describe

__all__ = [
    "FORMATS",
    "STDIN",
    "PromptLine",
    "PromptsFileError",
    "PromptsFormat",
    "PromptsReader",
    "decode_prompts",
    "read_prompts",
]

PromptsFormat = Literal["text", "jsonl", "csv"]
FORMATS: Final[tuple[PromptsFormat, ...]] = ("text", "jsonl", "csv")
STDIN: Final = "-"
"""The name that reads standard input."""

_BLOCK: Final = 1 << 20  # bytes read at a time

# The byte order marks a prompts file may start with, longest first: UTF-32's little-endian
# mark begins with UTF-16's.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_LONGEST_BOM: Final = max(len(bom) for bom, _ in _BOMS)

# Surrounding whitespace (every character str.isspace takes, as of Unicode 14; a test checks
# the list against the running Python), and the byte order marks that concatenated files
# leave at the start of a line (U+FEFF is no whitespace to str.strip).
_EDGES: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)

# CSV cells read as JSON values rather than text (a number, true, false): what a parameter
# column needs for `duration`, `generate_audio`, `cfg_scale`.
_JSON_WORDS: Final = frozenset({"true", "false"})


class PromptsFileError(ValueError):
    """A prompts file that cannot be used: the message starts with ``FILE:LINE:`` (or
    ``FILE:`` when no line is to blame). Nothing is sent (exit status 2)."""


def _digest(model: str | None, params: dict[str, Any]) -> int:
    # The key's first 64 bits, as the manifest writes them (16 hex digits): the same text
    # hashed as ever, so manifests of earlier versions resume.
    content = json.dumps([model, params], sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(content).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class PromptLine:
    """One request of a prompts file.

    Attributes:
        number: Its 1-based line number (for messages only; a CSV row's first line).
        params: Its parameters (``prompt`` and any others), without ``model``.
        model: Its own model, when the line names one.
        occurrence: How many identical requests come before it in the file.
        digest: Its content's hash (64 bits): what identifies it across runs.
    """

    number: int
    params: dict[str, Any]
    model: str | None = None
    occurrence: int = 0
    digest: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", _digest(self.model, self.params))

    @property
    def key(self) -> str:
        """Identifies the request across runs by its content, not its position: adding a
        comment or a prompt above it must not make a rerun enqueue (and bill) it again.
        Identical requests are told apart by their order."""
        return f"{self.digest:016x}#{self.occurrence}"

    @property
    def prompt(self) -> str:
        return str(self.params.get("prompt", ""))


Occurrences = Callable[[int], int]
"""Given a request's digest, how many identical requests came before it (counting it)."""


def counter() -> Occurrences:
    """An `Occurrences` that keeps one small count per distinct request."""
    seen: dict[int, int] = {}

    def occurrence(digest: int) -> int:
        count = seen.get(digest, 0)
        seen[digest] = count + 1
        return count

    return occurrence


def detect_format(name: str) -> PromptsFormat:
    """The format a file's name says: ``csv`` for ``.csv``, ``jsonl`` for ``.jsonl`` and
    ``.ndjson``, ``text`` for anything else (standard input included)."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "text"


class PromptsReader:
    """A prompts file (or standard input), read as a stream of requests.

    **Accepted**, in every format: UTF-8, with or without a byte order mark (the mark is not
    part of the first line); UTF-16 or UTF-32 with their byte order mark. Lines end at
    ``\\n`` (or ``\\r\\n``) only: U+2028, U+2029, NEL, VT, FF and FS/GS/RS are characters of
    a prompt, never line ends (``str.splitlines`` would split one request into several).

    **Refused**, naming the line (``name:LINE: why``): bytes that are not text in the file's
    encoding; a NUL character in a line (also as ``\\u0000`` in a JSON value), or an unpaired
    surrogate in a JSON line's strings (no text, nothing an API can take); and what each
    format refuses (`decode_text`, `_csv_requests`). A refusal is raised when
    the reader reaches the line: a run reads the whole file once before it sends anything.

    Args:
        name: A path, or ``-`` for standard input.
        prompts_format: ``text``, ``jsonl`` or ``csv``; ``None`` for what the name says
            (`detect_format`).
    """

    def __init__(
        self,
        name: str,
        *,
        prompts_format: PromptsFormat | None = None,
        stream: IO[bytes] | None = None,
    ) -> None:
        self.name = "<stdin>" if name == STDIN else name
        self.path = None if name == STDIN else Path(name)
        self.format: PromptsFormat = prompts_format or detect_format(name)
        self._stream = stream

    def replay(self, stream: IO[bytes]) -> PromptsReader:
        """The same prompts, read from ``stream`` (a copy of standard input)."""
        reader = PromptsReader(self.name, prompts_format=self.format, stream=stream)
        reader.path = self.path
        return reader

    @property
    def is_stdin(self) -> bool:
        return self.path is None and self._stream is None

    def requests(
        self, occurrences: Occurrences | None = None, *, tee: IO[bytes] | None = None
    ) -> Iterator[PromptLine]:
        """Each request, in order, with its occurrence set.

        Args:
            occurrences: Counts identical requests (a fresh `counter` when ``None``).
            tee: A file that gets a copy of every byte read (to read standard input again).

        Raises:
            PromptsFileError: The file cannot be read, or a line is refused.
        """
        occurrence = occurrences or counter()
        with self._open() as stream:
            blocks = _blocks(stream, tee, self.name)
            lines = _decoded_lines(blocks, self.name)
            if self.format == "csv":
                found = _csv_requests(lines, self.name)
            else:
                found = self.decode_text(lines, strict=self.format == "jsonl")
            for line in found:
                count = occurrence(line.digest)
                yield dataclasses.replace(line, occurrence=count) if count else line

    def _open(self) -> AbstractContextManager[IO[bytes]]:
        if self._stream is not None:
            return nullcontext(self._stream)
        if self.path is None:
            return nullcontext(sys.stdin.buffer)  # read, never closed
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise PromptsFileError(f"cannot read the prompts file {describe(exc)}") from None

    def decode_text(
        self, lines: Iterable[tuple[int, str]], *, strict: bool
    ) -> Iterator[PromptLine]:
        """The requests of a ``text`` (or, ``strict``, ``jsonl``) file's lines.

        ``text``: each line is stripped of surrounding whitespace and byte order marks
        (which concatenated files leave at a line's start); blank lines and lines starting
        with ``#`` are skipped. A line starting with ``{`` is a JSON object with a string
        ``prompt`` (and an optional string ``model``); any other line is a prompt.
        ``jsonl``: blank lines are skipped; every other line must be such an object.

        **Refused**: a JSON line that is malformed, too deeply nested, not an object, without
        a string ``prompt``, or with a ``model`` that is not a string.
        """
        name = self.name
        for number, raw in lines:
            stripped = raw.strip(_EDGES)
            if not stripped:
                continue
            if not stripped.startswith("{"):
                if strict:
                    raise PromptsFileError(
                        f"{name}:{number}: not a JSON object (a JSON Lines file holds one "
                        "per line; --input-format text takes plain prompts and comments)"
                    )
                if stripped.startswith("#"):
                    continue
                params = {"prompt": stripped}
                yield PromptLine(number, params, None, 0, _digest(None, params))
                continue
            yield _json_line(stripped, number, name)


def _blocks(stream: IO[bytes], tee: IO[bytes] | None, name: str) -> Iterator[bytes]:
    while True:
        try:
            block = stream.read(_BLOCK)
        except OSError as exc:
            raise PromptsFileError(f"cannot read {name}: {describe(exc, named=False)}") from None
        if not block:
            return
        if tee is not None:
            tee.write(block)
        yield block


def _decoded_lines(blocks: Iterator[bytes], name: str) -> Iterator[tuple[int, str]]:
    """``(number, text)`` of each ``\\n``-ended line, NUL refused; the encoding is the byte
    order mark's (UTF-8 without one)."""
    head = b""
    for block in blocks:  # enough bytes to see the longest mark
        head += block
        if len(head) >= _LONGEST_BOM:
            break
    encoding = next((codec for bom, codec in _BOMS if head.startswith(bom)), "utf-8")
    # The byte order, for counting the lines before bytes that are not text.
    ordered = encoding
    if encoding in ("utf-16", "utf-32"):
        little = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF32_LE))
        ordered = f"{encoding}-{'le' if little else 'be'}"
    decoder = codecs.getincrementaldecoder(encoding)()
    pending = ""
    number = 0
    data: bytes | None = head
    while data is not None:
        final = not data
        try:
            text = decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            done = number + pending.count("\n")
            raise _not_text(exc, encoding, ordered, name, done) from None
        parts = (pending + text).split("\n")
        pending = parts.pop()
        for raw in parts:
            number += 1
            if "\x00" in raw:
                raise _nul(name, number)
            yield number, raw
        if final:
            break
        data = next(blocks, b"")
    number += 1  # what follows the last newline: a last line without one, or nothing
    if "\x00" in pending:
        raise _nul(name, number)
    yield number, pending


def _nul(name: str, number: int) -> PromptsFileError:
    return PromptsFileError(
        f"{name}:{number}: holds a NUL character (not text, or UTF-16 without its byte order mark?)"
    )


def _not_text(
    exc: UnicodeDecodeError, encoding: str, ordered: str, name: str, done: int
) -> PromptsFileError:
    """The refusal of bytes that are not text, naming their line (``done`` lines before the
    bytes the decoder was given)."""
    data = bytes(exc.object)
    prefix = data[: exc.start].decode(ordered, errors="replace")
    number = done + prefix.count("\n") + 1
    if encoding == "utf-8":
        return PromptsFileError(
            f"{name}:{number}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
            "UTF-8"
        )
    shown = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
    return PromptsFileError(f"{name}:{number}: not {shown} text ({exc.reason})")


class _NotJsonError(ValueError):
    """A number JSON cannot carry: ``NaN``, ``Infinity`` or ``-Infinity`` (Python's
    extensions, not JSON: RFC 8259), or one past a double's range (``1e999``)."""


def _constant(text: str) -> Any:
    raise _NotJsonError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJsonError(f"{text} is past a double's range")
    return value


def _loads(text: str) -> Any:
    """Strict JSON: no number that is not finite (see `_NotJsonError`)."""
    return json.loads(text, parse_constant=_constant, parse_float=_finite)


def _json_line(text: str, number: int, name: str) -> PromptLine:
    try:
        params = _loads(text)
    except (json.JSONDecodeError, _NotJsonError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc
        raise PromptsFileError(f"{name}:{number}: not valid JSON ({reason})") from None
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
    return PromptLine(number, params, model, 0, _digest(model, params))


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


def _csv_requests(lines: Iterable[tuple[int, str]], name: str) -> Iterator[PromptLine]:
    """The requests of a CSV file's lines.

    **Accepted**: a header row (RFC 4180: commas, double quotes, a quoted cell may hold
    commas, quotes doubled and line breaks) naming a ``prompt`` column, an optional
    ``model`` column, and any parameter columns; then one request per row, blank rows
    skipped. The ``prompt`` cell is the prompt, exactly as written; the ``model`` cell, when
    not empty, is the row's model. A parameter cell that is empty leaves the parameter out
    (the model's default applies); one that is a JSON number, ``true`` or ``false`` is that
    value (``duration`` 10, ``generate_audio`` true); any other is text.

    **Refused**, naming the line: a file without a header, a header without a ``prompt``
    column or with an empty or repeated column name, a row with more or fewer cells than
    the header, a cell of unpaired quotes or a stray carriage return (malformed CSV).
    """
    at = {"first": 1, "last": 1, "open": False}  # the line a row starts on, the last read

    def physical() -> Iterator[str]:
        for number, raw in lines:
            if not at["open"]:
                at["first"], at["open"] = number, True
            at["last"] = number
            yield raw + "\n"

    reader = csv.reader(physical(), strict=True)
    try:
        header = next((row for row in reader if any(map(str.strip, row))), None)
        if header is None:
            raise PromptsFileError(f"{name}: empty: a CSV file needs a header row")
        header = [column.strip(_EDGES) for column in header]
        if "prompt" not in header:
            raise PromptsFileError(f'{name}:{at["first"]}: the header has no "prompt" column')
        if "" in header or len(set(header)) != len(header):
            raise PromptsFileError(
                f"{name}:{at['first']}: the header has an empty or repeated column name"
            )
        width = len(header)
        at["open"] = False
        for row in reader:
            number, at["open"] = at["first"], False
            if all(not cell.strip(_EDGES) for cell in row):
                continue  # a blank line
            if len(row) != width:
                raise PromptsFileError(
                    f"{name}:{number}: {len(row)} cells where the header has {width}"
                )
            yield _csv_request(header, row, number, name)
    except csv.Error as exc:  # named by the line its row starts on (an open quote's)
        raise PromptsFileError(f"{name}:{at['first']}: not CSV ({exc})") from None


def _csv_request(header: list[str], row: list[str], number: int, name: str) -> PromptLine:
    params: dict[str, Any] = {}
    model: str | None = None
    for column, cell in zip(header, row, strict=True):
        if column == "prompt":
            params["prompt"] = cell
        elif column == "model":
            model = cell or None
        elif cell:
            params[column] = _cell(cell)
    problem = _untextual(params)
    if problem is not None:
        raise PromptsFileError(f"{name}:{number}: {problem}")
    return PromptLine(number, params, model, 0, _digest(model, params))


def _cell(text: str) -> Any:
    """A parameter cell's value: a JSON number, true or false as such, else the text."""
    if text in _JSON_WORDS:
        return text == "true"
    first = text[0]
    if first.isdigit() or (first == "-" and len(text) > 1):
        try:
            value = _loads(text)
        except ValueError:
            return text
        if isinstance(value, int | float):
            return value
    return text


def read_prompts(path: Path) -> list[PromptLine]:
    """Every request of a (small) prompts file, as a list; see `PromptsReader`.

    Raises:
        PromptsFileError: The file cannot be read, or a line is refused.
    """
    return list(PromptsReader(str(path), prompts_format="text").requests())


def decode_prompts(data: bytes, *, name: str) -> list[PromptLine]:
    """The requests of a ``text`` prompts file's bytes; see `PromptsReader`.

    Raises:
        PromptsFileError: A line is refused.
    """
    reader = PromptsReader(name, prompts_format="text")
    lines = _decoded_lines(iter([data]), name)
    found = reader.decode_text(lines, strict=False)
    occurrence = counter()
    result = []
    for line in found:
        count = occurrence(line.digest)
        result.append(dataclasses.replace(line, occurrence=count) if count else line)
    return result
