"""Tests of the emulator, oxen_queue.testing."""
