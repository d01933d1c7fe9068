"""Secrets in URLs (issue 9): a password in ``base_url`` is refused, and never shown.

The key belongs in ``api_key``; userinfo in the base URL would show in ``repr(client)`` and in
httpx's log line of every request. The refusal is an ``InvalidParamsError`` (a ``ValueError``)
naming ``base_url``, and the password is nowhere: not in the message, the repr or the logs.
"""

from __future__ import annotations

import logging
import traceback

import pytest

from oxen_queue import AsyncClient

from .support import API_KEY

PASSWORD = "hunter2-Pa55w0rd"
URL = f"https://user:{PASSWORD}@hub.example"


def construct(base_url: str | None) -> BaseException | AsyncClient:
    try:
        return AsyncClient(api_key=API_KEY, base_url=base_url)
    except Exception as exc:
        return exc


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_a_password_in_base_url_is_refused_and_never_shown(
    where: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    if where == "environment":
        monkeypatch.setenv("OXEN_BASE_URL", URL)
    outcome = construct(URL if where == "argument" else None)
    shown = repr(outcome) if isinstance(outcome, AsyncClient) else ""
    assert PASSWORD not in shown, "the password shows in repr(client)"
    assert isinstance(outcome, ValueError), "userinfo in base_url was accepted"
    assert "base_url" in str(outcome)
    text = "".join(traceback.format_exception(outcome)) + repr(outcome) + repr(vars(outcome))
    assert PASSWORD not in text
    assert PASSWORD not in caplog.text
