"""Prompts files (``oxen_queue._cli._prompts``): encodings, byte order marks, what ends a
line, and what is refused, with its line number. Property-based first, then examples."""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
from pathlib import Path
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue._cli._prompts import (
    PromptLine,
    PromptsFileError,
    PromptsReader,
    decode_prompts,
    read_prompts,
)

NAME: Final = "prompts.txt"
REFUSAL: Final = re.compile(rf"\A{re.escape(NAME)}:(\d+): \S")
# What surrounds a prompt and is not part of it: whitespace as str.isspace has it, and the
# byte order marks concatenated files leave at a line's start.
EDGES: Final = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()) + "\ufeff"
# Line breaks to Unicode that are not line breaks of a prompts file.
NOT_LINE_ENDS: Final = ("\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decoded(data: bytes) -> str | None:
    """The file's text as the spec says, written here apart from the reader; None when it
    is not text in its encoding."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            body, codec = data[len(bom) :], encoding
            break
    else:
        body, codec = data, "utf-8"
    try:
        return body.decode(codec)
    except UnicodeDecodeError:
        return None


def requests_of(text: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of each line that is neither blank nor a comment."""
    found = []
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip(EDGES)
        if stripped and not stripped.startswith("#"):
            found.append((number, stripped))
    return found


piece = st.one_of(
    st.sampled_from(
        [
            "\n",
            "\r\n",
            "\r",
            "#",
            "{",
            "}",
            " ",
            "\t",
            "\ufeff",
            "\x00",
            '{"prompt": "an ox"}',
            '{"prompt": 3}',
            *NOT_LINE_ENDS,
        ]
    ),
    st.text(max_size=6),
)
texts = st.lists(piece, max_size=16).map("".join)


@st.composite
def prompt_files(draw: st.DrawFn) -> bytes:
    """Bytes a prompts file may hold: crafted text in one of the encodings (with or without
    its byte order mark), sometimes with bytes that are no text spliced in; or any bytes."""
    text = draw(texts)
    encoding = draw(
        st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
    )
    data = text.encode(encoding, errors="surrogatepass")
    if encoding in ("utf-16-le", "utf-16-be") and draw(st.booleans()):
        data = (codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE) + data
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
        data += data[at:]
    return draw(st.one_of(st.just(data), st.binary(max_size=64)))


@settings(max_examples=400)
@given(prompt_files())
def test_decode_prompts_reads_every_line_once_or_refuses_naming_a_line(data: bytes) -> None:
    """Any bytes: either one request per non-blank, non-comment ``\\n``-separated line (in
    order, numbered as in the file, no byte order mark in any prompt, a plain line's prompt
    its stripped text), or ``PromptsFileError`` naming a line of the file; never another
    error. Text with no NUL and no JSON line is never refused."""
    text = decoded(data)
    try:
        lines = decode_prompts(data, name=NAME)
    except PromptsFileError as exc:
        match = REFUSAL.match(str(exc))
        assert match is not None, str(exc)
        assert 1 <= int(match.group(1)) <= data.count(b"\n") + 1
        assert text is None or "\x00" in text or "{" in text
        return
    assert text is not None
    expected = requests_of(text)
    assert [line.number for line in lines] == [number for number, _ in expected]
    for line, (_, stripped) in zip(lines, expected, strict=True):
        assert not line.prompt.startswith("\ufeff")
        if not stripped.startswith("{"):
            assert line.params == {"prompt": stripped}


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["an ox", " ", "[/]", *NOT_LINE_ENDS]), min_size=1))
def test_unicode_line_breaks_never_split_a_request(parts: list[str]) -> None:
    """U+2028, U+2029, NEL, VT, FF and FS/GS/RS inside a line are part of its prompt: a
    file of one such line is one request (or none, if it is blank)."""
    text = "".join(parts)
    lines = decode_prompts(f"{text}\n".encode(), name=NAME)
    assert [line.prompt for line in lines] == ([text.strip(EDGES)] if text.strip(EDGES) else [])


