"""The names we give result files: one per generation, safe on every operating system.

`safe_name` accepts any ``str`` (an id is untrusted text: from the server, a manifest, a
caller's record; a caller's own file path never passes here) and gives a stem that is

* **safe everywhere**: 1 to `MAX_STEM` ASCII letters, digits, ``-``, ``_`` and ``~`` (no dot,
  space or separator: never a path), never a Windows device name (`RESERVED_NAMES`, in any
  case, with any extension), never starting with ``-`` (an option to command line tools);
* **distinct per id, also where case is folded** (Windows, macOS): a *clean* id (lowercase
  letters, digits, ``-`` and ``_``, not starting with ``-``, at most `MAX_STEM` characters, no
  device name) is its own name (``<uuid>.png``); any other is ``<prefix>~<hash>``: up to
  `MAX_STEM` - 17 of its safe characters, ``~`` (in no clean name) and 16 hex digits of the
  SHA-256 of the whole id, telling apart ids that clean alike (``a/b`` and ``ab``, ``CON`` and
  ``con``), short of a 64-bit collision.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

MAX_STEM: Final = 96
"""The longest stem, in characters (a UUID has 36)."""

_HASH_HEX: Final = 16
_PREFIX: Final = MAX_STEM - _HASH_HEX - 1

RESERVED_NAMES: Final = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{device}{digit}" for device in ("com", "lpt") for digit in "0123456789\u00b9\u00b2\u00b3"}
)
"""Windows device names, lowercase: a file named so (with any extension) is the device."""

_CLEAN: Final = re.compile(rf"[a-z0-9_][a-z0-9_-]{{0,{MAX_STEM - 1}}}\Z")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(generation_id: str) -> str:
    """The file name stem of a generation's result: ``generation_id`` itself when it is
    clean, else ``<prefix>~<16 hex digits>`` (see the module)."""
    if _CLEAN.match(generation_id) and generation_id not in RESERVED_NAMES:
        return generation_id
    prefix = _UNSAFE.sub("", generation_id).lstrip("-")[:_PREFIX] or "generation"
    # surrogatepass: every str has exactly one encoding (lone surrogates included), so the
    # hash is of the id itself ("replace" would make "\ud800" and "\udc00" the same "?").
    whole = generation_id.encode("utf-8", "surrogatepass")
    return f"{prefix}~{hashlib.sha256(whole).hexdigest()[:_HASH_HEX]}"
