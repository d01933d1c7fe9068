"""A client's budget (``max_spend``) against the emulator: refused before anything is sent,
never overshot by concurrent enqueues, settled to what the rows say was charged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest

from oxen_queue import (
    AmbiguousEnqueueError,
    AsyncClient,
    BadRequestError,
    BatchItem,
    BudgetExceededError,
    Client,
    CostUnknownError,
    GenerationCancelledError,
    GenerationFailedError,
    InvalidParamsError,
    PollPolicy,
    SpendSummary,
)
from oxen_queue._budget import Budget
from oxen_queue._spend import Hold
from oxen_queue.testing import Emulator, EmulatorConfig, ManualClock, create_app
from oxen_queue.testing._app import EmulatorApp

from .helpers import eventually

pytestmark = pytest.mark.anyio

D = Decimal
HIGH = D("0.28")  # gpt-image-2 at its defaults (high, 1920x1080)
HUB = "https://hub.oxen.test"
IDLE = PollPolicy(initial=3600, max_interval=3600, deadline=None)
QUICK = PollPolicy(initial=0.0, max_interval=0.0, jitter=0.0, deadline=30)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> EmulatorApp:
    return create_app(config=EmulatorConfig(seed=5), clock=clock)


def in_process(app: EmulatorApp, **options: Any) -> AsyncClient:
    settings: dict[str, Any] = {
        "api_key": "spend-test-key",
        "base_url": HUB,
        "transport": httpx.ASGITransport(app=app),
        "completion": "poll",
        "poll_policy": IDLE,
    }
    settings.update(options)
    return AsyncClient(**settings)


def requests(app: EmulatorApp, method: str, template: str) -> int:
    return app.state.stats.requests[(method, template)]


async def settled(client: AsyncClient) -> SpendSummary:
    """The summary once no job awaits its charge (the settling reads run in the background)."""
    with anyio.fail_after(5):
        while True:
            summary = client.spend
            assert summary is not None
            if not summary.unsettled:
                return summary
            await anyio.sleep(0.01)  # polling: the settling reads announce nothing


async def test_an_enqueue_past_the_budget_is_refused_before_anything_is_sent(
    app: EmulatorApp,
) -> None:
    async with in_process(app, max_spend=D("0.50")) as client:
        await client.enqueue("gpt-image-2", prompt="fits")
        with pytest.raises(BudgetExceededError) as refused:
            await client.enqueue("gpt-image-2", prompt="does not fit")
        # A cheaper request still fits in what is left.
        await client.enqueue("gpt-image-2", prompt="cheap", quality="low")
        summary = client.spend
    error = refused.value
    assert (error.estimate, error.committed, error.budget) == (HIGH, HIGH, D("0.50"))
    assert requests(app, "POST", "/api/ai/queue") == 2
    assert app.state.stats.jobs_by_prompt["does not fit"] == 0
    assert summary == SpendSummary(
        budget=D("0.50"),
        committed=HIGH + D("0.02"),
        charged=D(0),
        estimated=HIGH + D("0.02"),
        unsettled=2,
    )
    assert summary.remaining == D("0.20")


async def test_a_refused_first_enqueue_does_not_even_open_the_event_stream() -> None:
    """On a real server, in the default mode: the budget refuses before the stream opens."""
    with Emulator(config=EmulatorConfig(seed=2, time_scale=0.01)) as emulator:
        async with AsyncClient(
            api_key="k", base_url=emulator.base_url, max_spend=D("0.10")
        ) as client:
            with pytest.raises(BudgetExceededError):
                await client.enqueue("gpt-image-2", prompt="too dear")
        stats = emulator.stats()["requests"]
    assert stats == {"GET /api/ai/models/{id}": 1}  # the pricing, and nothing else


async def test_fifty_concurrent_enqueues_against_a_budget_for_ten_never_overshoot(
    app: EmulatorApp,
) -> None:
    budget = HIGH * 10
    made: list[str] = []
    refused: list[BudgetExceededError] = []
    async with in_process(app, max_spend=budget) as client:

        async def one(index: int) -> None:
            try:
                made.append((await client.enqueue("gpt-image-2", prompt=f"ox {index}")).id)
            except BudgetExceededError as exc:
                refused.append(exc)

        async with anyio.create_task_group() as task_group:
            for index in range(50):
                task_group.start_soon(one, index)
        summary = client.spend
    assert len(made) == 10
    assert len(refused) == 40
    assert requests(app, "POST", "/api/ai/queue") == 10
    assert app.state.stats.jobs_created == 10
    assert summary is not None and summary.committed == budget
    assert all(exc.committed + exc.estimate > budget for exc in refused)


async def test_finished_jobs_settle_to_their_charged_cost_with_one_read_each(
    app: EmulatorApp, clock: ManualClock
) -> None:
    async with in_process(app, max_spend=D(5), poll_policy=QUICK) as client:
        generations = [
            await client.enqueue("gpt-image-2", prompt="ox", quality=quality)
            for quality in ("low", "medium", "high")
        ]
        video = await client.enqueue("kling-video-v2-6-pro-text-to-video", prompt="river")
        assert client.spend is not None and client.spend.unsettled == 4
        clock.advance(200)
        for generation in [*generations, video]:
            await generation
        summary = await settled(client)
    assert summary.charged == D("0.02") + D("0.07") + HIGH + D("0.35")
    assert summary.estimated == 0
    assert summary.committed == summary.charged
    assert requests(app, "GET", "/api/ai/generations/{generation_id}") == 4


async def test_a_job_cancelled_while_queued_gives_its_estimate_back(
    app: EmulatorApp, clock: ManualClock
) -> None:
    async with in_process(app, max_spend=HIGH) as client:
        first = await client.enqueue("gpt-image-2", prompt="cancelled")
        with pytest.raises(BudgetExceededError):
            await client.enqueue("gpt-image-2", prompt="waits its turn")
        await first.cancel()
        with pytest.raises(GenerationCancelledError):
            await first
        summary = await settled(client)
        assert summary.committed == 0  # charged "0": it never ran
        await client.enqueue("gpt-image-2", prompt="now it fits")


async def test_a_job_cancelled_while_processing_keeps_its_charge(
    app: EmulatorApp, clock: ManualClock
) -> None:
    async with in_process(app, max_spend=D(1)) as client:
        generation = await client.enqueue("gpt-image-2", prompt="started")
        clock.advance(2.5)  # past the queue delay, before the image is done
        assert (await client.get_generation(generation.id)).status == "processing"
        await generation.cancel()
        summary = await settled(client)
    assert summary.charged == HIGH
    assert summary.committed == HIGH


async def test_failures_settle_to_what_they_cost(clock: ManualClock) -> None:
    """Insufficient credits: charged 0, released. A run-time failure (an input image the
    provider cannot download) is billed: kept."""
    broke = create_app(config=EmulatorConfig(seed=1, failure_rate=1.0), clock=clock)
    async with in_process(broke, max_spend=D(1), poll_policy=QUICK) as client:
        generation = await client.enqueue("gpt-image-2", prompt="no credits")
        clock.advance(10)
        with pytest.raises(GenerationFailedError, match="Insufficient credits"):
            await generation
        assert (await settled(client)).committed == 0
    app = create_app(config=EmulatorConfig(seed=1), clock=clock)
    async with in_process(app, max_spend=D(1), poll_policy=QUICK) as client:
        generation = await client.enqueue(
            "gpt-image-2-edit",
            prompt="night",
            input_image="https://elsewhere.example/ox.png",
            quality="low",
        )
        clock.advance(10)
        with pytest.raises(GenerationFailedError, match="download"):
            await generation
        summary = await settled(client)
    assert (summary.charged, summary.committed) == (D("0.03"), D("0.03"))


async def test_a_batch_stops_enqueueing_at_the_budget(app: EmulatorApp, clock: ManualClock) -> None:
    """The refused request carries the error; the rest are left pending, never sent."""
    async with in_process(app, max_spend=3 * HIGH, poll_policy=QUICK) as client:

        async def finish(item: BatchItem) -> None:
            clock.advance(100)

        items = await client.batch(
            "gpt-image-2",
            [{"prompt": f"ox {i}"} for i in range(6)],
            concurrency=1,
            on_enqueued=finish,
        )
    assert [item.status for item in items] == ["succeeded"] * 3 + ["error", "pending", "pending"]
    assert isinstance(items[3].error, BudgetExceededError)
    assert [item.error for item in items[4:]] == [None, None]
    assert app.state.stats.jobs_created == 3


async def test_option_views_share_the_budget(app: EmulatorApp) -> None:
    async with in_process(app, max_spend=HIGH) as client:
        await client.with_options(validate=False).enqueue("gpt-image-2", prompt="via a view")
        with pytest.raises(BudgetExceededError):
            await client.enqueue("gpt-image-2", prompt="no room left")
        assert client.with_options(timeout=5).spend == client.spend


async def test_an_unpriceable_request_is_refused_under_a_budget(app: EmulatorApp) -> None:
    async with in_process(app, max_spend=D(1)) as client:
        with pytest.raises(CostUnknownError) as unknown:
            await client.enqueue("gpt-image-2", prompt="ox", resolution="999x999", validate=False)
    assert unknown.value.missing == "cost_per_image_grid['high']['999x999']"
    assert requests(app, "POST", "/api/ai/queue") == 0


async def test_without_a_budget_nothing_is_counted_or_fetched(
    app: EmulatorApp, clock: ManualClock
) -> None:
    async with in_process(app, poll_policy=QUICK) as client:
        generation = await client.enqueue("gpt-image-2", prompt="free of accounting")
        clock.advance(100)
        await generation
        assert client.spend is None
    assert requests(app, "GET", "/api/ai/models/{id}") == 0
    assert requests(app, "GET", "/api/ai/generations/{generation_id}") == 0


async def test_history_rows_settle_jobs_without_a_read_each(
    app: EmulatorApp, clock: ManualClock
) -> None:
    """Rows seen in a history page settle their jobs; a job not yet charged stays estimated."""
    async with in_process(app, max_spend=D(1)) as client:
        done = await client.enqueue("gpt-image-2", prompt="done", quality="low")
        clock.advance(100)
        waiting = await client.enqueue("gpt-image-2", prompt="still queued")
        await client.list_generations()
        summary = client.spend
    assert summary is not None
    assert (summary.charged, summary.estimated, summary.unsettled) == (D("0.02"), HIGH, 1)
    assert done.id != waiting.id
    assert requests(app, "GET", "/api/ai/generations/{generation_id}") == 0


async def test_blocking_generations_count_against_the_budget(app: EmulatorApp) -> None:
    async with in_process(app, max_spend=D("0.80")) as client:
        images = await client.generate_images("gpt-image-2", prompt="ox", n=2)
        assert len(images.images) == 2
        with pytest.raises(BudgetExceededError):
            await client.generate_images("gpt-image-2", prompt="ox")
        with pytest.raises(BadRequestError):  # refused by the server: given back
            await client.generate_images("gpt-image-2", prompt="ox", n=9, quality="low")
        summary = client.spend
    assert summary is not None
    assert summary.committed == 2 * HIGH  # kept: no row will tell the charge
    assert requests(app, "POST", "/api/ai/images/generate") == 2


async def test_bad_budgets_are_refused() -> None:
    with pytest.raises(InvalidParamsError, match="negative"):
        AsyncClient(api_key="k", max_spend=D(-1))
    with pytest.raises(InvalidParamsError, match="max_spend"):
        AsyncClient(api_key="k", max_spend="lots")  # type: ignore[arg-type]
    assert AsyncClient(api_key="k", max_spend=25).spend == SpendSummary(
        budget=D(25), committed=D(0), charged=D(0), estimated=D(0), unsettled=0
    )


class SlowEnqueues(httpx.AsyncBaseTransport):
    """The app, answering enqueues only after a while (``sent`` is set as one arrives)."""

    def __init__(self, app: EmulatorApp) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.sent = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/ai/queue":
            self.sent.set()
            await anyio.sleep(0.2)  # the behaviour: an answer still on its way
        return await self._inner.handle_async_request(request)


async def test_a_job_whose_caller_gave_up_in_flight_is_counted_when_it_lands(
    app: EmulatorApp,
) -> None:
    """The caller's cancellation gives the reservation back; the job made anyway is counted
    the moment its answer arrives, so the budget then refuses what no longer fits."""
    slow = SlowEnqueues(app)
    async with in_process(app, max_spend=HIGH, transport=slow) as client:
        async with anyio.create_task_group() as caller:

            async def give_up() -> None:
                await slow.sent.wait()  # the enqueue is sent, its answer not back yet
                caller.cancel_scope.cancel()

            caller.start_soon(give_up)
            await client.enqueue("gpt-image-2", prompt="abandoned")
            pytest.fail("the enqueue was answered before the caller gave up")
        await eventually(lambda: client.pending)
        summary = client.spend
        with pytest.raises(BudgetExceededError):
            await client.enqueue("gpt-image-2", prompt="no room")
    assert summary is not None
    assert (summary.committed, summary.unsettled) == (HIGH, 1)
    assert app.state.stats.jobs_created == 1


async def test_a_lost_answer_keeps_its_estimate_and_a_refusal_gives_it_back() -> None:
    """How an enqueue's failure is read (the hold's rule, without a server)."""
    budget = Budget(D(1))
    lost = Hold(None, budget.reserve(D("0.3")))
    lost.release_after(AmbiguousEnqueueError("lost", model="m", params={}))
    refused = Hold(None, budget.reserve(D("0.3")))
    refused.release_after(InvalidParamsError("no"))
    cancelled = Hold(None, budget.reserve(D("0.3")))
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)  # cancelled at once: it raises, never waits
        except anyio.get_cancelled_exc_class() as exc:
            cancelled.release_after(exc)  # withdrawn, or confirmed later if it was sent
            raise
    assert budget.committed == D("0.3")


@pytest.fixture
def blocking_hub() -> Iterator[Emulator]:
    with Emulator(config=EmulatorConfig(seed=4, time_scale=0.01)) as emulator:
        yield emulator


def test_the_blocking_client_keeps_a_budget_too(blocking_hub: Emulator) -> None:
    with Client(api_key="k", base_url=blocking_hub.base_url, max_spend=HIGH) as client:
        client.generate("gpt-image-2", prompt="fits")
        with pytest.raises(BudgetExceededError):
            client.enqueue("gpt-image-2", prompt="does not")
        assert client.estimate_cost("gpt-image-2", num_generations=2, prompt="x") == 2 * HIGH
        deadline = time.monotonic() + 5
        while (summary := client.spend) is not None and summary.unsettled:
            assert time.monotonic() < deadline, "never settled"
            time.sleep(0.01)  # polling, as above
    assert summary is not None
    assert summary.charged == HIGH
    assert blocking_hub.stats()["requests"]["POST /api/ai/queue"] == 1


async def test_an_estimate_needs_no_prompt_yet_checks_what_is_given(app: EmulatorApp) -> None:
    """A price depends on no prompt or input image: the page asks before one is typed."""
    async with in_process(app) as client:
        assert await client.estimate_cost("gpt-image-2") == HIGH
        edit = await client.estimate_cost("gpt-image-2-edit", quality="low")
        assert edit > 0
        with pytest.raises(InvalidParamsError, match="resolution"):
            await client.estimate_cost("gpt-image-2", resolution="999x999")
    assert requests(app, "POST", "/api/ai/queue") == 0
