"""The emulator's model catalog: what ``GET /api/ai/models`` lists and the queue accepts.

Each model carries the JSON Schema of its parameters, in the form the per-model docs pages
are generated from (``properties``, ``required``, a non-standard ``basic`` list, per-property
``x-order``, ``default``, ``enum``, ``minimum``/``maximum``, ``description``), how it is billed
(the spec's ``pricing`` object) and what file a generation produces. The models themselves
live in ``_image_models`` and ``_video_models``; what a model is, in ``_spec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from ._image_models import FLUX_2_KLEIN, GPT_IMAGE_2, GPT_IMAGE_2_EDIT
from ._spec import MediaType, ModelSpec, Output, pricing
from ._video_models import KLING_V2_6_PRO_T2V

__all__ = ["MODELS", "MediaType", "ModelSpec", "Output", "get_model"]

# --- gpt-4o-mini: a text-only chat model, which the queue refuses -------------------------

_GPT_4O_MINI = ModelSpec(
    id="gpt-4o-mini",
    display_name="GPT-4o mini",
    description="A small, fast and affordable chat model from OpenAI.",
    developer="OpenAI",
    provider="openai",
    created=1721260800,
    released_at="2024-07-18",
    endpoint="/chat/completions",
    inputs=("text", "image"),
    outputs=("text",),
    # Dollars per token, as the spec's `input_cost_per_token` names them (OpenAI's list
    # price of $0.15 / $0.60 per million tokens).
    pricing=pricing(
        "token",
        input_cost_per_token=Decimal("0.00000015"),
        output_cost_per_token=Decimal("0.0000006"),
    ),
    request_schema=None,
)

MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    {
        model.id: model
        for model in (
            GPT_IMAGE_2,
            GPT_IMAGE_2_EDIT,
            FLUX_2_KLEIN,
            KLING_V2_6_PRO_T2V,
            _GPT_4O_MINI,
        )
    }
)
"""The catalog, by model id, in the order ``GET /api/ai/models`` lists it."""


def get_model(name: str) -> ModelSpec | None:
    """Look a model up by id (case-sensitive, as model names in API calls are)."""
    return MODELS.get(name)
