"""What text reaches telemetry (issue 18): the owners of the two boundaries, by property.

``Redactor`` is the one door of text to a span: whatever a server's message or a prompt holds,
what comes out never holds the API key, and is no longer than its limit. ``url_template`` is
what a metric says of a path: never an id, whatever the id.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from oxen_queue._api import HISTORY, MODELS, QUEUE, id_path, url_template
from oxen_queue._exceptions import GenerationFailedError, InvalidParamsError
from oxen_queue._otel import PROMPT_LIMIT
from oxen_queue._otel._text import Redactor, input_messages

secrets = st.text(min_size=1, max_size=20)
pieces = st.lists(st.one_of(st.text(max_size=30), st.just("")), max_size=6)
# What the API's ids are made of (``_ids``): letters, digits and - _ . ~.
ids = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEF0123456789-_.~"),
    min_size=1,
    max_size=64,
).filter(lambda value: value.strip(".") != "")


def seeded(secret: str, parts: list[str]) -> str:
    """The parts with the secret between each two, and around them."""
    return secret + secret.join(parts) + secret


@settings(max_examples=300)
@given(secret=secrets, parts=pieces, prompt=st.text(max_size=40), limit=st.integers(4, 120))
def test_no_text_through_the_redactor_holds_the_key_or_passes_its_limit(
    secret: str, parts: list[str], prompt: str, limit: int
) -> None:
    redactor = Redactor(secret)
    shown = redactor.text(seeded(secret, parts), hide=(prompt,) if prompt else (), limit=limit)
    assert secret not in shown
    assert len(shown) <= limit


@settings(max_examples=200)
@given(secret=secrets, parts=pieces)
def test_no_error_description_holds_the_key(secret: str, parts: list[str]) -> None:
    redactor = Redactor(secret)
    failed = GenerationFailedError(generation_id="g", error_message=seeded(secret, parts))
    for error in (failed, RuntimeError(seeded(secret, parts))):
        assert secret not in redactor.describe(error)


def test_refused_parameters_are_described_by_their_field_not_their_value() -> None:
    error = InvalidParamsError("prompt must be a string, not 'my private words'", field="prompt")
    assert Redactor("k3y").describe(error) == "invalid parameter prompt"


@settings(max_examples=200)
@given(secret=secrets, prompts=st.lists(st.text(max_size=700), min_size=1, max_size=3))
def test_captured_prompts_never_hold_the_key_and_stay_within_the_limit(
    secret: str, prompts: list[str]
) -> None:
    params = {"prompt": prompts[0], "multi_prompt": [{"prompt": p} for p in prompts[1:]]}
    messages = input_messages(params, Redactor(secret))
    if messages is None:
        return
    assert secret not in messages
    (message,) = json.loads(messages)
    assert message["role"] == "user"
    assert sum(len(part["content"]) for part in message["parts"]) <= PROMPT_LIMIT


TEMPLATES = {
    QUEUE: "/api/ai/queue/{generation_id}",
    HISTORY: "/api/ai/generations/{generation_id}",
    MODELS: "/api/ai/models/{model}",
}


@settings(max_examples=200)
@given(generation_id=ids, collection=st.sampled_from(sorted(TEMPLATES)))
def test_a_paths_template_is_its_collections_whatever_the_id(
    generation_id: str, collection: str
) -> None:
    """The id never reaches the template: every id of a collection has the same one."""
    assert url_template(id_path(collection, generation_id, field="id")) == TEMPLATES[collection]


@settings(max_examples=200)
@given(path=st.text(max_size=80))
def test_any_path_is_one_of_the_fixed_templates(path: str) -> None:
    """A template is one of a fixed few, whatever the path: a metric's attribute set stays
    small even for a path no endpoint builds."""
    template = url_template(path)
    fixed = {url_template(p) for p in (QUEUE, HISTORY, MODELS)}
    fixed |= {url_template(f"{p}/x") for p in (QUEUE, HISTORY, MODELS)}
    assert template in fixed or template == "_OTHER" or template == f"/{path}"
    if template == f"/{path}":
        assert path in {"api/ai/queue", "api/ai/generations", "api/ai/models", "api/events",
                        "api/ai/images/generate", "api/ai/images/edit",
                        "api/ai/videos/generate"}  # fmt: skip
