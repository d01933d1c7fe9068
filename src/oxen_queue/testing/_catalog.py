"""The emulator's model catalog: what ``GET /api/ai/models`` lists and the queue accepts.

Each model carries the JSON Schema of its parameters, in the form the per-model docs pages
are generated from (``properties``, ``required``, a non-standard ``basic`` list, per-property
``x-order``, ``default``, ``enum``, ``minimum``/``maximum``, ``description``), how it is billed
and what file a generation produces. Prices are illustrative: the docs give the pricing
*shape* (``method``, ``cost_per_image_grid``, ...), not current figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = ["MODELS", "MediaType", "ModelSpec", "Output", "get_model"]

MediaType = Literal["image", "video"]

_GPT_IMAGE_2_PROMPT: Final = (
    "An ox standing in the middle of a long open road at sunset, cinematic lighting, "
    "photorealistic, centered and staring at the camera."
)


@dataclass(frozen=True, slots=True)
class Output:
    """The file one generation produces.

    Attributes:
        media_type: ``"image"`` or ``"video"``.
        width: Width in pixels.
        height: Height in pixels.
        extension: File name extension, without the dot (``png``, ``jpg``, ``webp``, ``mp4``).
        content_type: The MIME type served with the file.
        seconds: Length of a video, in seconds; ``None`` for an image.
    """

    media_type: MediaType
    width: int
    height: int
    extension: str
    content_type: str
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    """One model of the catalog.

    Attributes:
        id: The name used in API calls (``model`` in requests, ``model_name`` in rows).
        display_name: Human name.
        description: One-paragraph description.
        developer: Who made the model.
        provider: Who serves it (filter ``provider_name`` of ``GET /api/ai/models``).
        created: Unix time of registration.
        endpoint: The synchronous endpoint, relative to ``/api/ai``.
        inputs: Input capabilities (``text``, ``image``, ...).
        outputs: Output capabilities; the queue accepts only models with ``image`` or
            ``video`` among them.
        pricing: The ``pricing`` object of the API's Model.
        request_schema: JSON Schema of the model-specific parameters, or ``None`` (chat models).
    """

    id: str
    display_name: str
    description: str
    developer: str
    provider: str
    created: int
    endpoint: Literal["/chat/completions", "/images/generate", "/videos/generate"]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    pricing: Mapping[str, Any]
    request_schema: Mapping[str, Any] | None
    released_at: str | None = None
    _cost: Callable[[ModelSpec, Mapping[str, Any]], Decimal] | None = field(
        default=None, repr=False
    )
    _output: Callable[[ModelSpec, Mapping[str, Any]], Output] | None = field(
        default=None, repr=False
    )

    @property
    def media_type(self) -> MediaType | None:
        """``"video"`` or ``"image"`` if the model outputs one, else ``None`` (text only)."""
        if "video" in self.outputs:
            return "video"
        if "image" in self.outputs:
            return "image"
        return None

    def param(self, params: Mapping[str, Any], name: str) -> Any:
        """The value of a parameter as the model would use it.

        A value outside the schema's ``enum`` (or absent, or null) gives the schema's
        default. Used for billing and rendering, which must work even for a job that will
        fail validation (the API bills such jobs).
        """
        prop = (self.request_schema or {}).get("properties", {}).get(name, {})
        value = params.get(name)
        enum = prop.get("enum")
        if value is None or (enum is not None and value not in enum):
            return prop.get("default")
        return value

    def cost(self, params: Mapping[str, Any]) -> Decimal | None:
        """What one generation with these parameters is billed, or ``None`` if never billed."""
        return None if self._cost is None else self._cost(self, params)

    def output(self, params: Mapping[str, Any]) -> Output:
        """The file one generation with these parameters produces.

        Raises:
            ValueError: The model produces no image or video.
        """
        if self._output is None:
            raise ValueError(f"model {self.id} produces no image or video")
        return self._output(self, params)

    def to_api(self) -> dict[str, Any]:
        """The ``Model`` object of the API (``GET /api/ai/models/{id}``)."""
        schema = None if self.request_schema is None else _thaw(self.request_schema)
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": "oxen",
            "display_name": self.display_name,
            "description": self.description,
            "summary": None,
            "model_type": "base",
            "endpoint": self.endpoint,
            "capabilities": {"input": list(self.inputs), "output": list(self.outputs)},
            "pricing": _thaw(self.pricing),
            "fine_tuning": None,
            "deployments": [],
            "developer": {"name": self.developer, "logo": None},
            "source_model": None,
            "image_url": None,
            "released_at": self.released_at,
            "showcase": None,
            # The spec, the models page and the queue docs name this field `request_schema`;
            # the per-model pages call it `json_request_schema`. Serve both, same content.
            "request_schema": schema,
            "json_request_schema": None if schema is None else _thaw(schema),
        }


def _thaw(value: Any) -> Any:
    """A deep, plain-JSON copy (so callers may mutate what they get)."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value


