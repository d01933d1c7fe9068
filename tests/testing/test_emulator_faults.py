"""Each fault switch, observed from a plain httpx client against a running emulator."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from oxen_queue.testing import Emulator, EmulatorConfig, Faults

from ..helpers import TLS
from ._support import PROMPT, SSEParser, auth

ENQUEUE = {"model": "gpt-image-2", "prompt": PROMPT}


@pytest.fixture(scope="module")
def server() -> Iterator[Emulator]:
    config = EmulatorConfig(time_scale=0.01, unrelated_event_rate=0.0, keepalive_interval=0.05)
    with Emulator(config=config) as emu:
        yield emu


@pytest.fixture
def emu(server: Emulator) -> Emulator:
    server.reset()
    return server


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, headers=auth(), timeout=5.0, verify=TLS) as client:
        yield client


def _wait_done(client: httpx.Client, generation_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        row: dict[str, object] = client.get(f"/api/ai/queue/{generation_id}").json()
        if row["status"] in ("succeeded", "failed", "cancelled"):
            return row
        time.sleep(0.01)  # polling, as a client without the stream does
    raise AssertionError(f"{generation_id} never finished")


def _created(client: httpx.Client) -> list[str]:
    listing = client.get("/api/ai/generations").json()
    return [row["generation_id"] for row in listing["generations"]]


def _stream_until_done(client: httpx.Client, count: int) -> tuple[list[str], set[str]]:
    """Subscribe, enqueue ``count`` jobs, and read the stream until each one's event came.

    Returns the raw lines and the enqueued ids.
    """
    lines: list[str] = []
    parser = SSEParser()
    with client.stream("GET", "/api/events") as stream:
        ids = {
            client.post("/api/ai/queue", json=ENQUEUE).json()["generations"][0]["generation_id"]
            for _ in range(count)
        }
        pending = set(ids)
        for line in stream.iter_lines():
            lines.append(line)
            event = parser.feed(line)
            if event is None or event[0] != "media_generation_completed":
                continue
            try:
                pending.discard(json.loads(event[1])["generation_id"])
            except ValueError:
                continue
            if not pending:
                break
    return lines, ids


def _two_seconds_after(value: str, sent: float, answered: float) -> bool:
    """An HTTP date 2 s after the server's clock read, which fell between ``sent`` and
    ``answered``: in whole seconds, so between their floors (however slow the machine)."""
    date = parsedate_to_datetime(value).timestamp()
    return math.floor(sent) + 2 <= date <= math.floor(answered) + 2


@pytest.mark.parametrize(
    ("form", "header", "check"),
    [
        ("seconds", "retry-after", lambda value, *_: value == "2"),
        ("ms", "retry-after-ms", lambda value, *_: value == "2000"),
        ("http-date", "retry-after", _two_seconds_after),
    ],
)
def test_enqueue_429_refuses_before_creating_and_says_when_to_retry(
    emu: Emulator,
    client: httpx.Client,
    form: str,
    header: str,
    check: Callable[[str, float, float], bool],
) -> None:
    emu.faults.update({"enqueue_429": 1.0, "retry_after": 2, "retry_after_form": form})
    sent = time.time()
    response = client.post("/api/ai/queue", json=ENQUEUE)
    answered = time.time()
    assert response.status_code == 429
    assert response.json() == {"error": {"message": "Rate limit exceeded"}}
    assert check(response.headers[header], sent, answered)
    assert emu.stats()["jobs_created"] == 0
    assert emu.stats()["faults"] == {"enqueue_429": 1}


def test_retry_after_can_be_left_out(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.update({"enqueue_429": 1.0, "retry_after_form": "none"})
    response = client.post("/api/ai/queue", json=ENQUEUE)
    assert response.status_code == 429
    assert "retry-after" not in response.headers and "retry-after-ms" not in response.headers


def test_enqueue_503_refuses_before_creating(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.enqueue_503 = 1.0
    assert client.post("/api/ai/queue", json=ENQUEUE).status_code == 503
    assert emu.stats()["jobs_created"] == 0


def test_enqueue_cut_creates_the_jobs_then_drops_the_connection(
    emu: Emulator, client: httpx.Client
) -> None:
    emu.faults.enqueue_cut = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/ai/queue", json={**ENQUEUE, "num_generations": 2})
    emu.faults.enqueue_cut = 0.0
    created = _created(client)
    assert len(created) == 2
    assert all(_wait_done(client, gid)["status"] == "succeeded" for gid in created)
    assert emu.stats()["faults"] == {"enqueue_cut": 1}


def test_enqueue_504_after_create_answers_like_a_proxy_timing_out(
    emu: Emulator, client: httpx.Client
) -> None:
    emu.faults.enqueue_504_after_create = 1.0
    response = client.post("/api/ai/queue", json=ENQUEUE)
    assert response.status_code == 504
    assert response.headers["content-type"] == "text/html"
    assert len(_created(client)) == 1


def test_read_500_answers_the_error_envelope(emu: Emulator, client: httpx.Client) -> None:
    gid = client.post("/api/ai/queue", json=ENQUEUE).json()["generations"][0]["generation_id"]
    emu.faults.read_500 = 1.0
    for path in (f"/api/ai/queue/{gid}", "/api/ai/queue", "/api/ai/generations"):
        response = client.get(path)
        assert response.status_code == 500
        assert response.json()["status_message"] == "unknown_error"
    # Only reads: models, enqueues and cancels are untouched.
    assert client.get("/api/ai/models").status_code == 200
    assert client.post("/api/ai/queue", json=ENQUEUE).status_code == 200
    assert client.delete(f"/api/ai/queue/{gid}").status_code == 200
    assert emu.stats()["faults"] == {"read_500": 3}


def test_read_429_says_when_to_retry(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.update({"read_429": 1.0, "retry_after": 0.5})
    response = client.get("/api/ai/queue")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.5"


def test_read_cut_drops_the_connection_mid_body(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.read_cut = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/ai/queue")
    emu.faults.read_cut = 0.0
    assert client.get("/api/ai/queue").status_code == 200  # the server is fine


def test_read_html_answers_a_proxy_502_page(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.read_html = 1.0
    response = client.get("/api/ai/generations")
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert "502 Bad Gateway" in response.text


def test_read_malformed_answers_200_with_truncated_json(
    emu: Emulator, client: httpx.Client
) -> None:
    emu.faults.read_malformed = 1.0
    response = client.get("/api/ai/queue")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_latency_delays_every_api_answer(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.latency = 0.2
    started = time.perf_counter()
    assert client.get("/api/ai/models").status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_slow_requests_trip_client_read_timeouts_after_taking_effect(
    emu: Emulator, client: httpx.Client
) -> None:
    emu.faults.update({"slow_rate": 1.0, "slow_seconds": 2.0})
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/ai/queue", json=ENQUEUE, timeout=0.2)
    assert emu.stats()["jobs_created"] == 1
    assert emu.stats()["faults"] == {"slow": 1}


def test_sse_drop_after_ends_each_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.sse_drop_after = 0.2
    started = time.perf_counter()
    with client.stream("GET", "/api/events") as stream:
        lines = list(stream.iter_lines())  # ends when the server closes it
    # Not before the drop, and not never: a stream left open would run to the client's 30 s
    # timeout.
    assert 0.2 <= time.perf_counter() - started < 20.0
    assert set(lines) <= {": keep-alive", ""}
    assert emu.stats()["faults"] == {"sse_drop": 1}


def test_event_loss_withholds_completion_events(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.event_loss = 1.0
    with client.stream("GET", "/api/events") as stream:
        gid = client.post("/api/ai/queue", json=ENQUEUE).json()["generations"][0]["generation_id"]
        assert _wait_done(client, gid)["status"] == "succeeded"
        emu.faults.sse_drop_after = 0.0  # end the stream now
        lines = list(stream.iter_lines())
    assert not any(line.startswith("event: media_generation") for line in lines)
    assert emu.stats()["events"]["dropped"] == 1


@pytest.mark.parametrize("status", [404, 503])
def test_events_status_answers_the_stream_with_an_error(
    emu: Emulator, client: httpx.Client, status: int
) -> None:
    emu.faults.events_status = status
    response = client.get("/api/events")
    assert response.status_code == status
    assert response.json()["status"] == "error"


def test_sse_garbage_precedes_the_real_events(emu: Emulator, client: httpx.Client) -> None:
    emu.faults.update({"sse_garbage": 1.0, "seed": 5})
    lines, _ = _stream_until_done(client, 8)  # every real event still arrives
    assert emu.stats()["faults"]["sse_garbage"] == 8
    text = "\n".join(lines)
    kinds = [
        "data: {not json" in text,
        'data: {"hello": "world"}' in text,
        "retry: 10000" in text,
        "x_unknown_field" in text,
    ]
    assert kinds == [True] * 4  # with this seed, every kind shows up


def test_faults_are_set_over_http_and_counted(emu: Emulator, client: httpx.Client) -> None:
    admin = httpx.Client(base_url=emu.base_url)
    with admin:
        response = admin.post("/_emulator/faults", json={"read_500": 1, "latency": 0.0})
        assert response.status_code == 200
        assert response.json()["read_500"] == 1.0
        assert emu.faults.read_500 == 1.0
        assert client.get("/api/ai/queue").status_code == 500
        assert admin.get("/_emulator/stats").json()["faults"] == {"read_500": 1}
        assert admin.post("/_emulator/faults", json={"read_500": 2}).status_code == 400
        assert admin.post("/_emulator/faults", json={"nonsense": 1}).status_code == 400
        assert admin.post("/_emulator/faults", content=b"[" * 100_000).status_code == 400
        assert admin.post("/_emulator/faults", json={"reset": True}).json()["read_500"] == 0.0
        assert client.get("/api/ai/queue").status_code == 200


def test_seeded_faults_draw_the_same_sequence() -> None:
    first, second = Faults(seed=3, read_500=0.5), Faults(seed=3, read_500=0.5)
    assert [first.roll(0.5) for _ in range(50)] == [second.roll(0.5) for _ in range(50)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("read_500", 1.5),
        ("read_500", -0.1),
        ("read_500", "0.5"),
        ("latency", -1),
        ("retry_after_form", "minutes"),
        ("events_status", 42),
        ("no_such_fault", 1),
    ],
)
def test_bad_fault_values_are_refused(name: str, value: object) -> None:
    faults = Faults()
    with pytest.raises(ValueError, match=name):
        setattr(faults, name, value)
    with pytest.raises(ValueError, match=name):
        faults.update({name: value})
