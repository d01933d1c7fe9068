"""Hostile bodies: what a broken or malicious server may answer, built small or streamed.

Streamed bodies are functions returning a fresh iterator of chunks, so the server never holds
them whole: 100 MB is one 64 KiB chunk sent 1,600 times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

__all__ = [
    "CHUNK",
    "MIB",
    "StreamedBody",
    "big_int_row",
    "deep_json",
    "deep_json_row",
    "huge_json_row",
    "huge_sse_line",
    "infinity_row",
    "invalid_utf8_row",
    "malformed_rows",
    "nan_row",
    "oversized_row",
]

MIB: Final = 1 << 20
CHUNK: Final = 1 << 16
_FILLER: Final = b"x" * CHUNK

StreamedBody = Callable[[], Iterator[bytes]]
"""A body sent chunk by chunk (no ``Content-Length``): a fresh iterator per request."""


def deep_json(depth: int = 100_000) -> bytes:
    """A JSON array nested ``depth`` levels deep (a recursive decoder blows its stack)."""
    return b"[" * depth + b"]" * depth


def _row(generation_id: str, status: str, extra: bytes) -> bytes:
    head = b'{"generation_id":"%s","status":"%s",' % (generation_id.encode(), status.encode())
    return head + b'"model_name":"gpt-image-2","extra":' + extra + b"}"


def deep_json_row(generation_id: str, status: str = "queued") -> bytes:
    """A queue row carrying a field nested 100,000 levels deep."""
    return _row(generation_id, status, deep_json())


def big_int_row(generation_id: str, status: str = "queued", digits: int = 5000) -> bytes:
    """A queue row carrying a 5,000-digit integer (past Python's 4,300-digit str->int limit)."""
    return _row(generation_id, status, b"9" * digits)


def nan_row(generation_id: str, status: str = "queued") -> bytes:
    """A queue row carrying ``NaN``, which is not JSON (RFC 8259) though Python accepts it."""
    return _row(generation_id, status, b"NaN")


def infinity_row(generation_id: str, status: str = "queued") -> bytes:
    """A queue row carrying ``-Infinity``, likewise not JSON."""
    return _row(generation_id, status, b"-Infinity")


def invalid_utf8_row(generation_id: str, status: str = "queued") -> bytes:
    """A queue row whose string holds bytes that are not UTF-8."""
    return _row(generation_id, status, b'"\xff\xfe\xc3\x28"')


def oversized_row(generation_id: str, status: str = "queued", size: int = 9 * MIB) -> bytes:
    """A well-formed queue row over the 8 MiB bound on API bodies (held whole: 9 MiB)."""
    return _row(generation_id, status, b'"' + b"x" * size + b'"')


def huge_json_row(generation_id: str, size: int = 100 * MIB) -> StreamedBody:
    """A well-formed queue row of ``size`` bytes, streamed without a ``Content-Length``."""

    def chunks() -> Iterator[bytes]:
        yield b'{"generation_id":"%s","status":"queued","padding":"' % generation_id.encode()
        for _ in range(size // CHUNK):
            yield _FILLER
        yield b'"}'

    return chunks


def huge_sse_line(size: int = 100 * MIB) -> StreamedBody:
    """One SSE ``data:`` line of ``size`` bytes without a newline, then the end of the event."""

    def chunks() -> Iterator[bytes]:
        yield b"event: media_generation_completed\ndata: "
        for _ in range(size // CHUNK):
            yield _FILLER
        yield b"\n\n"

    return chunks


def malformed_rows(generation_id: str, status: str = "queued") -> dict[str, bytes]:
    """Every malformed body of a row, by name (the 9 MiB one included)."""
    return {
        "deep": deep_json_row(generation_id, status),
        "big_int": big_int_row(generation_id, status),
        "nan": nan_row(generation_id, status),
        "infinity": infinity_row(generation_id, status),
        "invalid_utf8": invalid_utf8_row(generation_id, status),
        "over_8_mib": oversized_row(generation_id, status),
    }
