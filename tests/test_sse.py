"""The bounded SSE decoder: WHATWG framing, and no line held past its bound."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from oxen_queue._watch._sse import ServerSentEvent, SSEDecoder


def _decode(chunks: list[bytes], *, max_line: int = 1 << 20) -> tuple[list[ServerSentEvent], int]:
    decoder = SSEDecoder(max_line=max_line)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder.dropped


def test_fields_comments_and_every_line_ending() -> None:
    stream = (
        b": keep-alive\n\n"
        b'event: media_generation_completed\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"id: 7\rretry: 10\rdata:plain\r\r"
        b"data\n\n"  # a field with no colon: empty data, still an event
        b"event: only-a-name\n\n"  # no data: nothing is dispatched
    )
    events, dropped = _decode([stream])
    assert events == [
        ServerSentEvent("media_generation_completed", '{"a":\n1}'),
        ServerSentEvent("message", "plain"),
        ServerSentEvent("message", ""),
    ]
    assert dropped == 0


def test_a_crlf_split_across_chunks_ends_one_line_not_two() -> None:
    events, _ = _decode([b"data: x\r", b"\n", b"\r", b"\ndata: y\n\n"])
    assert events == [ServerSentEvent("message", "x"), ServerSentEvent("message", "y")]


def test_an_overlong_line_is_dropped_with_its_event_and_the_stream_goes_on() -> None:
    huge = [b"event: media_generation_completed\ndata: "] + [b"x" * 65536] * 40 + [b"\n\n"]
    after = [b"event: media_generation_completed\ndata: ok\n\n"]
    events, dropped = _decode(huge + after, max_line=1 << 20)
    assert events == [ServerSentEvent("media_generation_completed", "ok")]
    assert dropped == 1


def test_many_data_lines_cannot_build_an_event_past_the_bound() -> None:
    stream = [b"data: " + b"y" * 100 + b"\n"] * 50 + [b"\n", b"data: next\n\n"]
    events, dropped = _decode(stream, max_line=1000)
    assert events == [ServerSentEvent("message", "next")]
    assert dropped == 1


def test_an_endless_line_costs_bounded_memory() -> None:
    decoder = SSEDecoder()
    chunk = b"z" * 65536
    tracemalloc.start()
    try:
        for _ in range(1600):  # 100 MiB, never terminated
            assert decoder.feed(chunk) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert decoder.feed(b"\n\ndata: after\n\n") == [ServerSentEvent("message", "after")]


lines = st.lists(
    st.one_of(
        st.just(b""),
        st.just(b": keep-alive"),
        st.builds(lambda v: b"event: " + v, st.sampled_from([b"a", b"media_generation_completed"])),
        st.builds(
            lambda v: b"data: " + v,
            st.binary(max_size=12).filter(lambda b: b"\n" not in b and b"\r" not in b),
        ),
    ),
    max_size=30,
)


@given(lines, st.sampled_from([b"\n", b"\r", b"\r\n"]), st.lists(st.integers(1, 7), max_size=40))
def test_how_the_bytes_are_chunked_never_changes_the_events(
    stream_lines: list[bytes], ending: bytes, cuts: list[int]
) -> None:
    stream = b"".join(line + ending for line in stream_lines)
    whole, _ = _decode([stream])
    chunks, position = [], 0
    for size in cuts:
        chunks.append(stream[position : position + size])
        position += size
    chunks.append(stream[position:])
    split, _ = _decode(chunks)
    assert split == whole


BOM = "\ufeff".encode()


@given(lines, st.sampled_from([b"\n", b"\r", b"\r\n"]), st.lists(st.integers(1, 7), max_size=40))
def test_one_leading_byte_order_mark_is_ignored_however_the_bytes_are_chunked(
    stream_lines: list[bytes], ending: bytes, cuts: list[int]
) -> None:
    """The specification: "One leading U+FEFF BYTE ORDER MARK character must be ignored"."""
    stream = b"".join(line + ending for line in stream_lines)
    without, _ = _decode([stream])
    marked = BOM + stream
    chunks, position = [], 0
    for size in cuts:
        chunks.append(marked[position : position + size])
        position += size
    chunks.append(marked[position:])
    assert _decode(chunks)[0] == without


def test_a_byte_order_mark_no_longer_hides_the_first_event() -> None:
    stream = BOM + b"event: media_generation_completed\ndata: first\n\ndata: second\n\n"
    assert _decode([stream])[0] == [
        ServerSentEvent("media_generation_completed", "first"),
        ServerSentEvent("message", "second"),
    ]


def test_a_byte_order_mark_split_across_chunks_is_still_ignored() -> None:
    for cut in ([b"\xef", b"\xbb", b"\xbfdata: x\n\n"], [b"\xef\xbb", b"\xbf", b"data: x\n\n"]):
        decoder = SSEDecoder()
        assert [event for chunk in [b"", *cut] for event in decoder.feed(chunk)] == [
            ServerSentEvent("message", "x")
        ]


def test_only_one_byte_order_mark_only_at_the_start_is_ignored() -> None:
    # A second mark belongs to the first line ("\ufeffdata" is no field); the first event
    # is lost, as the specification has it, and the stream goes on.
    twice, _ = _decode([BOM + BOM + b"data: lost\n\ndata: kept\n\n"])
    assert twice == [ServerSentEvent("message", "kept")]
    # Anywhere else it is data.
    later, _ = _decode([b"data: a\n\n", BOM + b"data: b\n\ndata: \xef\xbb\xbfc\n\n"])
    assert later == [ServerSentEvent("message", "a"), ServerSentEvent("message", "\ufeffc")]
    # Bytes that only begin like a mark are kept as they came.
    almost, _ = _decode([b"\xef", b"\xbbdata: d\n\n", b"data: e\n\n"])
    assert almost == [ServerSentEvent("message", "e")]
