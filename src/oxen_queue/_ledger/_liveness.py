"""Who owns an intent, and whether that owner is gone.

An intent whose answer never arrived may be settled by another client only once its owner can
no longer record the answer. How that is judged depends on where the owner runs:

* **Same machine, same PID namespace, on Linux**: the operating system is asked. The owner is
  gone when its PID no longer exists, or exists with another start time (the PID was reused).
  A start time is the kernel's boot-relative tick count (``/proc/PID/stat``, field 22), with
  the boot id in the host key, so a clock step never makes a live process look dead.
* **Anywhere else** (another host, another container, or a system without ``/proc``): the
  owner's lease tells. Each open ledger refreshes its lease on the ledger's clock; an owner
  whose lease ran out is gone. On the same host without start times, a missing PID also
  means gone, at once.
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

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_RETENTION",
    "Owner",
    "judge_alive",
]

# The shared ledgers' defaults (see SqlLedger): here, with the lease they are about, so that
# open_ledger can name them without importing the SQL machinery a client without a ledger
# URL never needs.
DEFAULT_LEASE_TTL: Final = 30.0
"""Seconds a crashed client on another host still counts as alive."""
DEFAULT_POLL_INTERVAL: Final = 0.05
"""Seconds between looks at the ledger while waiting on other processes."""
DEFAULT_RETENTION: Final = 7 * 24 * 3600.0
"""Seconds finished intents are kept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """The client instance that recorded (or took over) an intent.

    Attributes:
        client_id: A random id per open ledger (one per client instance).
        host: The host name, for people reading the ledger.
        host_key: Identifies one boot of one machine and PID namespace (Linux:
            ``boot_id/pid-namespace-inode``); empty when unknown. Equal keys mean the PID
            below can be checked locally.
        pid: The owner's process id.
        start_token: The owner's process start time as the kernel counts it (clock ticks
            since boot, as text); empty when unknown.
    """

    client_id: str
    host: str
    host_key: str
    pid: int
    start_token: str

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
    """``boot_id/pidns`` on Linux: PIDs are comparable only within one boot and namespace."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        # Without /proc, the host name is the best key there is; start times are then
        # unknown, and liveness also requires the lease (see judge_alive).
        return f"host:{socket.gethostname()}"
    return f"{boot_id}/{pid_ns}"


def process_start_token(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or ``None`` if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    # The fields that follow start at field 3 (state); the start time is field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return fields[19].decode()
    except IndexError:  # pragma: no cover - a kernel with another /proc layout
        return None


def pid_exists(pid: int) -> bool:
    """Whether a process with this id exists on this machine (in this PID namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it belongs to another user
    return True


def judge_alive(
    owner: Owner, *, me: Owner, closed: bool, lease_until: float | None, ledger_now: float
) -> bool:
    """Whether ``owner`` may still record an answer (see the module docstring).

    Args:
        owner: The owner recorded with an intent.
        me: The judging process's own owner (for the host key).
        closed: Whether the owner closed its ledger cleanly.
        lease_until: When the owner's lease runs out, on the ledger's clock, in seconds since
            the epoch; ``None`` when the owner has no lease row (it is then judged by its
            PID alone, or as gone on another host).
        ledger_now: The ledger's current time, in seconds since the epoch.
    """
    if closed:
        return False
    leased = lease_until is not None and lease_until > ledger_now
    if owner.host_key and owner.host_key == me.host_key:
        if owner.client_id == me.client_id:
            return True
        if not pid_exists(owner.pid):
            return False
        if owner.start_token:
            return process_start_token(owner.pid) == owner.start_token
        return leased
    return leased
