"""A local emulator of the Oxen API."""
from __future__ import annotations
