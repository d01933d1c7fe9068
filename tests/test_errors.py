"""The error tree, both documented error bodies parsed into attributes, pickling."""

from __future__ import annotations

import pickle
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import oxen_queue
import oxen_queue.asgi
from oxen_queue import (
    AmbiguousEnqueueError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ClientClosedError,
    CostUnknownError,
    DownloadError,
    GenerationCancelledError,
    GenerationError,
    GenerationFailedError,
    GenerationRecord,
    GenerationTimeoutError,
    InvalidParamsError,
    LedgerError,
    NotFoundError,
    OxenError,
    PollTimeoutError,
    RateLimitError,
    ServerError,
)
from oxen_queue._http import status_error
from oxen_queue.asgi import ClientDisconnectedError

from .fakes import API, FakeAPI
from .helpers import fake_client

ENVELOPE = {
    "error": {"type": "invalid_params", "title": "Invalid parameters", "detail": "bad seed"},
    "status": "error",
    "status_message": "invalid_params",
}
SIMPLE = {"error": {"message": "Model not found: bad-model-name"}}


def _response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", f"{API}/api/ai/x"), **kwargs)  # type: ignore[arg-type]


def test_the_tree_has_one_root_and_the_documented_branches() -> None:
    for status_class in (
        BadRequestError,
        AuthenticationError,
        NotFoundError,
        RateLimitError,
        ServerError,
    ):
        assert issubclass(status_class, APIStatusError)
    assert issubclass(APIStatusError, APIError)
    assert issubclass(APITimeoutError, APIConnectionError) and issubclass(
        APITimeoutError, TimeoutError
    )
    assert issubclass(GenerationFailedError, GenerationError)
    assert issubclass(GenerationCancelledError, GenerationError)
    assert issubclass(GenerationTimeoutError, TimeoutError)
    assert issubclass(InvalidParamsError, ValueError)
    errors = [
        obj
        for obj in vars(oxen_queue).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]
    assert all(issubclass(e, OxenError) for e in errors)
    assert all(e.__name__.endswith("Error") for e in errors)


def test_the_module_docstring_draws_every_error() -> None:
    doc = oxen_queue._exceptions.__doc__ or ""
    drawn = set(re.findall(r"([A-Z][A-Za-z]+Error)", doc))
    errors = {
        name
        for name, obj in vars(oxen_queue).items()
        if isinstance(obj, type) and issubclass(obj, OxenError)
    }
    assert errors <= drawn


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (418, APIStatusError),
    ],
)
def test_statuses_map_to_their_class(status: int, cls: type[APIStatusError]) -> None:
    error = status_error(_response(status, json=SIMPLE))
    assert type(error) is cls
    assert error.status_code == status


def test_envelope_body_is_parsed_into_attributes() -> None:
    error = status_error(_response(400, json=ENVELOPE))
    assert (error.error_type, error.title, error.detail, error.status_message) == (
        "invalid_params",
        "Invalid parameters",
        "bad seed",
        "invalid_params",
    )
    assert error.body == ENVELOPE
    assert "bad seed" in str(error)


def test_simple_body_is_parsed_into_server_message() -> None:
    error = status_error(_response(400, json=SIMPLE))
    assert error.server_message == "Model not found: bad-model-name"
    assert error.error_type is None
    assert str(error).endswith("Model not found: bad-model-name")


