"""A bounded Server-Sent Events decoder (the WHATWG framing), fed bytes as they arrive.

``id`` and ``retry`` are ignored: the API documents no replay. "One leading U+FEFF BYTE ORDER
MARK character must be ignored if any are present" (the specification): one, at the very start
of the stream, even split across chunks. A line longer than `MAX_LINE_BYTES` is dropped as it
streams past, with its event, so an endless line costs bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_LINE_BYTES: Final = 1 << 20
"""The longest SSE line, and the largest event's data, accepted (1 MiB)."""

_TERMINATORS: Final = (b"\n", b"\r")
_BOM: Final = "\ufeff".encode()  # EF BB BF


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (``message`` when unnamed) and its data."""

    event: str
    data: str


class SSEDecoder:
    """Turns the bytes of a stream into events, within `MAX_LINE_BYTES` per line.

    Attributes:
        dropped: How many lines (and with them, events) were dropped for being too long.
    """

    def __init__(self, *, max_line: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line
        self._partial = bytearray()  # the start of a line whose end has not arrived
        self._skipping = False  # inside a line that grew too long: drop until its end
        self._after_cr = False  # the last chunk ended with CR: a leading LF completes CRLF
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._broken = False  # a line of the current event was dropped
        # The stream's first bytes, held until they show whether it starts with a BOM.
        self._head: bytes | None = b""
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk`` (usually none or one)."""
        if self._head is not None:
            head = self._head + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head  # still maybe a BOM: wait for more
                return []
            self._head = None
            chunk = head.removeprefix(_BOM)
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        events: list[ServerSentEvent] = []
        for piece in chunk.splitlines(keepends=True):
            complete = piece.endswith(_TERMINATORS)
            if self._skipping:
                if complete:
                    self._skipping = False
                continue
            length = len(self._partial) + len(piece)
            if length > self._max_line + 2:  # +2: the line's own CRLF
                self._partial.clear()
                self._drop()
                self._skipping = not complete
                continue
            if not complete:
                self._partial += piece
                continue
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = piece
            self._line(line.rstrip(b"\r\n"), events)
        return events

    def _drop(self) -> None:
        self.dropped += 1
        self._broken = True

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data and not self._broken:
                events.append(ServerSentEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data, self._size, self._broken = "", [], 0, False
            return
        name, _, value = line.partition(b":")  # a comment (the keep-alive) has no name
        value = value.removeprefix(b" ")
        if name == b"data":
            if self._broken:
                return  # its event is dropped already: keep nothing more of it
            self._size += len(value) + 1
            if self._size > self._max_line:
                self._drop()
                return
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