# --- examples -------------------------------------------------------------------------------


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_prompt() -> None:
    lines = decode_prompts(codecs.BOM_UTF8 + b"an ox\n\xef\xbb\xbfa second ox\n", name=NAME)
    assert [line.prompt for line in lines] == ["an ox", "a second ox"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom", "utf-32"])
def test_a_utf16_or_utf32_file_with_its_byte_order_mark_is_decoded(encoding: str) -> None:
    text = '# mine\r\nan ox \u2603\r\n{"prompt": "a square ox", "resolution": "1024x1024"}\r\n'
    if encoding == "utf-16-be-bom":
        data = codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    else:
        data = text.encode(encoding)
    assert decode_prompts(data, name=NAME) == [
        PromptLine(2, {"prompt": "an ox \u2603"}),
        PromptLine(3, {"prompt": "a square ox", "resolution": "1024x1024"}),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"an ox\nok\nbad \xff byte\n", f"{NAME}:3: not UTF-8 text (byte 0xff)"),
        (b"an ox\n\xc3", f"{NAME}:2: not UTF-8 text (byte 0xc3)"),
        (b"an ox\na \x00 ox\n", f"{NAME}:2: holds a NUL character"),
        ("an ox\n".encode("utf-16-le"), f"{NAME}:1: holds a NUL character"),
        (codecs.BOM_UTF16_LE + b"a\x00\n\x00\x00\xd8", f"{NAME}:2: not UTF-16 text"),
        (b'ox\n{"prompt": "a\\u0000b"}\n', f"{NAME}:2: holds a NUL character (\\u0000)"),
        (b'{"prompt": "ox", "x": ["\\ud800"]}', f"{NAME}:1: holds an unpaired surrogate"),
        (b"{[1]}", f"{NAME}:1: not valid JSON"),
        (b"[1]\n{}", f'{NAME}:2: a JSON line needs a string "prompt"'),
        (b'{"a":' * 100_000, f"{NAME}:1: not usable JSON"),
        (b'{"prompt": "ox", "n": ' + b"9" * 5000 + b"}", f"{NAME}:1: not usable JSON"),
        (b'{"prompt": "ox", "n": NaN}', f"{NAME}:1: not valid JSON (NaN is not a JSON number)"),
        (b'{"prompt": "ox", "n": [-Infinity]}', f"{NAME}:1: not valid JSON (-Infinity is not"),
        (b'{"prompt": "ox", "n": 1e999}', f"{NAME}:1: not valid JSON (1e999 is past a double"),
    ],
)
def test_a_file_that_is_not_usable_text_is_refused_naming_the_line(
    data: bytes, message: str
) -> None:
    with pytest.raises(PromptsFileError) as caught:
        decode_prompts(data, name=NAME)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_prompts_file_that_cannot_be_read_is_refused_in_one_line(tmp_path: Path) -> None:
    """A directory, or a file that is not there: the file and the reason, no errno."""
    for path in (tmp_path, tmp_path / "missing.txt"):
        with pytest.raises(PromptsFileError) as caught:
            read_prompts(path)
        assert str(caught.value).startswith(f"cannot read the prompts file {path}: ")
        assert "Errno" not in str(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return all(_finite(item) for item in value) if isinstance(value, list) else True


@given(json_values)
def test_a_json_line_holds_only_finite_numbers_or_is_refused(value: object) -> None:
    """Python writes NaN, Infinity and -Infinity (and reads 1e999 as infinity), which JSON
    has not: a line holding one is refused naming it, so no request (and no file the batch
    writes, such as not_generated.jsonl) ever carries one."""
    line = json.dumps({"prompt": "ox", "x": value}).encode()
    try:
        (read,) = decode_prompts(line, name=NAME)
    except PromptsFileError as exc:
        assert not _finite(value)
        assert str(exc).startswith(f"{NAME}:1: not valid JSON (")
        return
    assert _finite(value)
    assert read.params["x"] == value


@pytest.mark.parametrize("cell", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_csv_cell_no_json_number_can_hold_stays_text(tmp_path: Path, cell: str) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text(f"prompt,n\nan ox,{cell}\n")
    (read,) = PromptsReader(str(path), prompts_format="csv").requests()
    assert read.params == {"prompt": "an ox", "n": cell}
