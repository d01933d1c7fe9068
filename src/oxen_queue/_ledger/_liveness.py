"""Who owns an intent, and whether that owner is gone (so that others may settle it).

* Same machine and PID namespace, on Linux: the owner is gone when its PID no longer exists,
  or exists with another start time (reused). A start time is the kernel's tick count since
  boot (``/proc/PID/stat``, field 22), with the boot id in the host key, so a clock step never
  makes a live process look dead.
* Anywhere else (another host or container, no ``/proc``): the owner is gone when its lease,
  renewed on the ledger's clock, ran out; on the same host without start times, also when its
  PID is missing.
* A client that closed its ledger cleanly is gone at once, wherever it ran.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# The SQL ledgers' defaults, here so that open_ledger names them without importing SQL.
DEFAULT_LEASE_TTL: Final = 30.0  # seconds a crashed client on another host counts as alive
DEFAULT_POLL_INTERVAL: Final = 0.05  # seconds between looks while waiting on other processes
DEFAULT_RETENTION: Final = 7 * 24 * 3600.0  # seconds finished intents are kept


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """The client instance that recorded (or took over) an intent."""

    client_id: str  # random, one per open ledger (client instance)
    host: str  # the host name, for people reading the ledger
    # One boot of one machine and PID namespace (Linux: boot_id/pid-namespace-inode): equal
    # keys mean the PID can be checked locally.
    host_key: str
    pid: int
    start_token: str  # the process's start time in clock ticks since boot; empty if unknown

    @classmethod
    def current(cls, client_id: str | None = None) -> Owner:
        """This process, as a new owner (``client_id`` random unless given)."""
        pid = os.getpid()
        return cls(
            client_id=client_id or uuid.uuid4().hex,
            host=socket.gethostname(),
            host_key=_host_key(),
            pid=pid,
            start_token=process_start_token(pid) or "",
        )


@functools.cache
def _host_key() -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # no start times then: liveness also requires the lease
        return f"host:{socket.gethostname()}"
    return f"{boot_id}/{pid_ns}"


def process_start_token(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or ``None`` if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")",
    # which leaves field 3 first; the start time is field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def pid_exists(pid: int) -> bool:
    """Whether a process with this id exists in this PID namespace."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists; it belongs to another user
        pass
    return True


def judge_alive(
    owner: Owner, *, me: Owner, closed: bool, lease_until: float | None, ledger_now: float
) -> bool:
    """Whether ``owner`` may still record an answer, judged by ``me`` (see the module
    docstring); ``lease_until`` ``None`` when the owner has no lease row."""
    if closed:
        return False
    if owner.host_key and owner.host_key == me.host_key:
        if owner.client_id == me.client_id:
            return True
        if not pid_exists(owner.pid):
            return False
        if owner.start_token:
            return process_start_token(owner.pid) == owner.start_token
    return lease_until is not None and lease_until > ledger_now
