"""The names we give result files: one per generation, safe on every operating system.

A file saved without a name from the caller is named after its generation id, and an id is
untrusted text (from the server, a manifest, a caller's record). `safe_name` turns any
id into a file name stem that is

* **safe everywhere**: 1 to `MAX_STEM` ASCII characters among letters, digits, ``-``,
  ``_`` and ``~``; no dot, space or separator, so never a trailing dot or space, and never a
  path; never a Windows device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``COM9``,
  ``LPT0``-``LPT9``, their superscript-digit forms, ``CONIN$``, ``CONOUT$``; in any case,
  with any extension after it); never a leading ``-`` (read as an option by every command
  line tool);
* **distinct per id, also where case is folded** (Windows, macOS): a *clean* id (lowercase
  letters, digits, ``-`` and ``_``, not starting with ``-``, at most `MAX_STEM`
  characters, not a device name) is its own name, so a UUID ``<uuid>`` is saved as
  ``<uuid>.png``; any other id is named ``<prefix>~<hash>``: its safe characters (up to
  `MAX_STEM` - 17), then ``~`` and 16 hex digits of the SHA-256 of the whole id. ``~``
  appears in no clean name, and the hash tells apart any two ids that clean alike (``a/b`` and
  ``ab``, ``CON`` and ``con``, ``ABC`` and ``abc``), so two generations never share a file
  (short of a 64-bit hash collision).

An extension (``.png``) appended to the stem changes none of this. A caller's explicit file path
is the caller's choice and never passes through here.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["MAX_STEM", "RESERVED_NAMES", "safe_name"]

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
    """The file name stem of a generation's result (see the module for the guarantees).

    Args:
        generation_id: Any text.

    Returns:
        ``generation_id`` itself when it is clean, else ``<prefix>~<16 hex digits>``.
    """
    if _CLEAN.match(generation_id) and generation_id not in RESERVED_NAMES:
        return generation_id
    prefix = _UNSAFE.sub("", generation_id).lstrip("-")[:_PREFIX] or "generation"
    # surrogatepass: every str has exactly one encoding (lone surrogates included), so the
    # hash is of the id itself ("replace" would make "\ud800" and "\udc00" the same "?").
    whole = generation_id.encode("utf-8", "surrogatepass")
    return f"{prefix}~{hashlib.sha256(whole).hexdigest()[:_HASH_HEX]}"
