"""The image models of the catalog: ``gpt-image-2``, ``gpt-image-2-edit`` and FLUX.2 klein.

Each publishes its parameters as JSON Schema with ``additionalProperties: false`` (the
emulator refuses an unknown parameter when the job runs, so the schema says so) and its
price in the spec's ``pricing`` shape. What one generation costs is computed *from* that
published pricing, so a client that prices a request from ``GET /api/ai/models/{id}`` gets
exactly the ``cost`` of the history row.

Prices are illustrative: the docs give the pricing shape and the tiers, not current figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from ._spec import ModelSpec, Output, pricing, prop

__all__ = ["FLUX_2_KLEIN", "GPT_IMAGE_2", "GPT_IMAGE_2_EDIT"]

_GPT_IMAGE_2_PROMPT: Final = (
    "An ox standing in the middle of a long open road at sunset, cinematic lighting, "
    "photorealistic, centered and staring at the camera."
)
_RESOLUTIONS: Final = [
    "1024x768",
    "1024x1024",
    "1024x1536",
    "1920x1080",
    "2560x1440",
    "3840x2160",
]
_QUALITIES: Final = ["auto", "low", "medium", "high"]
# "HD sizes (1920x1080 and lower) bill at the standard tier; QHD+ sizes (2560x1440 and
# higher) bill at the high-resolution tier." (the gpt-image-2 docs page, `resolution`).
_HIGH_RES_TIER: Final = frozenset({"2560x1440", "3840x2160"})
_IMAGE_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def _grid(tiers: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, Decimal]]:
    """``cost_per_image_grid``: {quality: {resolution: price}} from each quality's
    (standard tier, high-resolution tier) prices, every resolution spelled out.

    The spec describes the grid as "Cost per image keyed by quality then resolution tier (e.g.
    {"high": {"4K": 1.47}})". Keyed here by the exact ``resolution`` values a request sends,
    so a client looks its price up without knowing the tiers. INFERRED: ``auto`` is billed as
    ``high`` (the model may pick it), and the docs publish no figures: these are plausible.
    """
    return {
        quality: {
            resolution: Decimal(high_res if resolution in _HIGH_RES_TIER else standard)
            for resolution in _RESOLUTIONS
        }
        for quality, (standard, high_res) in tiers.items()
    }


def _grid_cost(model: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    """The grid's price for the request's quality and resolution (their defaults for an
    absent or invalid value: the API bills a job that then fails), else ``cost_per_image``."""
    grid = model.pricing["cost_per_image_grid"]
    price = grid.get(model.param(params, "quality"), {}).get(model.param(params, "resolution"))
    return Decimal(price if price is not None else model.pricing["cost_per_image"])


def _sized_output(model: ModelSpec, params: Mapping[str, Any]) -> Output:
    width, height = (int(part) for part in model.param(params, "resolution").split("x"))
    fmt = model.param(params, "output_format")
    return Output("image", width, height, _EXTENSIONS[fmt], _IMAGE_TYPES[fmt])


def _gpt_image_2_props(*, first_order: int) -> dict[str, Any]:
    """``resolution``, ``quality`` and ``output_format``, as the gpt-image-2 page lists them."""
    return {
        "resolution": prop(
            "string",
            "Output image resolution. HD sizes (1920x1080 and lower) bill at the standard "
            "tier; QHD+ sizes (2560x1440 and higher) bill at the high-resolution tier.",
            order=first_order,
            default="1920x1080",
            enum=list(_RESOLUTIONS),
        ),
        "quality": prop(
            "string",
            "Output quality tier. Use 'auto' to let the model pick, or set explicitly to "
            "low, medium, or high.",
            order=first_order + 1,
            default="high",
            enum=list(_QUALITIES),
        ),
        "output_format": prop(
            "string",
            "File format for the generated image.",
            order=first_order + 2,
            default="png",
            enum=["png", "jpeg", "webp"],
        ),
    }


# --- gpt-image-2: parameters exactly as its docs page lists them ----------------------------

_GPT_IMAGE_2_GRID: Final = _grid(
    {
        "auto": ("0.28", "1.47"),
        "low": ("0.02", "0.05"),
        "medium": ("0.07", "0.19"),
        "high": ("0.28", "1.47"),
    }
)

GPT_IMAGE_2: Final = ModelSpec(
    id="gpt-image-2",
    display_name="GPT Image 2",
    description=(
        "GPT Image 2 is OpenAI's next-generation image model available through Fal. It "
        "produces photorealistic images with strong prompt adherence, pixel-perfect text "
        "rendering, and accurate handling of dense or multilingual layouts."
    ),
    developer="OpenAI",
    provider="fal",
    created=1776297600,
    released_at="2026-04-16",
    endpoint="/images/generate",
    inputs=("text",),
    outputs=("image",),
    # `cost_per_image` is the default request's price (high, 1920x1080): a fallback for a
    # client that does not read the grid.
    pricing=pricing(
        "per_image",
        cost_per_image=_GPT_IMAGE_2_GRID["high"]["1920x1080"],
        cost_per_image_grid=_GPT_IMAGE_2_GRID,
    ),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": prop(
                "string",
                "Text description of the image to generate.",
                order=0,
                default=_GPT_IMAGE_2_PROMPT,
            ),
            **_gpt_image_2_props(first_order=1),
        },
        "required": ["prompt"],
        "additionalProperties": False,
        # INFERRED: which fields the Workbench shows by default is not on the docs page.
        "basic": ["prompt", "resolution", "quality"],
    },
    _cost=_grid_cost,
    _output=_sized_output,
)

# --- gpt-image-2-edit ------------------------------------------------------------------------
# DOCUMENTED: the id (the image editing reference lists it among the models of
# POST /images/edit), `prompt` and `input_image` required, `input_image` "a URL string or an
# array of URLs, depending on the model", the spec's optional `mask` URL.
# INFERRED: the other parameters are gpt-image-2's page's (resolution, quality,
# output_format, same enums and defaults); up to 16 input images (OpenAI's limit for GPT
# image edits); the prices (a little above gpt-image-2's: the input images are billed too).

_GPT_IMAGE_2_EDIT_GRID: Final = _grid(
    {
        "auto": ("0.30", "1.52"),
        "low": ("0.03", "0.06"),
        "medium": ("0.08", "0.21"),
        "high": ("0.30", "1.52"),
    }
)

GPT_IMAGE_2_EDIT: Final = ModelSpec(
    id="gpt-image-2-edit",
    display_name="GPT Image 2 Edit",
    description=(
        "GPT Image 2 edits: rework one image, or compose several, from a text instruction, "
        "optionally only inside a mask."
    ),
    developer="OpenAI",
    provider="fal",
    created=1776297600,
    released_at="2026-04-16",
    # The spec's Model.endpoint enum has no "/images/edit" (the edit reference documents the
    # endpoint all the same): an image-output model reports "/images/generate" here, and the
    # emulator serves this model on POST /api/ai/images/edit (and the queue) too.
    endpoint="/images/generate",
    inputs=("text", "image"),
    outputs=("image",),
    pricing=pricing(
        "per_image",
        cost_per_image=_GPT_IMAGE_2_EDIT_GRID["high"]["1920x1080"],
        cost_per_image_grid=_GPT_IMAGE_2_EDIT_GRID,
    ),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": prop("string", "Text instruction for the edit.", order=0),
            "input_image": prop(
                ["string", "array"],
                "URL of the image to edit, or an array of URLs of images to compose (up to "
                "16). The URLs must be publicly downloadable.",
                order=1,
                items={"type": "string", "format": "uri"},
                minItems=1,
                maxItems=16,
                renderType="image-url",
            ),
            "mask": prop(
                "string",
                "URL of a mask image: where it is transparent (or, without transparency, "
                "white) is what the edit may change.",
                order=2,
                format="uri",
                renderType="image-url",
            ),
            **_gpt_image_2_props(first_order=3),
        },
        "required": ["prompt", "input_image"],
        "additionalProperties": False,
        "basic": ["prompt", "input_image", "resolution", "quality"],
    },
    image_inputs=("input_image", "mask"),
    _cost=_grid_cost,
    _output=_sized_output,
)

# --- black-forest-labs-flux-2-klein-4b ---------------------------------------------------
# DOCUMENTED: the model id, `prompt` (required) and the aspect ratios 1:1, 16:9, 9:16, 4:3,
# 3:4 (the image generation reference lists them with `num_inference_steps` and `seed`).
# INFERRED: the default 1:1, the 1..50 range of `num_inference_steps`, the default 4, the
# pixel size of each aspect ratio, PNG output and the price.

_FLUX_SIZES: Final = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
}


def _flux_output(model: ModelSpec, params: Mapping[str, Any]) -> Output:
    width, height = _FLUX_SIZES[model.param(params, "aspect_ratio")]
    return Output("image", width, height, "png", "image/png")


def _per_image_cost(model: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    return Decimal(model.pricing["cost_per_image"])


FLUX_2_KLEIN: Final = ModelSpec(
    id="black-forest-labs-flux-2-klein-4b",
    display_name="FLUX.2 [klein] 4B",
    description=(
        "A small, fast text-to-image model from Black Forest Labs, suited to drafts and "
        "high-volume generation."
    ),
    developer="Black Forest Labs",
    provider="fal",
    created=1768435200,
    released_at="2026-01-15",
    endpoint="/images/generate",
    inputs=("text",),
    outputs=("image",),
    pricing=pricing("per_image", cost_per_image=Decimal("0.004")),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": prop("string", "Text description of the image to generate.", order=0),
            "aspect_ratio": prop(
                "string",
                "Aspect ratio of the generated image.",
                order=1,
                default="1:1",
                enum=list(_FLUX_SIZES),
            ),
            "seed": prop(
                "integer",
                "Random seed; the same seed and prompt give the same image.",
                order=2,
            ),
            "num_inference_steps": prop(
                "integer",
                "Number of denoising steps: more is slower and more detailed.",
                order=3,
                default=4,
                minimum=1,
                maximum=50,
            ),
        },
        "required": ["prompt"],
        "additionalProperties": False,
        "basic": ["prompt", "aspect_ratio"],
    },
    _cost=_per_image_cost,
    _output=_flux_output,
)
