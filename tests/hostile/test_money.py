"""Money from a hostile server (issue 14): the emulator's answers rewritten with negative
charges, ``NaN`` as a string, a price of ``1e1000000``.

A refused charge leaves its job counted at its estimate (the budget binds as it should); a
refused price is unknown (``CostUnknownError`` naming it, other prices still work); a refused
``total_cost`` is ``None``. The client's ``async with`` ends cleanly, the console script ends
with a line and its documented exit status, and the example app's ``/estimate`` answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from oxen_queue import BudgetExceededError, CostUnknownError, Generation

from ..cli.support import finish, run, spawn, write_prompts
from ..servers import ServerThread
from .server import Action, Exchange, HostileServer
from .support import API_KEY, PROMPT, make_client

D = Decimal
HIGH = D("0.28")  # gpt-image-2 at its defaults (high quality, 1920x1080)
LOW: dict[str, Any] = {"quality": "low", "resolution": "1024x1024"}  # 0.02, as published
CELL = "cost_per_image_grid['high']['1920x1080']"
MODEL = "/api/ai/models/gpt-image-2"
DETAILS = "/api/ai/generations/{id}"


def rewritten(change: Callable[[Any], None], raw: str | None = None) -> Action:
    """Let the emulator answer, then answer its JSON body changed in place by ``change``;
    a string ``"@raw@"`` in it is written as the JSON literal ``raw`` (``1e1000000``, which
    ``json.dumps`` cannot write)."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        data = json.loads(captured.body)
        change(data)
        text = json.dumps(data)
        if raw is not None:
            text = text.replace('"@raw@"', raw)
        body = text.encode()
        await ex.start(captured.status, [(b"content-type", b"application/json")], len(body))
        await ex.body(body, more=False)

    return action


def charged(cost: object) -> Action:
    """Details rows (``GET /api/ai/generations/{id}``) charged ``cost``."""

    def change(data: dict[str, Any]) -> None:
        data["generation"]["cost"] = cost

    return rewritten(change)


def priced(cell: object, raw: str | None = None) -> Action:
    """gpt-image-2's price at its defaults (high, 1920x1080) replaced by ``cell``."""

    def change(data: dict[str, Any]) -> None:
        data["pricing"]["cost_per_image_grid"]["high"]["1920x1080"] = cell

    return rewritten(change, raw)


HOSTILE_PRICES = [
    pytest.param("@raw@", "1e1000000", id="number-1e1000000"),
    pytest.param("1e1000000", None, id="string-1e1000000"),
    pytest.param("-1", None, id="negative"),
    pytest.param("NaN", None, id="NaN"),
]


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="oxen_queue"):
        yield caplog


async def finished(generation: Generation) -> None:
    with anyio.fail_after(10):
        await generation


@pytest.mark.anyio
@pytest.mark.parametrize("cost", ["-5.00", "NaN", "1e1000000", "Infinity", "-0.01", True])
async def test_a_refused_charge_leaves_the_job_at_its_estimate_and_the_budget_binds(
    server: HostileServer, warnings: pytest.LogCaptureFixture, cost: object
) -> None:
    server.on("GET", DETAILS, charged(cost))
    async with make_client(server, max_spend=D("0.60")) as client:
        generations = [await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}") for i in (1, 2)]
        for generation in generations:
            await finished(generation)
            record = await client.get_generation_details(generation.id)  # settles, if it can
            assert record.cost is None
        spend = client.spend
        assert spend is not None
        assert (spend.committed, spend.charged, spend.unsettled) == (2 * HIGH, D(0), 2)
        # On main a cost of -5.00 drove committed spend to -9.44 here, and this was sent.
        with pytest.raises(BudgetExceededError):
            await client.enqueue("gpt-image-2", prompt=PROMPT)
    assert server.count("POST", "/api/ai/queue") == 2
    assert "ignored the cost of" in warnings.text


@pytest.mark.anyio
@pytest.mark.parametrize(("cell", "raw"), HOSTILE_PRICES)
async def test_a_hostile_price_is_unknown_and_named_and_the_others_still_price(
    server: HostileServer, warnings: pytest.LogCaptureFixture, cell: str, raw: str | None
) -> None:
    server.on("GET", MODEL, priced(cell, raw))
    async with make_client(server, max_spend=D(1)) as client:
        with pytest.raises(CostUnknownError) as unknown:
            await client.enqueue("gpt-image-2", prompt=PROMPT)
        assert unknown.value.missing == CELL
        with pytest.raises(CostUnknownError):
            await client.estimate_cost("gpt-image-2")
        assert await client.estimate_cost("gpt-image-2", **LOW) == D("0.02")
        cheap = await client.enqueue("gpt-image-2", prompt=PROMPT, **LOW)
        await finished(cheap)
        await client.get_generation_details(cheap.id)
        assert client.spend is not None and client.spend.committed == D("0.02")
    assert server.count("POST", "/api/ai/queue") == 1  # the refused request was never sent
    assert server.count("GET", MODEL) == 1
    assert f"{CELL}: " in warnings.text


