"""The compact per-request index of a batch: what a run holds in memory per prompts-file line.

A run reads its prompts file as a stream, and keeps of each request only one entry here:
its key (an int: the request's 64-bit digest, with its occurrence above bit 64 when an
identical request came before it) and a small int packing what the manifest's latest entry
for it says (its status) and where that entry is in the manifest (its byte offset), with a
bit for "seen in this pass over the file". Everything else (prompt, parameters, id, file)
stays in the prompts file and the manifest, read again when needed.

That is about 100 bytes a request (a dict slot, a 64-bit int, and an int for an offset;
the flag alone is a cached small int), measured by ``benchmarks/dataset_scale.py``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["STATUSES", "RequestIndex", "key_number"]

STATUSES: Final = ("queued", "succeeded", "failed", "cancelled", "error", "ambiguous")
"""The statuses the index tells apart (code = position + 1); any other a server made up is
code 7, reattached by id like ``queued``."""

_CODES: Final = {status: code for code, status in enumerate(STATUSES, start=1)}
_OTHER: Final = 7
_SEEN: Final = 1
_KEY: Final = re.compile(r"([0-9a-f]{16})#(0|[1-9][0-9]{0,17})")


def key_number(key: str) -> int:
    """A manifest key as the index's int: ``<16 hex digits>#<occurrence>`` as the digest
    with the occurrence above bit 64; any other key (hand-made, of another tool) as a
    negative int of its hash, which no prompts-file line maps to."""
    match = _KEY.fullmatch(key)
    if match is not None:
        return int(match.group(1), 16) | int(match.group(2)) << 64
    return -1 - int.from_bytes(hashlib.sha256(key.encode("utf-8", "replace")).digest()[:8], "big")


class RequestIndex:
    """Request key -> the manifest's latest word on it, and whether this pass saw it.

    Each value packs ``(offset + 1) << 4 | status code << 1 | seen``; status code 0 means
    "no manifest entry". `occurrence` counts identical requests as a
    pass over the prompts file meets them; `new_pass` starts counting again.
    """

    __slots__ = ("_dupes", "_slots")

    def __init__(self) -> None:
        self._slots: dict[int, int] = {}
        self._dupes: dict[int, int] = {}  # digest -> how many seen, for digests seen twice

    def __len__(self) -> int:
        return len(self._slots)

    def record(self, key: int, status: str, offset: int) -> None:
        """The manifest's latest entry for ``key`` is at ``offset``, saying ``status``."""
        code = _CODES.get(status, _OTHER)
        seen = self._slots.get(key, 0) & _SEEN
        self._slots[key] = (offset + 1) << 4 | code << 1 | seen

    def occurrence(self, digest: int) -> int:
        """How many requests with this digest this pass met before this one (and mark it)."""
        slots = self._slots
        value = slots.get(digest, 0)
        if not value & _SEEN:
            slots[digest] = value | _SEEN
            return 0
        count = self._dupes.get(digest, 1)
        self._dupes[digest] = count + 1
        key = digest | count << 64
        slots[key] = slots.get(key, 0) | _SEEN
        return count

    def state(self, key: int) -> tuple[str | None, int]:
        """The manifest's latest status for ``key`` (``None``: no entry; ``"other"``: a
        status the server made up) and the entry's offset (-1 when none)."""
        value = self._slots.get(key, 0)
        code = value >> 1 & 7
        if not code:
            return None, -1
        return (STATUSES[code - 1] if code != _OTHER else "other"), (value >> 4) - 1

    def seen(self, key: int) -> bool:
        """Whether this pass met a request with this key."""
        return bool(self._slots.get(key, 0) & _SEEN)

    def new_pass(self) -> None:
        """Forget what the last pass saw, to read the prompts file again."""
        slots = self._slots
        for key, value in slots.items():
            if value & _SEEN:
                slots[key] = value & ~_SEEN
        self._dupes.clear()

    def offsets(self) -> list[int]:
        """The offset of every request's latest manifest entry, in file order."""
        return sorted((value >> 4) - 1 for value in self._slots.values() if value >> 1 & 7)
