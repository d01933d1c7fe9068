"""The queue endpoints, in-process (httpx.ASGITransport) on a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from oxen_queue.testing import EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp

from ._support import KEY, OTHER_KEY, PROMPT, OpenAPI, asgi_client, enqueue

pytestmark = pytest.mark.anyio

NOT_FOUND = {
    "error": {"type": "resource_not_found", "title": "The requested resource could not be found"},
    "status": "error",
    "status_message": "resource_not_found",
}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=7), clock=clock)


@pytest.fixture
async def client(app: EmulatorApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


async def test_enqueue_answers_one_queued_generation_per_num_generations(
    client: httpx.AsyncClient, app: EmulatorApp, openapi: OpenAPI
) -> None:
    response = await client.post(
        "/api/ai/queue", json={"model": "gpt-image-2", "prompt": PROMPT, "num_generations": 3}
    )
    assert response.status_code == 200
    body = response.json()
    openapi.validate("QueueCreateResponse", body)
    assert [item["status"] for item in body["generations"]] == ["queued"] * 3
    assert len({item["generation_id"] for item in body["generations"]}) == 3
    assert app.state.stats.jobs_created == 3
    assert app.state.stats.jobs_by_prompt[PROMPT] == 3


async def test_a_job_goes_queued_processing_succeeded_with_params_merged_into_its_row(
    client: httpx.AsyncClient, clock: ManualClock, openapi: OpenAPI
) -> None:
    [gid] = await enqueue(client, resolution="1024x768", quality="low", target_repo="r")
    row = (await client.get(f"/api/ai/queue/{gid}")).json()
    openapi.validate("QueueGenerationResponse", row)
    assert row["status"] == "queued"
    assert row["started_at"] is None and row["result_url"] is None
    assert (row["prompt"], row["resolution"], row["quality"]) == (PROMPT, "1024x768", "low")
    assert "model" not in row and "num_generations" not in row
    assert row["model_name"] == "gpt-image-2" and row["media_type"] == "image"
    assert row["target_repo"] == "r" and row["target_namespace"].startswith("user-")

    clock.advance(2.0)  # past the longest queue delay (0.5-2.0 s)
    row = (await client.get(f"/api/ai/queue/{gid}")).json()
    openapi.validate("QueueGenerationResponse", row)
    assert row["status"] == "processing"
    assert isinstance(row["started_at"], int) and row["completed_at"] is None

    clock.advance(5.0)  # past the longest image duration (2-5 s)
    row = (await client.get(f"/api/ai/queue/{gid}")).json()
    openapi.validate("QueueGenerationResponse", row)
    assert row["status"] == "succeeded"
    assert row["error_message"] is None
    assert row["enqueued_at"] <= row["started_at"] <= row["completed_at"]
    assert row["result_url"].startswith("http://files.oxen.test/files/")


async def test_rows_persist_after_the_end(client: httpx.AsyncClient, clock: ManualClock) -> None:
    [gid] = await enqueue(client)
    clock.advance(60.0)
    for _ in range(3):
        assert (await client.get(f"/api/ai/queue/{gid}")).json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"prompt": "x"}, 400, "model is required"),
        ({"model": 3, "prompt": "x"}, 400, "model is required"),
        ({"model": "no-such-model", "prompt": "x"}, 400, "Model not found: no-such-model"),
        ({"model": "gpt-4o-mini", "prompt": "x"}, 400, ":unsupported_media_type"),
        ({"model": "gpt-image-2", "num_generations": 0}, 400, "between 1 and 4"),
        ({"model": "gpt-image-2", "num_generations": 5}, 400, "between 1 and 4"),
        ({"model": "gpt-image-2", "num_generations": "2"}, 400, "between 1 and 4"),
        ({"model": "gpt-image-2", "num_generations": True}, 400, "between 1 and 4"),
        ({"model": "gpt-image-2", "target_repo": 5}, 400, "target_repo must be a string"),
    ],
)
async def test_enqueue_refuses_what_the_api_checks_synchronously(
    client: httpx.AsyncClient,
    app: EmulatorApp,
    body: dict[str, object],
    status: int,
    error: str,
) -> None:
    response = await client.post("/api/ai/queue", json=body)
    assert response.status_code == status
    assert error in response.text
    assert app.state.stats.jobs_created == 0


async def test_enqueue_error_bodies_are_the_documented_ones(client: httpx.AsyncClient) -> None:
    async def error(body: object) -> object:
        return (await client.post("/api/ai/queue", json=body)).json()

    assert await error({"model": "gpt-image-2", "num_generations": 9}) == {
        "error": {"message": "num_generations must be an integer between 1 and 4"}
    }
    assert await error({"model": "bad-model-name"}) == {
        "error": {"message": "Model not found: bad-model-name"}
    }
    assert await error({"model": "gpt-4o-mini"}) == {
        "error": {"message": ":unsupported_media_type"}
    }
    missing = await error({"prompt": "no model"})
    assert missing == {
        "error": {
            "type": "invalid_params",
            "title": "Invalid request parameters",
            "detail": "model is required and must be a string",
        },
        "status": "error",
        "status_message": "invalid_params",
    }
    bad_json = await client.post("/api/ai/queue", content=b"{nope")
    assert bad_json.status_code == 400
    assert bad_json.json()["status_message"] == "invalid_params"


@pytest.mark.parametrize(
    "path", ["/api/ai/queue", "/api/ai/images/generate", "/api/ai/videos/generate"]
)
async def test_a_body_nested_past_the_recursion_limit_is_an_invalid_params_answer(
    client: httpx.AsyncClient, path: str
) -> None:
    """100,000 ``[``: ``json`` raises ``RecursionError``, which answered 500 with a traceback."""
    response = await client.post(path, content=b"[" * 100_000)
    assert response.status_code == 400
    assert response.json()["status_message"] == "invalid_params"


async def test_the_generations_limit_is_configurable(clock: ManualClock) -> None:
    app = create_app(config=EmulatorConfig(max_generations_per_request=12), clock=clock)
    async with asgi_client(app) as client:
        assert len(await enqueue(client, num_generations=12)) == 12
        response = await client.post(
            "/api/ai/queue", json={"model": "gpt-image-2", "num_generations": 13}
        )
        assert response.json() == {
            "error": {"message": "num_generations must be an integer between 1 and 12"}
        }


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"resolution": "999x999"}, "resolution: must be one of 1024x768, 1024x1024, 1024x1536"),
        ({"prompt": "   "}, "prompt: cannot be empty"),
        ({"prompt": None}, "prompt: is required"),
        ({"colour": "red"}, "colour: is not a parameter of this model"),
        ({"quality": 3}, "quality: must be a string"),
        ({"output_format": "gif"}, "output_format: must be one of png, jpeg, webp"),
    ],
)
async def test_bad_model_params_are_accepted_then_fail_at_run_time_and_are_billed(
    client: httpx.AsyncClient,
    app: EmulatorApp,
    clock: ManualClock,
    params: dict[str, object],
    names: str,
) -> None:
    [gid] = await enqueue(client, **params)
    assert (await client.get(f"/api/ai/queue/{gid}")).json()["status"] == "queued"
    clock.advance(2.0)
    row = (await client.get(f"/api/ai/queue/{gid}")).json()
    assert row["status"] == "failed"
    assert row["result_url"] is None
    assert row["error_message"].startswith("Getting model response error: 422 - ")
    assert names in row["error_message"]
    history = (await client.get(f"/api/ai/generations/{gid}")).json()["generation"]
    assert history["cost"] is not None  # the API bills, then fails
    assert app.state.stats.jobs_billed == 1


async def test_range_and_type_checks_of_other_models(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    [steps] = await enqueue(
        client, model="black-forest-labs-flux-2-klein-4b", num_inference_steps=99
    )
    [seed] = await enqueue(client, model="black-forest-labs-flux-2-klein-4b", seed=1.5)
    [cfg] = await enqueue(client, model="kling-video-v2-6-pro-text-to-video", cfg_scale=11)
    [duration] = await enqueue(client, model="kling-video-v2-6-pro-text-to-video", duration=7)
    clock.advance(2.0)

    async def error(gid: str) -> str:
        return str((await client.get(f"/api/ai/queue/{gid}")).json()["error_message"])

    assert "num_inference_steps: must be between 1 and 50" in await error(steps)
    assert "seed: must be an integer" in await error(seed)
    assert "cfg_scale: must be between 0 and 10" in await error(cfg)
    assert "duration: must be one of 5, 10" in await error(duration)


async def test_failure_rate_fails_jobs_with_insufficient_credits_charged_nothing(
    clock: ManualClock,
) -> None:
    app = create_app(config=EmulatorConfig(failure_rate=1.0), clock=clock)
    async with asgi_client(app) as client:
        [gid] = await enqueue(client)
        clock.advance(2.0)
        row = (await client.get(f"/api/ai/generations/{gid}")).json()["generation"]
    assert row["status"] == "failed"
    assert row["error_message"] == "Insufficient credits"
    assert row["cost"] == "0"
    assert app.state.stats.jobs_billed == 0


async def test_cancel_keeps_the_row_as_cancelled_and_sends_no_event(
    client: httpx.AsyncClient, app: EmulatorApp, clock: ManualClock, openapi: OpenAPI
) -> None:
    [gid] = await enqueue(client)
    response = await client.delete(f"/api/ai/queue/{gid}")
    assert response.status_code == 200
    openapi.validate("QueueDeleteResponse", response.json())
    assert response.json() == {"status": "success", "generation_id": gid}
    row = (await client.get(f"/api/ai/queue/{gid}")).json()
    assert row["status"] == "cancelled"
    assert isinstance(row["completed_at"], int)
    clock.advance(60.0)
    assert (await client.get(f"/api/ai/queue/{gid}")).json()["status"] == "cancelled"
    assert app.state.stats.events_published == 0
    assert gid in app.state.stats.completion_times


async def test_cancelling_a_terminal_generation_has_no_effect_and_answers_200(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    [gid] = await enqueue(client)
    clock.advance(60.0)
    response = await client.delete(f"/api/ai/queue/{gid}")
    assert response.status_code == 200
    assert response.json() == {"status": "success", "generation_id": gid}
    assert (await client.get(f"/api/ai/queue/{gid}")).json()["status"] == "succeeded"


async def test_unknown_ids_answer_the_documented_404(client: httpx.AsyncClient) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/api/ai/queue/{unknown}")
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    response = await client.get(f"/api/ai/generations/{unknown}")
    assert (response.status_code, response.json()) == (404, NOT_FOUND)


async def test_another_users_generations_are_invisible(
    app: EmulatorApp, client: httpx.AsyncClient
) -> None:
    [gid] = await enqueue(client)
    async with asgi_client(app, key=OTHER_KEY) as other:
        assert (await other.get(f"/api/ai/queue/{gid}")).status_code == 404
        assert (await other.delete(f"/api/ai/queue/{gid}")).status_code == 404
        assert (await other.get(f"/api/ai/generations/{gid}")).status_code == 404
        assert (await other.get("/api/ai/queue")).json() == {"count": 0, "generations": []}
        assert (await other.get("/api/ai/generations")).json()["total_entries"] == 0
    assert (await client.get("/api/ai/queue")).json()["count"] == 1


async def test_requests_without_a_bearer_key_are_401(app: EmulatorApp) -> None:
    async with asgi_client(app, key=None) as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
            response = await client.get("/api/ai/queue", headers=headers)
            assert response.status_code == 401
            assert response.json()["status_message"] == "unauthenticated"


async def test_a_configured_api_key_is_the_only_one_accepted(clock: ManualClock) -> None:
    app = create_app(config=EmulatorConfig(api_key="the-secret"), clock=clock)
    async with asgi_client(app, key="not-the-secret") as wrong:
        assert (await wrong.get("/api/ai/models")).status_code == 401
    async with asgi_client(app, key="the-secret") as right:
        assert (await right.get("/api/ai/models")).status_code == 200
    assert "the-secret" not in repr(app.config)


async def test_the_api_key_never_appears_in_any_answer(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    [gid] = await enqueue(client, target_directory="d")
    clock.advance(60.0)
    bodies = [
        (await client.get(path)).text
        for path in (
            f"/api/ai/queue/{gid}",
            "/api/ai/queue?status=succeeded",
            "/api/ai/generations",
            f"/api/ai/generations/{gid}",
            "/_emulator/stats",
        )
    ]
    assert all(KEY not in body for body in bodies)


async def test_the_queue_lists_active_rows_by_default_in_enqueue_order(
    client: httpx.AsyncClient, clock: ManualClock, openapi: OpenAPI
) -> None:
    first = await enqueue(client, num_generations=2)
    clock.advance(60.0)  # these finish
    second = await enqueue(client, num_generations=2)
    listing = (await client.get("/api/ai/queue")).json()
    openapi.validate("QueueListResponse", listing)
    assert listing["count"] == 2
    assert [row["generation_id"] for row in listing["generations"]] == second
    done = (await client.get("/api/ai/queue", params={"status": "succeeded"})).json()
    assert [row["generation_id"] for row in done["generations"]] == first
    assert (await client.get("/api/ai/queue", params={"status": "bogus"})).status_code == 400


async def test_the_queue_filters_by_model_media_type_namespace_repo_and_folder(
    client: httpx.AsyncClient,
) -> None:
    [image] = await enqueue(client, target_repo="repo-a", target_directory="dir-a")
    [video] = await enqueue(client, model="kling-video-v2-6-pro-text-to-video")
    [org] = await enqueue(client, target_namespace="my-org")

    async def ids(**params: str) -> list[str]:
        listing = (await client.get("/api/ai/queue", params=params)).json()
        assert listing["count"] == len(listing["generations"])
        return [row["generation_id"] for row in listing["generations"]]

    assert await ids() == [image, video]  # the namespace defaults to the caller's
    assert await ids(model="gpt-image-2") == [image]
    assert await ids(media_type="video") == [video]
    assert await ids(namespace="my-org") == [org]
    assert await ids(repo="repo-a") == [image]
    assert await ids(folder="dir-a") == [image]
    assert await ids(folder="elsewhere") == []
    assert (await client.get("/api/ai/queue", params={"media_type": "audio"})).status_code == 400


async def test_generations_are_paginated_newest_first_with_total_cost(
    client: httpx.AsyncClient, clock: ManualClock, openapi: OpenAPI
) -> None:
    ids = [gid for _ in range(7) for gid in await enqueue(client, quality="low")]
    first = (await client.get("/api/ai/generations", params={"page_size": 3})).json()
    openapi.validate("GenerationsListResponse", first)
    assert first["total_cost"] is None  # nothing charged yet
    clock.advance(60.0)
    pages = [
        (await client.get("/api/ai/generations", params={"page": p, "page_size": 3})).json()
        for p in (1, 2, 3, 4)
    ]
    for page in pages:
        openapi.validate("GenerationsListResponse", page)
    assert [page["count"] for page in pages] == [3, 3, 1, 0]
    assert {(p["total_pages"], p["total_entries"], p["page_size"]) for p in pages} == {(3, 7, 3)}
    assert [page["page_number"] for page in pages] == [1, 2, 3, 4]
    listed = [row["generation_id"] for page in pages for row in page["generations"]]
    assert listed == ids[::-1]
    assert Decimal(pages[0]["total_cost"]) == Decimal("0.02") * 7
    row = pages[0]["generations"][0]
    assert row["cost"] == "0.02"
    assert row["username"].startswith("user-") and row["user_image"] is None
    default = (await client.get("/api/ai/generations")).json()
    assert (default["page_number"], default["page_size"]) == (1, 50)


async def test_history_filters_select_exactly_the_matching_rows_active_or_not(
    client: httpx.AsyncClient, clock: ManualClock, openapi: OpenAPI
) -> None:
    """/api/ai/generations takes the queue's six filters, but lists every status by default
    (the queue lists only active rows unless `status=` is given)."""
    [done] = await enqueue(client, target_repo="repo-a", target_directory="dir-a")
    clock.advance(60.0)
    [video] = await enqueue(client, model="kling-video-v2-6-pro-text-to-video")
    [org] = await enqueue(client, target_namespace="my-org", target_repo="repo-a")
    [cancelled] = await enqueue(client, model="black-forest-labs-flux-2-klein-4b")
    await client.delete(f"/api/ai/queue/{cancelled}")

    async def ids(path: str, **params: str) -> list[str]:
        listing = (await client.get(path, params=params)).json()
        schema = "QueueListResponse" if path == "/api/ai/queue" else "GenerationsListResponse"
        openapi.validate(schema, listing)
        return [row["generation_id"] for row in listing["generations"]]

    history = "/api/ai/generations"
    assert await ids(history) == [cancelled, video, done]  # newest first, any status
    assert await ids("/api/ai/queue") == [video]  # active only
    assert await ids(history, status="succeeded") == [done]
    assert await ids(history, status="cancelled") == [cancelled]
    assert await ids(history, status="queued") == [video]
    assert await ids(history, model="kling-video-v2-6-pro-text-to-video") == [video]
    assert await ids(history, media_type="image") == [cancelled, done]
    assert await ids(history, namespace="my-org") == [org]
    assert await ids(history, repo="repo-a") == [done]  # in the caller's namespace
    assert await ids(history, namespace="my-org", repo="repo-a") == [org]
    assert await ids(history, folder="dir-a", status="succeeded") == [done]
    assert await ids(history, folder="dir-a", status="failed") == []
    assert await ids("/api/ai/queue", status="cancelled", media_type="image") == [cancelled]
    bad = await client.get(history, params={"media_type": "audio"})
    assert (bad.status_code, bad.json()["status_message"]) == (400, "invalid_params")


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"page": "x"}, {"page_size": "0"}, {"page_size": "1001"}, {"status": "done"}],
)
async def test_generations_refuse_bad_paging(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/api/ai/generations", params=params)
    assert response.status_code == 400
    assert response.json()["status_message"] == "invalid_params"


async def test_a_generation_shows_in_the_success_envelope(
    client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    [gid] = await enqueue(client, seed=None)
    body = (await client.get(f"/api/ai/generations/{gid}")).json()
    openapi.validate("GenerationsShowResponse", body)
    assert (body["status"], body["status_message"]) == ("success", "resource_found")
    assert body["generation"]["generation_id"] == gid
    assert body["generation"]["prompt"] == PROMPT


async def test_state_advance_applies_due_transitions_without_any_request(
    client: httpx.AsyncClient, app: EmulatorApp, clock: ManualClock
) -> None:
    [gid] = await enqueue(client)
    clock.advance(60.0)
    assert app.state.jobs[gid].status == "queued"  # nothing has looked yet
    assert app.state.advance() == 2  # started, then finished
    assert app.state.jobs[gid].status == "succeeded"
    assert app.state.stats.completion_times[gid] == pytest.approx(
        clock.to_wall(clock.now()), abs=60.0
    )


async def test_a_seeded_emulator_on_a_manual_clock_is_deterministic() -> None:
    async def run() -> list[tuple[dict[str, object], str | None]]:
        clock = ManualClock(wall_start=1_800_000_000.0)
        app = create_app(config=EmulatorConfig(seed=42), clock=clock)
        seen: list[tuple[dict[str, object], str | None]] = []
        async with asgi_client(app) as client:
            ids = await enqueue(client, num_generations=4)
            for _ in range(6):
                clock.advance(1.0)
                for gid in ids:
                    row = (await client.get(f"/api/ai/queue/{gid}")).json()
                    url = row.pop("result_url")
                    # The signature's key is random per emulator; the rest is not.
                    seen.append((row, None if url is None else url.split("?")[0]))
        return seen

    first, second = await run(), await run()
    assert first == second
    assert {row["status"] for row, _ in first} >= {"queued", "processing", "succeeded"}


async def test_unknown_routes_are_404_and_requests_are_counted_by_template(
    client: httpx.AsyncClient, app: EmulatorApp
) -> None:
    [gid] = await enqueue(client)
    await client.get(f"/api/ai/queue/{gid}")
    await client.get(f"/api/ai/queue/{gid}")
    assert (await client.get("/api/ai/nothing")).status_code == 404
    assert (await client.put("/api/ai/queue")).status_code == 404
    requests = app.state.stats.requests
    assert requests[("GET", "/api/ai/queue/{generation_id}")] == 2
    assert requests[("POST", "/api/ai/queue")] == 1
    assert requests[("GET", "<unmatched>")] == 1
