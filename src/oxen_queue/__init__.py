"""oxen-queue: an asyncio SDK for Oxen.ai's generation queue."""

from __future__ import annotations

from ._version import __version__ as __version__
