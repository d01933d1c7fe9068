"""The bounded JSON decoder: the one place API bodies become Python values."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oxen_queue._json import MAX_BODY_BYTES, MAX_DEPTH, MAX_INT_DIGITS, BodyError, loads


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b"1" * 5000, "digits"),
        (b'{"enqueued_at": -' + b"9" * (MAX_INT_DIGITS + 1) + b"}", "digits"),
        (b"NaN", "not a JSON value"),
        (b'{"x": Infinity}', "not a JSON value"),
        (b"\xff\xfe", "utf-8"),
        (b'{"a": 1', "Expecting"),
        (b"", "Expecting"),
        (b" " * (MAX_BODY_BYTES + 1), "at most"),
    ],
)
def test_hostile_bodies_raise_one_documented_error(body: bytes, problem: str) -> None:
    with pytest.raises(BodyError, match=problem):
        loads(body)


def test_bodies_within_the_limits_decode_as_json_does() -> None:
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(deepest) == json.loads(deepest)
    longest = "-" + "9" * MAX_INT_DIGITS
    assert loads(longest) == int(longest)
    assert loads(b'{"generations": [{"generation_id": "g", "enqueued_at": 1764000000}]}') == {
        "generations": [{"generation_id": "g", "enqueued_at": 1764000000}]
    }


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    prompt = "[" * 500 + "{" * 500
    assert loads(json.dumps({"prompt": prompt})) == {"prompt": prompt}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


@given(json_values)
def test_any_shallow_document_round_trips(value: object) -> None:
    assert loads(json.dumps(value).encode()) == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_body_error_only(data: bytes) -> None:
    with contextlib.suppress(BodyError):
        loads(data)