def _prop(
    type_: str,
    description: str,
    *,
    order: int,
    default: Any = None,
    enum: list[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": type_, "description": description, "x-order": order}
    if default is not None:
        prop["default"] = default
    if enum is not None:
        prop["enum"] = enum
    if minimum is not None:
        prop["minimum"] = minimum
    if maximum is not None:
        prop["maximum"] = maximum
    return prop


def _pricing(method: str, **values: Any) -> dict[str, Any]:
    pricing: dict[str, Any] = {
        "method": method,
        "input_cost_per_token": None,
        "output_cost_per_token": None,
        "cost_per_second": None,
        "cost_per_image": None,
        "cost_per_second_high_res": None,
        "cost_per_second_with_audio": None,
        "cost_per_image_grid": None,
        "cost_per_second_by_resolution": None,
    }
    pricing.update(values)
    return pricing


# --- gpt-image-2: parameters exactly as its docs page lists them ----------------------------

_GPT_IMAGE_2_RESOLUTIONS: Final = [
    "1024x768",
    "1024x1024",
    "1024x1536",
    "1920x1080",
    "2560x1440",
    "3840x2160",
]

# "HD sizes (1920x1080 and lower) bill at the standard tier; QHD+ sizes (2560x1440 and
# higher) bill at the high-resolution tier." The spec's example keys the grid by "4K"; the
# standard tier is called "HD" here. 'auto' bills as 'high' (an assumption).
_GPT_IMAGE_2_GRID: Final = {
    "auto": {"HD": 0.28, "4K": 1.47},
    "low": {"HD": 0.02, "4K": 0.05},
    "medium": {"HD": 0.07, "4K": 0.19},
    "high": {"HD": 0.28, "4K": 1.47},
}
_HIGH_RES_TIER: Final = frozenset({"2560x1440", "3840x2160"})
_IMAGE_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def _gpt_image_2_cost(model: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    tier = "4K" if model.param(params, "resolution") in _HIGH_RES_TIER else "HD"
    return Decimal(str(_GPT_IMAGE_2_GRID[model.param(params, "quality")][tier]))


def _gpt_image_2_output(model: ModelSpec, params: Mapping[str, Any]) -> Output:
    width, height = (int(part) for part in model.param(params, "resolution").split("x"))
    fmt = model.param(params, "output_format")
    return Output("image", width, height, _EXTENSIONS[fmt], _IMAGE_TYPES[fmt])


_GPT_IMAGE_2 = ModelSpec(
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
    pricing=_pricing("per_image", cost_per_image_grid=_GPT_IMAGE_2_GRID),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": _prop(
                "string",
                "Text description of the image to generate.",
                order=0,
                default=_GPT_IMAGE_2_PROMPT,
            ),
            "resolution": _prop(
                "string",
                "Output image resolution. HD sizes (1920x1080 and lower) bill at the standard "
                "tier; QHD+ sizes (2560x1440 and higher) bill at the high-resolution tier.",
                order=1,
                default="1920x1080",
                enum=_GPT_IMAGE_2_RESOLUTIONS,
            ),
            "quality": _prop(
                "string",
                "Output quality tier. Use 'auto' to let the model pick, or set explicitly to "
                "low, medium, or high.",
                order=2,
                default="high",
                enum=["auto", "low", "medium", "high"],
            ),
            "output_format": _prop(
                "string",
                "File format for the generated image.",
                order=3,
                default="png",
                enum=["png", "jpeg", "webp"],
            ),
        },
        "required": ["prompt"],
        # INFERRED: which fields the Workbench shows by default is not on the docs page.
        "basic": ["prompt", "resolution", "quality"],
    },
    _cost=_gpt_image_2_cost,
    _output=_gpt_image_2_output,
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


_FLUX_2_KLEIN = ModelSpec(
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
    pricing=_pricing("per_image", cost_per_image=0.004),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": _prop("string", "Text description of the image to generate.", order=0),
            "aspect_ratio": _prop(
                "string",
                "Aspect ratio of the generated image.",
                order=1,
                default="1:1",
                enum=list(_FLUX_SIZES),
            ),
            "seed": _prop(
                "integer",
                "Random seed; the same seed and prompt give the same image.",
                order=2,
            ),
            "num_inference_steps": _prop(
                "integer",
                "Number of denoising steps: more is slower and more detailed.",
                order=3,
                default=4,
                minimum=1,
                maximum=50,
            ),
        },
        "required": ["prompt"],
        "basic": ["prompt", "aspect_ratio"],
    },
    _cost=lambda model, params: Decimal("0.004"),
    _output=_flux_output,
)

