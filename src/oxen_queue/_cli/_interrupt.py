"""Ctrl-C as a structured cancellation, so a command can clean up and say so in one line.

Python's default turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to
be, and asyncio turns the first one into a cancellation of its main task and any second one
into a ``KeyboardInterrupt`` in the middle of the event loop: a chained traceback, and cleanup
(cancelling a job upstream) cut short. Instead, while a command runs, SIGINT is received as an
event: each one cancels the innermost scope a command has registered (the work first, then the
cleanup), or the whole command when it registered none. The command raises
`Interrupted` with the one line to print.

Work that must land once started (an enqueue: once its request has left, its jobs may exist)
runs in a `Interrupts.landing` scope: a Ctrl-C takes effect when it is done, so the
command knows the jobs it made and can cancel them; a second Ctrl-C cuts it short.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from anyio.abc import TaskStatus

__all__ = ["Interrupted", "Interrupts"]


class Interrupted(Exception):
    """Ctrl-C was handled; the message says what became of the work (exit status 130)."""


class Interrupts:
    """Counts SIGINTs and cancels the innermost registered scope at each one."""

    def __init__(self) -> None:
        self.count = 0
        self._scopes: list[anyio.CancelScope] = []
        self._landing: list[anyio.CancelScope] = []

    @staticmethod
    def supported() -> bool:
        """Signals can be received as events here (POSIX, main thread)."""
        return os.name == "posix" and threading.current_thread() is threading.main_thread()

    async def listen(self, root: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
        """Receive SIGINTs until cancelled; ``root`` is cancelled when no scope is registered."""
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self.count += 1
                target = self._scopes[-1] if self._scopes else root
                if target.cancel_called and self._landing:
                    target = self._landing[-1]  # a second Ctrl-C: stop waiting for it
                target.cancel()

    @contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A scope the next Ctrl-C cancels (check ``cancelled_caught`` afterwards)."""
        with anyio.CancelScope() as scope:
            self._scopes.append(scope)
            try:
                yield scope
            finally:
                self._scopes.remove(scope)

    @contextmanager
    def landing(self) -> Iterator[anyio.CancelScope]:
        """A scope that a first Ctrl-C does not reach: it runs to its end, and the work scope
        around it is cancelled after; the next Ctrl-C cancels it."""
        with anyio.CancelScope(shield=True) as scope:
            self._landing.append(scope)
            try:
                yield scope
            finally:
                self._landing.remove(scope)

    @contextmanager
    def cleanup(self, *, timeout: float = 10.0) -> Iterator[anyio.CancelScope]:
        """A bounded scope for the cleanup after an interrupt, which another Ctrl-C ends."""
        with anyio.move_on_after(timeout), self.scope() as scope:
            yield scope
