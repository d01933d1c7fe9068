"""Local validation: bad input fails before any request, naming the field and allowed values."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oxen_queue import AsyncClient, GptImage2Params, InvalidParamsError, Resolution
from oxen_queue._params import check_against_schema, refuse_request_options, validate_params

from .fakes import FLUX_MODEL, FakeAPI
from .helpers import fake_client

DOCS_RESOLUTIONS = ["1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160"]


def test_gpt_image_2_types_follow_the_docs_page() -> None:
    assert list(get_args(Resolution)) == DOCS_RESOLUTIONS
    defaults = GptImage2Params(prompt="x")
    assert (defaults.resolution, defaults.quality, defaults.output_format) == (
        "1920x1080",
        "high",
        "png",
    )


def test_a_bad_resolution_names_the_field_and_lists_the_allowed_values() -> None:
    with pytest.raises(InvalidParamsError) as info:
        validate_params("gpt-image-2", {"prompt": "ox", "resolution": "999x999"})
    error = info.value
    assert error.field == "resolution"
    assert error.allowed == tuple(DOCS_RESOLUTIONS)
    assert "resolution" in str(error) and "999x999" in str(error)
    assert all(r in str(error) for r in DOCS_RESOLUTIONS)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({}, "prompt", "required"),
        ({"prompt": "ox", "seed": 3}, "seed", "no parameter 'seed'"),
        ({"prompt": "ox", "quality": "ultra"}, "quality", "auto, low, medium, high"),
        ({"prompt": "ox", "output_format": "gif"}, "output_format", "png, jpeg, webp"),
        ({"prompt": 42}, "prompt", "string"),
        ({"prompt": "ox", "target_namespace": 5}, "target_namespace", "string"),
    ],
)
def test_gpt_image_2_refusals(params: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidParamsError, match=fragment) as info:
        validate_params("gpt-image-2", params)
    assert info.value.field == field


def test_valid_params_pass_through_unchanged() -> None:
    params = {"prompt": "ox", "quality": "low", "target_namespace": "my-org"}
    assert validate_params("gpt-image-2", params) == params


SCHEMA: dict[str, Any] = FLUX_MODEL["request_schema"]


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({}, "prompt", "required"),
        ({"prompt": "ox", "aspect_ratio": "2:1"}, "aspect_ratio", "1:1, 16:9"),
        ({"prompt": "ox", "num_inference_steps": 0}, "num_inference_steps", "out of range"),
        ({"prompt": "ox", "num_inference_steps": 51}, "num_inference_steps", "out of range"),
        ({"prompt": "ox", "num_inference_steps": 2.5}, "num_inference_steps", "integer"),
        ({"prompt": "ox", "seed": True}, "seed", "integer"),
        ({"prompt": "ox", "style": "noir"}, "style", "no parameter"),
    ],
)
def test_schema_refusals(params: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidParamsError, match=fragment) as info:
        check_against_schema("flux-test", SCHEMA, params)
    assert info.value.field == field


def test_schema_keywords_not_understood_are_let_through() -> None:
    schema = {"properties": {"x": {"type": "string", "pattern": "^a$", "x-order": 1}}}
    check_against_schema("m", schema, {"x": "b"})  # pattern unchecked: the server judges


def test_an_unknown_parameter_is_refused_with_a_suggestion() -> None:
    schema = {"properties": {"duration": {"type": "integer"}, "prompt": {"type": "string"}}}
    with pytest.raises(InvalidParamsError, match="did you mean 'duration'") as info:
        check_against_schema("kling", schema, {"prompt": "ox", "duraton": 5})
    assert info.value.field == "duraton"
    assert info.value.allowed is not None
    assert "duration" in info.value.allowed
    assert "extra_params" in str(info.value)
    with pytest.raises(InvalidParamsError, match="did you mean 'quality'"):
        validate_params("gpt-image-2", {"prompt": "ox", "qualty": "low"})


def test_a_schema_without_properties_checks_no_names() -> None:
    check_against_schema("m", {"type": "object"}, {"anything": 1})


@pytest.mark.anyio
async def test_extra_params_are_sent_unchecked_and_validate_false_skips_every_check() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        await client.enqueue("gpt-image-2", prompt="ox", extra_params={"moderation": "low"})
        with pytest.raises(InvalidParamsError, match="both"):
            await client.enqueue("gpt-image-2", prompt="ox", extra_params={"prompt": "x"})
        await client.enqueue("gpt-image-2", prompt="ox", qualty="low", validate=False)
    bodies = [json.loads(r.content) for r in api.requests if r.method == "POST"]
    assert bodies == [
        {"model": "gpt-image-2", "prompt": "ox", "moderation": "low"},
        {"model": "gpt-image-2", "prompt": "ox", "qualty": "low"},
    ]


@pytest.mark.anyio
async def test_bad_input_sends_nothing() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        with pytest.raises(InvalidParamsError, match="resolution"):
            await client.enqueue("gpt-image-2", prompt="ox", resolution="999x999")
        with pytest.raises(InvalidParamsError, match="empty"):
            await client.generate("gpt-image-2", prompt="")
        with pytest.raises(InvalidParamsError, match="model"):
            await client.enqueue("", prompt="ox")
    assert api.requests == []


@pytest.mark.anyio
async def test_other_models_are_checked_against_their_published_schema_fetched_once() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        with pytest.raises(InvalidParamsError, match="aspect_ratio"):
            await client.enqueue("flux-test", prompt="ox", aspect_ratio="2:1")
        await client.enqueue("flux-test", prompt="ox", aspect_ratio="16:9")
        await client.enqueue("flux-test", prompt="ox", seed=3)
        unchecked = await client.enqueue(
            "flux-test", prompt="ox", aspect_ratio="2:1", validate=False
        )
    assert api.calls["GET /api/ai/models/flux-test"] == 1
    assert api.calls["POST /api/ai/queue"] == 3
    assert api.jobs[unchecked.id].params["aspect_ratio"] == "2:1"


@pytest.mark.anyio
async def test_an_unknown_model_is_refused_before_enqueueing() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        with pytest.raises(InvalidParamsError, match="not a model") as info:
            await client.enqueue("no-such-model", prompt="ox")
    assert info.value.field == "model"
    assert api.calls["POST /api/ai/queue"] == 0


def test_a_missing_key_is_refused_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXEN_API_KEY", raising=False)
    with pytest.raises(InvalidParamsError, match="OXEN_API_KEY") as info:
        AsyncClient()
    assert info.value.field == "api_key"
    with pytest.raises(InvalidParamsError):
        AsyncClient(api_key="   ")


# -- habits from openai-python (issue 16) ---------------------------------------------------


@pytest.mark.anyio
async def test_timeout_given_to_a_call_is_refused_naming_deadline_and_with_options() -> None:
    """openai's per-call ``timeout=`` is refused before anything is sent, checks on or off,
    naming the knob for each meaning: ``deadline=`` to wait for the result,
    ``client.with_options(timeout=)`` for each HTTP request."""
    api = FakeAPI()
    expected = "deadline=5; for each HTTP request: client.with_options(timeout=5)"
    async with fake_client(api) as client:
        for call in (
            lambda: client.generate("gpt-image-2", prompt="ox", timeout=5),
            lambda: client.enqueue("gpt-image-2", prompt="ox", timeout=5),
            lambda: client.enqueue("gpt-image-2", prompt="ox", timeout=5, validate=False),
            lambda: client.enqueue_many("gpt-image-2", 2, prompt="ox", timeout=5),
            lambda: client.enqueue("flux-test", prompt="ox", timeout=5),
        ):
            with pytest.raises(InvalidParamsError, match=re.escape(expected)) as info:
                await call()
            assert info.value.field == "timeout"
            assert "extra_params" not in str(info.value)
        # Nothing is waited for by an estimate: only the HTTP knob is named.
        with pytest.raises(InvalidParamsError, match="with_options") as info:
            await client.estimate_cost("gpt-image-2", timeout=5)
        assert "deadline" not in str(info.value)
    assert api.requests == []


@pytest.mark.anyio
async def test_a_model_that_takes_a_timeout_gets_it_through_extra_params() -> None:
    api = FakeAPI()
    async with fake_client(api) as client:
        await client.enqueue("gpt-image-2", prompt="ox", extra_params={"timeout": 5})
    (post,) = [r for r in api.requests if r.method == "POST"]
    assert json.loads(post.content)["timeout"] == 5


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("extra_body", "extra_params={...}"),
        ("extra_headers", "api_key"),
        ("extra_query", "no query parameters"),
    ],
)
def test_openai_request_options_are_refused_naming_what_does_that_here(
    key: str, fragment: str
) -> None:
    with pytest.raises(InvalidParamsError, match=re.escape(fragment)) as info:
        refuse_request_options({"prompt": "ox", key: {}})
    assert info.value.field == key
    assert "openai-python" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("n", 2, "client.enqueue_many(model, n, ...), which sends num_generations"),
        ("size", "1024x1024", "did you mean 'resolution'?"),
        ("response_format", "b64_json", "client.read(record)"),
    ],
)
def test_openai_image_api_names_get_a_hint_and_keep_field_and_allowed(
    key: str, value: object, fragment: str
) -> None:
    with pytest.raises(InvalidParamsError, match=re.escape(fragment)) as info:
        validate_params("gpt-image-2", {"prompt": "ox", key: value})
    assert info.value.field == key
    assert info.value.allowed is not None
    assert "resolution" in info.value.allowed


def test_an_openai_name_a_model_does_take_is_not_refused() -> None:
    """The hints apply only to names the model does not know: a model whose schema lists
    ``n`` (or ``size``) takes it as any other parameter."""
    schema = {"properties": {"prompt": {"type": "string"}, "n": {"type": "integer"}}}
    check_against_schema("m", schema, {"prompt": "ox", "n": 2})
    with pytest.raises(InvalidParamsError, match="did you mean 'prompt'"):
        check_against_schema("m", schema, {"prompt": "ox", "promt": "x"})


_LITERALS = st.sampled_from(["quality", "resolution", "output_format"])
_STRINGS = st.sampled_from(["quality", "resolution", "output_format", "prompt", "target_repo"])


@given(
    st.one_of(
        st.tuples(_LITERALS, st.text(min_size=200, max_size=5_000)),
        st.tuples(_STRINGS, st.binary(min_size=200, max_size=2_000)),
        st.tuples(_STRINGS, st.lists(st.integers(), min_size=100, max_size=300)),
    )
)
def test_a_refusal_quotes_a_value_in_one_short_line_whatever_its_size(
    case: tuple[str, Any],
) -> None:
    field, value = case
    """A 100 kB value was quoted whole in the message (and in the example app's 422)."""
    with pytest.raises(InvalidParamsError) as info:
        validate_params("gpt-image-2", {"prompt": "an ox", field: value}, schema=None)
    assert info.value.field == field
    message = str(info.value)
    assert len(message) < 400
    assert "\n" not in message