# --- kling-video-v2-6-pro-text-to-video: parameters as its per-model page lists them ------

_KLING_SIZES: Final = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}


def _kling_cost(model: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    per_second = "0.14" if params.get("generate_audio") is True else "0.07"
    return Decimal(per_second) * int(model.param(params, "duration"))


def _kling_output(model: ModelSpec, params: Mapping[str, Any]) -> Output:
    # A small, aspect-matched stand-in: real Kling output is 1080p.
    width, height = _KLING_SIZES[model.param(params, "aspect_ratio")]
    seconds = float(model.param(params, "duration"))
    return Output("video", width, height, "mp4", "video/mp4", seconds)


_KLING_V2_6_PRO_T2V = ModelSpec(
    id="kling-video-v2-6-pro-text-to-video",
    display_name="Kling Video v2.6 Pro (Text to Video)",
    description=(
        "Kling 2.6 Pro turns a text prompt into a cinematic video clip, optionally with "
        "generated audio."
    ),
    developer="Kuaishou",
    provider="fal",
    created=1764547200,
    released_at="2025-12-01",
    endpoint="/videos/generate",
    inputs=("text",),
    outputs=("video",),
    pricing=_pricing(
        "per_video_output_second", cost_per_second=0.07, cost_per_second_with_audio=0.14
    ),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": _prop("string", "Text description of the video to generate.", order=0),
            "negative_prompt": _prop("string", "What the video should not show.", order=1),
            "aspect_ratio": _prop(
                "string",
                "Aspect ratio of the generated video.",
                order=2,
                default="16:9",
                enum=list(_KLING_SIZES),
            ),
            # An integer, as `duration` is in the queue's request schema and docs examples.
            "duration": _prop(
                "integer",
                "Length of the video in seconds.",
                order=3,
                default=5,
                enum=[5, 10],
            ),
            "generate_audio": _prop(
                "boolean", "Also generate a soundtrack.", order=4, default=False
            ),
            "cfg_scale": _prop(
                "number",
                "How closely the video follows the prompt.",
                order=5,
                default=0.5,
                minimum=0,
                maximum=10,
            ),
        },
        "required": ["prompt"],
        "basic": ["prompt", "aspect_ratio", "duration"],
    },
    _cost=_kling_cost,
    _output=_kling_output,
)

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
    pricing=_pricing("token", input_cost_per_token=0.00000015, output_cost_per_token=0.0000006),
    request_schema=None,
)

MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    {model.id: model for model in (_GPT_IMAGE_2, _FLUX_2_KLEIN, _KLING_V2_6_PRO_T2V, _GPT_4O_MINI)}
)
"""The catalog, by model id, in the order ``GET /api/ai/models`` lists it."""


def get_model(name: str) -> ModelSpec | None:
    """Look a model up by id (case-sensitive, as model names in API calls are)."""
    return MODELS.get(name)