@pytest.mark.anyio
@pytest.mark.parametrize("total", ["1e1000000", "-3.00", "NaN", [1]])
async def test_a_hostile_total_cost_is_none_and_the_rows_are_still_read(
    server: HostileServer, warnings: pytest.LogCaptureFixture, total: object
) -> None:
    def change(data: dict[str, Any]) -> None:
        data["total_cost"] = total

    server.on("GET", "/api/ai/generations", rewritten(change))
    async with make_client(server) as client:
        generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        await finished(generation)
        page = await client.list_generations()
        assert page.total_cost is None
        assert [row.generation_id for row in page.generations] == [generation.id]
        assert page.generations[0].cost == HIGH
        history = client.iter_generations()
        assert [row.generation_id async for row in history] == [generation.id]
        assert history.total_cost is None
    assert "ignored the total_cost" in warnings.text


# -- the console script and the example app ----------------------------------------------


@pytest.fixture
def hub(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> HostileServer:
    """The hostile server, reached through the environment as the console script does."""
    monkeypatch.setenv("OXEN_BASE_URL", server.base_url)
    monkeypatch.setenv("OXEN_API_KEY", API_KEY)
    monkeypatch.setenv("COLUMNS", "250")  # whole lines: rich folds at 80 columns otherwise
    return server


@pytest.mark.parametrize(("cell", "raw"), HOSTILE_PRICES)
def test_a_dry_run_against_a_hostile_price_says_it_is_unknown_without_a_traceback(
    hub: HostileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cell: str,
    raw: str | None,
) -> None:
    hub.on("GET", MODEL, priced(cell, raw))
    prompts = write_prompts(tmp_path, "an ox", '{"prompt": "a cheap ox", "quality": "low"}')
    argv = ["batch", str(prompts), "--out", str(tmp_path / "out"), "--dry-run"]
    status, stdout, stderr = run([*argv, "--max-spend", "1"], capsys)
    assert status == 1  # documented: a request without an estimate
    # The refused price is named in one warning line (the CLI's), never a traceback.
    assert all(line.startswith("warning: ") for line in stderr.splitlines()), stderr
    assert "Traceback" not in stderr
    assert f"#1 (line 1): gpt-image-2 publishes a {CELL} this client cannot use" in stdout
    assert "estimated total: 0.02 for 1 request; 1 request without an estimate" in stdout
    assert "#1 (line 1) has no estimate, so the run stops there" in stdout
    assert hub.count("POST", "/api/ai/queue") == 0


@pytest.mark.parametrize(("cell", "raw"), HOSTILE_PRICES[:3])
def test_a_budgeted_run_against_a_hostile_price_sends_nothing_and_says_so_in_a_line(
    hub: HostileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cell: str,
    raw: str | None,
) -> None:
    hub.on("GET", MODEL, priced(cell, raw))
    prompts = write_prompts(tmp_path, "an ox", "another ox")
    argv = ["batch", str(prompts), "--out", str(tmp_path / "out"), "--max-spend", "1"]
    status, stdout, stderr = run(argv, capsys)
    assert status == 1  # documented: not every request succeeded
    assert "Traceback" not in stdout + stderr
    assert "budget reached (--max-spend 1): 2 requests left unsent." in stdout
    assert hub.count("POST", "/api/ai/queue") == 0


@pytest.mark.slow
def test_a_dry_run_as_a_real_process_against_a_price_of_1e1000000(
    hub: HostileServer, tmp_path: Path
) -> None:
    hub.on("GET", MODEL, priced("@raw@", "1e1000000"))
    prompts = write_prompts(tmp_path, "an ox")
    status, stdout, stderr = finish(spawn("batch", str(prompts), "--dry-run"))
    assert status == 1
    # At most the library's one warning line (Python's last-resort handler prints it).
    assert "Traceback" not in stderr and len(stderr.splitlines()) <= 1
    assert "this client cannot use" in stdout and "Traceback" not in stdout


@pytest.mark.anyio
async def test_the_example_apps_estimate_answers_a_hostile_price_cleanly(
    hub: HostileServer,
) -> None:
    hub.on("GET", MODEL, priced("@raw@", "1e1000000"))
    with ServerThread("examples.fastapi_app:app") as app:
        async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:
            hostile = await http.get("/estimate")
            cheap = await http.get("/estimate", params=LOW)
    assert hostile.status_code == 200
    assert hostile.json()["cost"] is None
    assert CELL in hostile.json()["reason"]
    assert cheap.json()["cost"] == "0.02"
