"""A throwaway PostgreSQL cluster for the ledger's tests and benchmark.

``initdb`` makes a cluster in a fresh temporary directory, ``pg_ctl`` starts it on 127.0.0.1
at a free port (and on a socket in the same directory), and ``stop()`` stops it and removes
the directory. The server refuses to run as root, so as root both run as the ``postgres``
user that Debian's ``postgresql`` package creates (``runuser``), on a directory chowned to it.

Connections need a password (scram-sha-256, on the socket too), so the tests exercise a URL
that carries one. ``durable=False`` (the tests) turns fsync off: a few seconds saved, nothing
lost that a throwaway cluster needs; the benchmark keeps the defaults.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PASSWORD", "PostgresCluster", "find_pg_bin", "start_cluster"]

PASSWORD = "s3cret-" + secrets.token_hex(4)  # in URLs: the redaction tests look for it


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or ``None`` if not installed.

    Debian installs them under ``/usr/lib/postgresql/<version>/bin``, off the PATH.
    """
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One running throwaway cluster (see the module docstring)."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="oxen-ledger-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.startup_seconds = 0.0
        self._user: str | None = None
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.role = "postgres" if self._user else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, argv: Sequence[str]) -> None:
        command = list(argv)
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def start(self) -> PostgresCluster:
        """initdb, then start the server; returns ``self``."""
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.role,
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-locale",
                *([] if self.durable else ["--no-sync"]),
            ]
        )
        pwfile.unlink()
        settings = ["-c", "max_connections=200"]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        for attempt in range(5):
            self.port = _free_port()
            options = " ".join(
                ["-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.root), *settings]
            )
            try:
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.root / "log"),
                        "-w",
                        "-t",
                        "30",
                        "-s",
                        "-o",
                        options,
                        "start",
                    ]
                )
                return self
            except RuntimeError:
                if attempt == 4:  # the port was taken between probe and start, five times
                    self.stop()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def url(self, *, schema: str | None = None, password: str = PASSWORD) -> str:
        """A URL to the ``postgres`` database, with tables in ``schema`` if given."""
        url = f"postgresql://{self.role}:{password}@127.0.0.1:{self.port}/postgres"
        if schema:
            url += f"?options=-csearch_path%3D{schema}"
        return url

    def new_schema(self) -> str:
        """A fresh, empty schema: a ledger of its own for one test, in milliseconds."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name

    def stop(self) -> None:
        """Stop the server (at once: nothing in it is worth a checkpoint) and remove it all."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-w",
                        "-s",
                        "-m",
                        "immediate",
                        "stop",
                    ]
                )
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(*, durable: bool = False) -> PostgresCluster | None:
    """A running cluster, or ``None`` when PostgreSQL is not installed."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        return None
    started = time.monotonic()
    cluster = PostgresCluster(bin_dir, durable=durable).start()
    cluster.startup_seconds = time.monotonic() - started
    return cluster
