"""The emulator's parts on their own: config, catalog, validation, clock, wake-ups, admin."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import anyio
import pytest

from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._catalog import MODELS
from oxen_queue.testing._state import EmulatorState
from oxen_queue.testing._validation import check_params
from oxen_queue.testing._wakeup import Signal

from ..helpers import eventually
from ._support import asgi_client, enqueue


@pytest.mark.parametrize(
    "changes",
    [
        {"queue_delay": (2.0, 1.0)},
        {"image_duration": (-1.0, 1.0)},
        {"video_duration": (1.0,)},
        {"time_scale": -0.5},
        {"time_scale": float("nan")},
        {"failure_rate": 1.5},
        {"unrelated_event_rate": -0.1},
        {"keepalive_interval": 0},
        {"url_ttl": -1},
        {"max_generations_per_request": 0},
        {"max_generations_per_request": True},
        {"api_key": ""},
        {"files_origin": "ftp://files"},
        {"files_origin": "http://files.test/some/path"},
    ],
)
def test_bad_config_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(changes))):
        EmulatorConfig(**changes)


def test_config_normalises_lists_and_hides_the_key() -> None:
    config = EmulatorConfig(queue_delay=[0, 1], api_key="hush")  # type: ignore[arg-type]
    assert config.queue_delay == (0.0, 1.0)
    assert "hush" not in repr(config)
    assert config.replace(time_scale=0.5).api_key == "hush"


@pytest.mark.parametrize(
    ("model", "params", "cost"),
    [
        ("gpt-image-2", {}, "0.28"),  # high, 1920x1080: the standard tier
        ("gpt-image-2", {"quality": "low", "resolution": "1024x768"}, "0.02"),
        ("gpt-image-2", {"quality": "medium", "resolution": "2560x1440"}, "0.19"),
        ("gpt-image-2", {"quality": "auto", "resolution": "3840x2160"}, "1.47"),
        ("gpt-image-2", {"resolution": "999x999"}, "0.28"),  # billed at the default
        ("black-forest-labs-flux-2-klein-4b", {}, "0.004"),
        ("kling-video-v2-6-pro-text-to-video", {}, "0.35"),
        ("kling-video-v2-6-pro-text-to-video", {"duration": 10, "generate_audio": True}, "1.40"),
        ("kling-video-v2-6-pro-text-to-video", {"generate_audio": "yes"}, "0.35"),
        ("gpt-image-2-edit", {"quality": "low", "resolution": "3840x2160"}, "0.06"),
        ("gpt-image-2-edit", {}, "0.30"),
    ],
)
def test_costs_follow_each_models_pricing(model: str, params: dict[str, Any], cost: str) -> None:
    assert MODELS[model].cost(params) == Decimal(cost)


def test_a_chat_model_costs_nothing_and_renders_nothing() -> None:
    chat = MODELS["gpt-4o-mini"]
    assert chat.media_type is None and chat.cost({}) is None
    with pytest.raises(ValueError, match="no image or video"):
        chat.output({})


def test_validation_reports_every_problem_in_schema_order() -> None:
    schema = MODELS["kling-video-v2-6-pro-text-to-video"].request_schema
    assert schema is not None
    problems = check_params(schema, {"zzz": 1, "duration": "5", "prompt": "", "seed": None})
    assert [str(p) for p in problems] == [
        "prompt: cannot be empty",
        "duration: must be an integer",
        "zzz: is not a parameter of this model",
    ]
    assert check_params(schema, {"prompt": "ok", "generate_audio": True, "cfg_scale": 0}) == []
    assert [str(p) for p in check_params(schema, {"prompt": "ok", "generate_audio": 1})] == [
        "generate_audio: must be a boolean"
    ]


def test_validation_checks_type_lists_arrays_and_their_items() -> None:
    schema = MODELS["gpt-image-2-edit"].request_schema
    assert schema is not None

    def problems(**params: Any) -> list[str]:
        return [str(p) for p in check_params(schema, {"prompt": "ok", **params})]

    assert problems(input_image="u") == problems(input_image=["u", "v"]) == []
    assert problems(input_image=3) == ["input_image: must be a string or an array"]
    assert problems(input_image=[]) == ["input_image: must have at least 1 item"]
    assert problems(input_image=["u", None]) == ["input_image: item 1 must be a string"]
    assert problems(input_image="u", mask=["m"]) == ["mask: must be a string"]


def test_unknown_parameters_are_refused_only_where_the_schema_says_so() -> None:
    closed = {"properties": {"a": {"type": "string"}}, "additionalProperties": False}
    open_ = {"properties": {"a": {"type": "string"}}}
    assert [str(p) for p in check_params(closed, {"b": 1})] == [
        "b: is not a parameter of this model"
    ]
    assert check_params(open_, {"b": 1}) == []
    for model in MODELS.values():
        assert model.request_schema is None or model.request_schema["additionalProperties"] is False


def test_a_manual_clock_only_moves_forward_and_tells_its_listeners() -> None:
    clock = ManualClock(start=10.0, wall_start=1000.0)
    calls: list[float] = []
    unsubscribe = clock.subscribe(lambda: calls.append(clock.now()))
    clock.advance(2.5)
    assert (clock.now(), clock.to_wall(clock.now())) == (12.5, 1002.5)
    unsubscribe()
    clock.advance(1.0)
    assert calls == [12.5]
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1.0)


@pytest.mark.anyio
async def test_a_signal_set_from_another_thread_wakes_its_waiter() -> None:
    signal = Signal()
    timer = threading.Timer(0.05, signal.set)
    timer.start()
    with anyio.fail_after(20):  # a waiter never woken would hang
        await signal.wait()
    timer.join()
    assert signal.is_set()
    signal.clear()
    assert not signal.is_set()


@pytest.mark.anyio
async def test_the_scheduler_task_applies_transitions_on_time() -> None:
    state = EmulatorState(
        config=EmulatorConfig(queue_delay=(0.02, 0.02), image_duration=(0.02, 0.02))
    )
    user = state.user_for_key("k")
    async with anyio.create_task_group() as group:
        group.start_soon(state.run_scheduler)
        [job] = state.enqueue(user, MODELS["gpt-image-2"], {"prompt": "x"})
        await eventually(lambda: job.status == "succeeded")
        group.cancel_scope.cancel()
    assert job.completed_at is not None and job.started_at is not None
    assert job.completed_at - job.started_at == pytest.approx(0.02, abs=0.01)


@pytest.mark.anyio
async def test_admin_routes_read_stats_and_change_the_clock() -> None:
    clock = ManualClock()
    app = create_app(clock=clock)
    async with asgi_client(app) as client:
        await enqueue(client)
        stats = (await client.get("/_emulator/stats")).json()
        assert set(stats) == {
            "requests",
            "jobs_created",
            "jobs_by_prompt",
            "jobs_by_status",
            "jobs_billed",
            "completion_times",
            "events",
            "sse_connections",
            "sse_open",
            "faults",
            "file_requests",
            "sync_generations",
            "time_scale",
        }
        assert stats["requests"] == {"POST /api/ai/queue": 1}
        assert stats["jobs_by_status"] == {"queued": 1}
        answer = (await client.post("/_emulator/clock", json={"advance": 60})).json()
        assert answer == {"time_scale": 1.0, "manual": True, "now": 60.0}
        assert app.state.snapshot()["jobs_by_status"] == {"succeeded": 1}
        assert (await client.post("/_emulator/clock", json={"time_scale": 0.5})).status_code == 200
        assert app.state.time_scale == 0.5
        assert (await client.post("/_emulator/clock", json={"time_scale": -1})).status_code == 400
        assert (await client.post("/_emulator/clock", json={"speed": 2})).status_code == 400
        assert (await client.post("/_emulator/reset")).json() == {"status": "success"}
        assert app.state.snapshot()["jobs_created"] == 0
    real = create_app()
    async with asgi_client(real) as client:
        assert (await client.post("/_emulator/clock", json={"advance": 1})).status_code == 409


def test_time_scale_changes_apply_to_new_jobs() -> None:
    clock = ManualClock()
    state = EmulatorState(config=EmulatorConfig(seed=1), clock=clock)
    user = state.user_for_key("k")
    [slow] = state.enqueue(user, MODELS["gpt-image-2"], {"prompt": "x"})
    state.time_scale = 0.0
    [instant] = state.enqueue(user, MODELS["gpt-image-2"], {"prompt": "x"})
    state.advance()
    assert (slow.status, instant.status) == ("queued", "succeeded")


def test_ten_thousand_jobs_are_scheduled_and_listed_quickly() -> None:
    clock = ManualClock()
    state = EmulatorState(config=EmulatorConfig(seed=1), clock=clock)
    user = state.user_for_key("k")
    model = MODELS["gpt-image-2"]
    started = time.perf_counter()
    for _ in range(2_500):
        state.enqueue(user, model, {"prompt": "x"}, count=4)
    enqueued = time.perf_counter() - started
    assert len(state.find(user, active_only=True)) == 10_000
    clock.advance(1.0)
    started = time.perf_counter()
    state.advance()
    clock.advance(60.0)
    state.advance()
    advanced = time.perf_counter() - started
    assert state.find(user, active_only=True) == []
    rows = state.find(user, status="succeeded")
    started = time.perf_counter()
    body = b",".join(job.queue_json() for job in rows)
    encoded = time.perf_counter() - started
    assert len(rows) == 10_000 and body.count(b'"generation_id"') == 10_000
    # Generous bounds for a loaded CI machine (typically 10-20 times faster).
    assert (enqueued, advanced, encoded) < (5.0, 5.0, 5.0)
    assert max(enqueued, advanced, encoded) < 5.0
