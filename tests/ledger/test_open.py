"""open_ledger: the accepted URLs, clear refusals, and never a password shown."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from oxen_queue._ledger import Ledger, LedgerError, fingerprint, open_ledger, redact_url
from oxen_queue._ledger._postgres import Redactor
from oxen_queue._ledger._sqlite import parse_sqlite_url

from .pgcluster import PASSWORD, PostgresCluster
from .support import ledger_for, new_intent

SECRET = "Pw9-very-secret"


def shown(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` would print, causes and contexts included."""
    return "".join(traceback.format_exception(exc))


def test_no_url_means_no_ledger() -> None:
    assert open_ledger(None) is None
    assert open_ledger("") is None


@pytest.mark.parametrize(
    "url",
    [
        "ledger.db",
        "/var/lib/ledger.db",
        "mysql://user:Pw9-very-secret@db/ledger",
        "redis://:Pw9-very-secret@cache:6379/0",
        "postgresql://user:Pw9-very-secret@[::1/db",
    ],
)
def test_an_unsupported_url_names_the_accepted_forms_and_hides_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///absolute/.*postgresql://") as caught:
        open_ledger(url)
    assert SECRET not in shown(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite://host/ledger.db", "not a host"),
        ("sqlite://", "must name a file"),
        ("sqlite:///tmp/", "must name a file"),
        ("sqlite::memory:", "must name a file"),
        ("sqlite:///tmp/l.db?journal=delete", "unknown sqlite ledger option"),
        ("sqlite:///tmp/l.db?busy_timeout=soon", "busy_timeout must be seconds"),
    ],
)
def test_bad_sqlite_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        open_ledger(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///tmp/a%00b.db",
        "sqlite:///tmp/l.db?busy_timeout=inf",
        "sqlite:///tmp/l.db?busy_timeout=nan",
        "sqlite:///tmp/l.db?busy_timeout=-5",
    ],
)
def test_a_sqlite_url_the_driver_would_choke_on_is_refused_first(url: str) -> None:
    """Before: ``ValueError: embedded null byte`` and ``OverflowError`` from the sqlite3
    module when the client opened, naming nothing."""
    with pytest.raises(ValueError, match=r"NUL|busy_timeout must be seconds"):
        open_ledger(url)


# What a query string may hold of a password written by hand: % and + included.
written = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&;#"),
    min_size=4,
    max_size=20,
)


@given(written)
@example("100%+sure")
@example("S3cret%2BPW%zz")
def test_a_query_password_is_hidden_as_written_and_as_any_reader_decodes_it(raw: str) -> None:
    """libpq quotes back what it could not decode as it was written (``100%+sure``), others
    decode it with or without ``+`` as a space: every form is hidden."""
    url = "postgresql://me@127.0.0.1:1/db?password={}&sslmode=disable"
    assume(raw not in url.format("***"))  # "pass" is in "password": no secret there
    redact = Redactor(url.format(raw))
    assert raw not in redact.display
    for form in {raw, unquote(raw), unquote_plus(raw)}:
        assert form not in redact(f'invalid percent-encoded token: "{form}"'), form


def test_sqlite_urls_name_absolute_and_relative_files() -> None:
    assert parse_sqlite_url("sqlite:///srv/oxen/ledger.db") == (
        Path("/srv/oxen/ledger.db"),
        "normal",
        10.0,
    )
    assert parse_sqlite_url("sqlite:out/ledger.db?synchronous=FULL&busy_timeout=2.5") == (
        Path("out/ledger.db"),
        "full",
        2.5,
    )
    assert parse_sqlite_url("sqlite:///tmp/with%20space.db")[0] == Path("/tmp/with space.db")


def test_redact_url_hides_passwords_in_userinfo_and_query() -> None:
    assert redact_url(f"postgresql://me:{SECRET}@db:5432/x") == "postgresql://me:***@db:5432/x"
    shown = redact_url(f"postgres://me@db/x?password={SECRET}&sslmode=require")
    assert SECRET not in shown
    assert "sslmode=require" in shown
    assert redact_url("postgresql://me@db/x") == "postgresql://me@db/x"


def test_fingerprint_is_the_exact_request() -> None:
    base = fingerprint("m", {"a": 1, "b": "x"})
    assert base == fingerprint("m", {"b": "x", "a": 1})  # key order does not matter
    assert len(base) == 64
    assert base != fingerprint("m", {"a": 1.0, "b": "x"})  # 1 and 1.0 are different rows
    assert base != fingerprint("n", {"a": 1, "b": "x"})
    assert base != fingerprint("m", {"a": 1, "b": "x", "c": None})


@pytest.mark.anyio
async def test_a_sqlite_ledger_creates_its_directory(tmp_path: Path) -> None:
    async with ledger_for(f"sqlite:{tmp_path}/new/dir/ledger.db") as ledger:
        await new_intent(ledger)
    assert (tmp_path / "new" / "dir" / "ledger.db").exists()


@pytest.mark.anyio
async def test_a_postgresql_password_never_shows(
    postgres_cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in repr, not in debug logs, not in any error or its chain."""
    caplog.set_level(logging.DEBUG, logger="oxen_queue")
    url = postgres_cluster.url(schema=postgres_cluster.new_schema())
    ledger = ledger_for(url)
    assert PASSWORD not in repr(ledger) and "***" in repr(ledger)
    async with ledger:
        await new_intent(ledger)
        assert PASSWORD not in repr(ledger)
    assert "postgresql://" in caplog.text
    assert PASSWORD not in caplog.text

    wrong = ledger_for(postgres_cluster.url(password=SECRET))
    with pytest.raises(LedgerError, match="password authentication failed") as caught:
        await wrong.open()
    assert SECRET not in shown(caught.value)
    assert SECRET not in repr(wrong)


@pytest.mark.anyio
async def test_a_postgresql_query_error_is_a_ledger_error(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_cluster.url(schema=postgres_cluster.new_schema())
    async with ledger_for(url) as ledger:
        with pytest.raises(LedgerError, match=r"\*\*\*") as caught:
            await ledger.record_ids(await new_intent(ledger), ["\x00"])  # NUL: refused
        assert PASSWORD not in shown(caught.value)


def test_the_sql_ledger_implements_the_protocol(tmp_path: Path) -> None:
    """Checked by mypy: the lead's code can hold a Ledger, whatever the backend."""
    ledger: Ledger | None = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    assert ledger is not None
    assert not (tmp_path / "ledger.db").exists()  # nothing is touched until it is opened


@pytest.mark.anyio
async def test_an_unusable_sqlite_path_is_a_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(LedgerError, match="ledger sqlite:"):
        async with ledger_for(f"sqlite://{tmp_path}/file/ledger.db"):
            pass
