"""Small shared types."""

from __future__ import annotations

import enum
from typing import Final, Literal


class _DefaultType(enum.Enum):
    DEFAULT = enum.auto()

    def __repr__(self) -> str:
        return "DEFAULT"


Default = Literal[_DefaultType.DEFAULT]
"""The type of [`DEFAULT`][oxen_queue.DEFAULT]: "the client's setting" (``None`` is no limit)."""

DEFAULT: Final = _DefaultType.DEFAULT
