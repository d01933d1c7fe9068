"""What a model of the catalog is made of: `ModelSpec`, `Output`, and helpers
to write parameter schemas and prices.

Money is `decimal.Decimal` throughout, never a float. It becomes a JSON number only in
the published ``pricing`` object (the spec types those fields ``number``) and a decimal string
in history rows (the spec's ``cost``: "Charged amount for this row (decimal as string).").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

__all__ = [
    "PRICING_FIELDS",
    "MediaType",
    "ModelSpec",
    "Output",
    "money",
    "pricing",
    "prop",
]

MediaType = Literal["image", "video"]

# Every field of the spec's Model.pricing, in its order; a model publishes all of them, the
# ones its method does not use as null.
PRICING_FIELDS: Final = (
    "method",
    "input_cost_per_token",
    "output_cost_per_token",
    "cost_per_second",
    "cost_per_image",
    "cost_per_second_high_res",
    "cost_per_second_with_audio",
    "cost_per_image_grid",
    "cost_per_second_by_resolution",
)


def money(amount: Decimal) -> str:
    """A decimal string in plain notation (``"0.35"``, ``"0"``; never ``"3.5E-1"``)."""
    return format(amount, "f")


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
        pricing: The ``pricing`` object of the API's Model; amounts as ``Decimal``.
        request_schema: JSON Schema of the model-specific parameters, or ``None`` (chat models).
        image_inputs: The parameters that hold URLs of input images (a URL or an array of
            URLs), which the emulator downloads, only from its own file origin, when the job
            runs.
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
    image_inputs: tuple[str, ...] = ()
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
        """The price of one generation with these parameters, by the published pricing;
        ``None`` for a model the queue never runs (chat)."""
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
    """A deep, plain-JSON copy (so callers may mutate what they get); ``Decimal`` becomes a
    JSON number (its shortest float spelling reads back as the same decimal)."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def prop(
    type_: str | list[str],
    description: str,
    *,
    order: int,
    default: Any = None,
    enum: list[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One property of a model's parameter schema, in the per-model pages' form.

    ``extra`` adds other keywords as they are (``items``, ``minItems``, ``renderType``...).
    """
    schema: dict[str, Any] = {"type": type_, "description": description, "x-order": order}
    if default is not None:
        schema["default"] = default
    if enum is not None:
        schema["enum"] = enum
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    schema.update(extra)
    return schema


def pricing(method: str, **amounts: Any) -> dict[str, Any]:
    """A complete ``pricing`` object: the given amounts, every other field null.

    Raises:
        ValueError: An amount is not one of the spec's pricing fields.
    """
    unknown = set(amounts) - set(PRICING_FIELDS)
    if unknown:
        raise ValueError(f"not pricing fields: {sorted(unknown)}")
    result: dict[str, Any] = dict.fromkeys(PRICING_FIELDS)
    result["method"] = method
    result.update(amounts)
    return result