def test_a_proxys_html_page_gives_a_server_error_with_a_snippet() -> None:
    error = status_error(_response(502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"))
    assert isinstance(error, ServerError)
    assert error.body is None
    assert "502 Bad Gateway" in str(error)


def test_rate_limit_carries_retry_after() -> None:
    error = status_error(_response(429, headers={"Retry-After": "7"}, json={}))
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7.0


def test_generation_errors_carry_the_id_and_the_server_text() -> None:
    failed = GenerationFailedError(generation_id="g1", error_message="Insufficient credits")
    assert failed.generation_id == "g1" and failed.error_message == "Insufficient credits"
    assert "Insufficient credits" in str(failed) and "g1" in str(failed)
    assert "no error message" in str(GenerationFailedError(generation_id="g2", error_message=None))
    assert "cancelled" in str(GenerationCancelledError(generation_id="g3"))


@pytest.mark.anyio
async def test_malformed_success_bodies_raise_a_typed_error() -> None:
    api = FakeAPI()
    api.before.append(
        lambda r: (
            httpx.Response(200, text='{"generation_id": "x", "stat')
            if r.url.path.startswith("/api/ai/queue/")
            else None
        )
    )
    api.before.append(
        lambda r: (
            httpx.Response(200, json={"id": 3}) if r.url.path == "/api/ai/models/typed" else None
        )
    )
    async with fake_client(api) as client:
        with pytest.raises(APIResponseValidationError, match="not JSON"):
            await client.get_generation("x")
        with pytest.raises(APIResponseValidationError, match="id"):
            await client.get_model("typed")


def test_error_messages_name_no_files_of_ours() -> None:
    # The error module imports nothing from the client: it is the leaf of the package.
    source = Path(oxen_queue._exceptions.__file__).read_text()
    assert "from ._" not in source


def test_poll_timeout_error_is_the_deprecated_name_of_generation_timeout_error() -> None:
    assert PollTimeoutError is GenerationTimeoutError
    assert issubclass(GenerationTimeoutError, OxenError) and issubclass(
        GenerationTimeoutError, TimeoutError
    )
    error = GenerationTimeoutError(generation_id="g1", deadline=2.5)
    assert (error.generation_id, error.deadline) == ("g1", 2.5)
    assert "g1" in str(error) and "2.5 s deadline" in str(error)
    source = Path(oxen_queue._exceptions.__file__).read_text()
    assert 'PollTimeoutError = GenerationTimeoutError\n"""Deprecated' in source


def _one_of_each_error() -> list[OxenError]:
    record = GenerationRecord(generation_id="g1", status="failed", prompt="ox")
    request = httpx.Request("POST", f"{API}/api/ai/queue")
    return [
        OxenError("base"),
        APIError("could not", request=request),
        status_error(_response(400, json=ENVELOPE)),
        status_error(_response(401, json=SIMPLE)),
        status_error(_response(404, json=SIMPLE)),
        status_error(_response(429, headers={"Retry-After": "7"}, json=SIMPLE)),
        status_error(_response(503, text="<html>down</html>")),
        status_error(_response(418, json=SIMPLE)),
        APIConnectionError("refused", request=request, request_sent=False, status_code=None),
        APITimeoutError("slow", request=request, request_sent=True, status_code=200),
        APIResponseValidationError("truncated", response=_response(200, text="{")),
        GenerationError("gone", generation_id="g1", record=record),
        GenerationFailedError(
            generation_id="g1", error_message="Insufficient credits", record=record
        ),
        GenerationCancelledError(generation_id="g1", record=record),
        GenerationTimeoutError(generation_id="g1", deadline=2.5),
        InvalidParamsError("bad resolution", field="resolution", allowed=["1024x1024"]),
        AmbiguousEnqueueError(
            "lost", model="gpt-image-2", params={"prompt": "ox"}, candidate_ids=["g1", "g2"]
        ),
        LedgerError("database is locked"),
        CostUnknownError("billed by token", model="gpt-4o-mini", missing="tokens"),
        BudgetExceededError(
            "over", estimate=Decimal("0.28"), committed=Decimal("9.9"), budget=Decimal(10)
        ),
        DownloadError("too large"),
        ClientClosedError("closed", generation_ids=["g1", "g2"]),
        ClientDisconnectedError("the HTTP client hung up"),
    ]


def _comparable(error: BaseException) -> dict[str, Any]:
    """The error's attributes, with httpx objects (no equality of their own) by content."""
    state: dict[str, Any] = {"type": type(error), "args": error.args, "str": str(error)}
    for name, value in vars(error).items():
        if isinstance(value, httpx.Response):
            value = (value.status_code, value.headers.raw, value.content, str(value.request.url))
        elif isinstance(value, httpx.Request):
            value = (value.method, str(value.url))
        state[name] = value
    return state


def test_every_public_error_pickles_with_its_attributes() -> None:
    errors = _one_of_each_error()
    public = {
        obj
        for module in (oxen_queue, oxen_queue.asgi)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    assert {type(error) for error in errors} == public  # one of each, no more
    for error in errors:
        error.add_note("a note survives too")
        again = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
        assert _comparable(again) == _comparable(error), type(error).__name__
        assert again.__notes__ == ["a note survives too"]
