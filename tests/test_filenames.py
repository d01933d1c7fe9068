"""The names of result files: one per generation id, safe on every operating system."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue._filenames import MAX_STEM, safe_name

# An oracle written apart from the module: Windows treats a name as the device when the part
# before its first dot, trailing dots and spaces dropped, is one of these (any case).
_WINDOWS_DEVICE = re.compile(r"(con|prn|aux|nul|conin\$|conout\$|(com|lpt)[0-9\u00b9\u00b2\u00b3])")
_SAFE = re.compile(r"[A-Za-z0-9_~-]+")
EXTENSIONS = ("", ".png", ".jpg", ".mp4", ".bin", ".tar.gz")


def is_windows_device(name: str) -> bool:
    base = name.split(".", 1)[0].rstrip(" .")
    return _WINDOWS_DEVICE.fullmatch(base.lower()) is not None


# Any text (lone surrogates included), text made of the characters that clean away or fold,
# device names in every case, and real ids.
ids = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=150),
    st.text(alphabet="aAbB0_-./\\~ :\u00b9\x00\u00e9", max_size=12),
    st.sampled_from(["CON", "con", "Nul", "COM1", "lpt\u00b9", "conout$", "AUX.png", "nul "]),
    st.uuids().map(str),
    st.text(alphabet="abc-", min_size=90, max_size=110),
)


@settings(max_examples=400)
@given(ids)
def test_every_name_is_short_safe_ascii_and_never_a_device(generation_id: str) -> None:
    name = safe_name(generation_id)
    assert 1 <= len(name) <= MAX_STEM
    assert name.isascii() and _SAFE.fullmatch(name)
    assert not name.startswith("-")  # no command-line tool reads it as an option
    assert not name.endswith((".", " "))
    for extension in EXTENSIONS:
        assert not is_windows_device(name + extension), name + extension


@settings(max_examples=300)
@given(st.lists(ids, min_size=2, max_size=12, unique=True))
def test_distinct_ids_get_distinct_names_even_where_case_is_folded(
    generation_ids: list[str],
) -> None:
    names = [safe_name(generation_id).casefold() for generation_id in generation_ids]
    assert len(set(names)) == len(names)


@settings(max_examples=100)
@given(st.uuids())
def test_a_uuid_is_its_own_name(value: uuid.UUID) -> None:
    assert safe_name(str(value)) == str(value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a/b", "ab"),
        ("a.b", "ab"),
        ("a~b", "ab"),
        ("CON", "con"),
        ("ABC", "abc"),
        ("-a", "a"),
        ("\ud800", "\udc00"),  # one "?" each, were the hash of an encoding with "replace"
        ("x" * 200, "x" * 201),
        ("", "generation"),
        ("a/b", safe_name("a/b")),  # a name given back as an id
        ("../../etc/passwd", "etcpasswd"),
    ],
)
def test_ids_that_clean_alike_still_get_different_names(first: str, second: str) -> None:
    assert safe_name(first).casefold() != safe_name(second).casefold()


@pytest.mark.parametrize(
    ("generation_id", "stem"),
    [
        ("con", "con~"),
        ("NUL", "NUL~"),
        ("com1", "com1~"),
        ("COM\u00b9", "COM~"),
        ("../../etc/passwd", "etcpasswd~"),
        ("", "generation~"),
        ("///", "generation~"),
        ("--rf", "rf~"),
        ("x" * 200, "x" * (MAX_STEM - 17) + "~"),
    ],
)
def test_an_id_that_is_not_clean_keeps_its_safe_characters_and_a_hash(
    generation_id: str, stem: str
) -> None:
    name = safe_name(generation_id)
    assert name.startswith(stem)
    assert re.fullmatch(r"[0-9a-f]{16}", name[len(stem) :])


def test_clean_ids_keep_their_name_exactly() -> None:
    for generation_id in ("job_1", "abc-def", "0", "_x", "a" * MAX_STEM, "console", "com10"):
        assert safe_name(generation_id) == generation_id
