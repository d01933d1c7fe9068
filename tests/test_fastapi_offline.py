"""examples/fastapi_app.py without a key: as the README runs it, it serves from an embedded
emulator, and says so in its log."""

from __future__ import annotations

import logging
import os

import httpx
import pytest

from .servers import ServerThread

APP = "examples.fastapi_app:app"


def test_without_a_key_the_app_runs_on_an_embedded_emulator_and_logs_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No OXEN_API_KEY: startup succeeds, the log names the embedded emulator, a job can be
    enqueued and read back, and the environment is restored once the app stops."""
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    monkeypatch.delenv("OXEN_BASE_URL", raising=False)
    server = ServerThread(APP)  # its configuration sets uvicorn's log level: set ours after
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    with server:
        (line,) = [r.getMessage() for r in caplog.records if "oxen-queue:" in r.getMessage()]
        assert line.startswith("oxen-queue: OXEN_API_KEY is not set; using an embedded emulator")
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            created = http.post("/jobs", json={"prompt": "an offline ox"})
            assert created.status_code == 202
            job = http.get(f"/jobs/{created.json()['generation_id']}")
            assert job.status_code == 200
            assert job.json()["prompt"] == "an offline ox"
    assert "OXEN_API_KEY" not in os.environ


def test_with_a_key_the_app_logs_the_hub_it_uses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With OXEN_API_KEY set, the log names the hub from OXEN_BASE_URL."""
    monkeypatch.setenv("OXEN_API_KEY", "k")
    monkeypatch.setenv("OXEN_BASE_URL", "http://127.0.0.1:9")  # never asked: nothing enqueued
    server = ServerThread(APP)
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    with server:
        messages = [r.getMessage() for r in caplog.records]
    assert "oxen-queue: using the hub at http://127.0.0.1:9" in messages
