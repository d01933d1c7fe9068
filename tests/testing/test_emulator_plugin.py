"""The pytest plugin, the command-line server, and what importing the package costs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from oxen_queue.testing import Emulator, use_emulator

from ._support import auth


def test_the_fixture_runs_an_emulator_and_points_the_environment_at_it(
    oxen_emulator: Emulator,
) -> None:
    assert os.environ["OXEN_BASE_URL"] == oxen_emulator.base_url
    assert oxen_emulator.config.time_scale == 0.01
    response = httpx.get(
        f"{oxen_emulator.base_url}/api/ai/models", headers=auth(os.environ["OXEN_API_KEY"])
    )
    assert response.status_code == 200


@pytest.mark.oxen_emulator(failure_rate=1.0, max_generations_per_request=12)
def test_the_marker_overrides_config_fields(oxen_emulator: Emulator) -> None:
    assert oxen_emulator.config.failure_rate == 1.0
    assert oxen_emulator.config.max_generations_per_request == 12
    assert oxen_emulator.config.time_scale == 0.01  # the fixture's default stays


@pytest.mark.anyio
async def test_the_fixture_serves_async_tests_too(oxen_emulator: Emulator) -> None:
    async with httpx.AsyncClient(base_url=oxen_emulator.base_url, headers=auth()) as client:
        assert (await client.get("/api/ai/queue")).json() == {"count": 0, "generations": []}


@pytest.mark.slow
def test_the_plugin_is_registered_by_the_entry_point(tmp_path: Path) -> None:
    test_file = tmp_path / "test_user_suite.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import os

            import httpx
            import pytest
            from oxen_queue.testing import EmulatorConfig


            @pytest.fixture
            def oxen_emulator_config():
                return EmulatorConfig(time_scale=0.0)


            def test_enqueue(oxen_emulator):
                key = os.environ["OXEN_API_KEY"]
                response = httpx.post(
                    os.environ["OXEN_BASE_URL"] + "/api/ai/queue",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "gpt-image-2", "prompt": "hi"},
                )
                assert response.status_code == 200
                assert oxen_emulator.stats()["jobs_created"] == 1
                assert oxen_emulator.config.time_scale == 0.0


            @pytest.mark.oxen_emulator(seed=3)
            def test_marker(oxen_emulator):
                assert oxen_emulator.config.seed == 3
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "--strict-markers",
            str(test_file),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.slow
def test_pytest_runs_without_the_emulator_extra_and_the_fixture_says_what_to_install(
    tmp_path: Path,
) -> None:
    """Where the emulator extra is missing (uvicorn cannot be imported here), pytest still
    starts with the plugin loaded: a test that does not use the fixture passes, and one that
    does errors with the line to install the extra."""
    (tmp_path / "test_user_suite.py").write_text(
        textwrap.dedent(
            """
            def test_without_the_emulator():
                assert True


            def test_with_the_emulator(oxen_emulator):
                raise AssertionError("never reached")
            """
        )
    )
    code = (
        "import sys\n"
        "sys.modules['uvicorn'] = None\n"
        "import pytest\n"
        "raise SystemExit(pytest.main(['-q', '-p', 'no:cacheprovider', '-W', 'error', "
        "'test_user_suite.py']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "1 passed, 1 error" in result.stdout, result.stdout + result.stderr
    assert "pip install 'oxen-queue[emulator]'" in result.stdout


@pytest.mark.slow
def test_loading_the_plugin_imports_no_server_or_media_library() -> None:
    # Not h11: it is also the HTTP/1.1 engine of httpx's own transport (httpx 0.27, the lowest
    # version accepted, imports it with httpx), so its presence says nothing about the server.
    code = (
        "import sys, oxen_queue._pytest_plugin\n"
        "print(sorted(m for m in ('uvicorn', 'PIL', 'av', 'starlette') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_run_server_serves_until_ctrl_c_and_never_logs_the_key() -> None:
    code = "from oxen_queue.testing import run_server; run_server(port=0, api_key='cli-secret-k')"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    try:
        base_url = ""
        deadline = time.monotonic() + 20
        while not base_url and time.monotonic() < deadline:
            line = process.stderr.readline()
            if "Oxen API emulator at " in line:
                base_url = line.split("Oxen API emulator at ", 1)[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base_url, timeout=5) as client:
            assert client.get("/api/ai/models", headers=auth("wrong")).status_code == 401
            enqueue = client.post(
                "/api/ai/queue",
                headers=auth("cli-secret-k"),
                json={"model": "gpt-image-2", "prompt": "x"},
            )
            assert enqueue.status_code == 200
            with client.stream("GET", "/api/events", headers=auth("cli-secret-k")) as stream:
                assert stream.status_code == 200
                process.send_signal(signal.SIGINT)  # with an event stream open
                assert list(stream.iter_lines()) == []  # ended by the shutdown
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "cli-secret-k" not in stdout + stderr


def test_use_emulator_points_the_environment_at_it_then_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    monkeypatch.setenv("OXEN_BASE_URL", "https://hub.example")
    with use_emulator() as emu:
        assert emu is not None
        assert os.environ["OXEN_BASE_URL"] == emu.base_url
        response = httpx.get(
            f"{emu.base_url}/api/ai/models", headers=auth(os.environ["OXEN_API_KEY"])
        )
        assert response.status_code == 200
    assert os.environ["OXEN_BASE_URL"] == "https://hub.example"
    assert "OXEN_API_KEY" not in os.environ
    monkeypatch.setenv("OXEN_API_KEY", "real-key")
    with use_emulator(unless_key_set=True) as nothing:
        assert nothing is None
