"""How a client judges whether another intent's owner is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from oxen_queue._ledger import Owner
from oxen_queue._ledger._liveness import judge_alive, pid_exists, process_start_token

from .support import DEAD_PID

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
ME = Owner.current()


def alive(owner: Owner, *, closed: bool = False, lease_until: float | None = None) -> bool:
    return judge_alive(owner, me=ME, closed=closed, lease_until=lease_until, ledger_now=100.0)


def test_this_process_is_alive_and_a_closed_client_is_not() -> None:
    assert alive(ME)
    assert alive(replace(ME, client_id="another client in this process"))
    assert not alive(ME, closed=True)


@linux_only
def test_same_host_is_judged_by_pid_and_start_time() -> None:
    """The lease does not matter: the operating system knows better."""
    other = replace(ME, client_id="x")
    assert alive(other, lease_until=0.0)
    assert not alive(replace(other, pid=DEAD_PID), lease_until=1e12)
    assert not alive(replace(other, start_token="1"), lease_until=1e12)  # a reused PID


def test_same_host_without_start_times_needs_pid_and_lease() -> None:
    other = replace(ME, client_id="x", start_token="")
    assert alive(other, lease_until=200.0)
    assert not alive(other, lease_until=50.0)
    assert not alive(replace(other, pid=DEAD_PID), lease_until=200.0)


def test_another_host_is_judged_by_its_lease_on_the_ledger_clock() -> None:
    other = replace(ME, client_id="x", host="b", host_key="machine-b", pid=DEAD_PID)
    assert alive(other, lease_until=100.5)
    assert not alive(other, lease_until=100.0)
    assert not alive(other, lease_until=None)  # no owner row at all
    assert not alive(replace(other, host_key=""), lease_until=None)


@pytest.mark.slow
@linux_only
def test_a_real_child_is_alive_until_it_exits() -> None:
    # A child that lives until killed (60 s only bounds it if the test dies first).
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = process_start_token(child.pid)
        assert token is not None and token != process_start_token(os.getpid())
        owner = replace(ME, client_id="child", pid=child.pid, start_token=token)
        assert pid_exists(child.pid) and alive(owner)
    finally:
        child.kill()
        child.wait()
    assert not pid_exists(child.pid)
    assert process_start_token(child.pid) is None
    assert not alive(owner)


def test_pid_checks_of_impossible_pids() -> None:
    assert not pid_exists(0)
    assert not pid_exists(DEAD_PID)
    assert process_start_token(DEAD_PID) is None
