"""Pydantic v2 models of the API's responses.

They accept unknown fields (rows carry the request's own parameters at the top level: "Any
additional parameters from the original enqueue request ... are included") and unknown status
strings (the API has renamed statuses before). Money is `Decimal`, read by `_money.amount`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from ._money import AmountError, amount, charge

logger = logging.getLogger("oxen_queue")

GenerationStatus = Literal["queued", "processing", "succeeded", "failed", "cancelled"]
"""The statuses the API documents. Records hold any string: a new status is never a crash."""

TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses after which a generation never changes again."""

PricingMethod = Literal["token", "time", "per_image", "per_video_output_second"]
"""How a model is billed, as the spec's ``Model.pricing.method`` enumerates it."""


def _lenient_charge(value: object, info: ValidationInfo) -> Decimal | None:
    # The row's id is validated before its cost (it is declared first): the warning names it.
    generation_id = info.data.get("generation_id")
    what = f"cost of {generation_id!r:.100}" if isinstance(generation_id, str) else info.field_name
    return charge(value, what=what or "charged amount")


# A charged amount (decimal string); None when absent, null or refused (with a warning).
Charge = Annotated[Decimal | None, BeforeValidator(_lenient_charge)]


class _Response(BaseModel):
    # Unknown fields are kept, never an error. protected_namespaces=(): pydantic before 2.10
    # warns of the fields model_name and model_type.
    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=(), defer_build=True)


class GenerationRecord(_Response):
    """One generation's row, as ``GET /api/ai/queue/{id}`` returns it.

    The request's own parameters (``prompt``, ``resolution``, ...) are kept as extra fields;
    [`params`][oxen_queue.GenerationRecord.params] collects them.

    When completion was learned from the event stream, the record is built from the event
    (``url`` mapped to `result_url`, ``error`` to `error_message`, ``model`` to
    `model_name`) and the parameters this client sent; the timestamps are then ``None``.
    ``await generation.refresh()`` fetches the full row.
    """

    generation_id: str
    status: str
    model_name: str | None = None
    media_type: str | None = None
    enqueued_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    result_url: str | None = None
    error_message: str | None = None
    target_namespace: str | None = None
    target_repo: str | None = None
    target_directory: str | None = None
    cost: Charge = None
    """What the row was charged, once charged: ``None`` while queued, on rows of ``/api/ai/queue``
    (only ``/api/ai/generations`` rows carry it), and, with a logged warning, for a refused one."""
    user_id: str | None = None
    username: str | None = None
    user_image: str | None = None
    """Who made it (``/api/ai/generations`` rows only)."""

    @property
    def is_terminal(self) -> bool:
        """Whether the status is final (``succeeded``, ``failed`` or ``cancelled``)."""
        return self.status in TERMINAL_STATUSES

    @property
    def params(self) -> dict[str, Any]:
        """The request parameters the server merged into the row (``prompt``, ...): every
        field the row schema does not declare."""
        return dict(self.__pydantic_extra__ or {})


class GenerationPage(_Response):
    """One page of ``GET /api/ai/generations``: history with costs."""

    count: int
    generations: list[GenerationRecord]
    page_number: int
    page_size: int
    total_pages: int
    total_entries: int
    total_cost: Charge = None
    """What the whole filtered set was charged (every page, not just this one); ``None`` when
    nothing in it has been charged, or, with a logged warning, when it is not an amount."""


class ModelCapabilities(_Response):
    """What a model takes in and gives out (``"text"``, ``"image"``, ``"video"``)."""

    input: list[str] = Field(default_factory=list)
    output: list[str] = Field(default_factory=list)


class ModelPricing(_Response):
    """How a model is billed (the spec's ``Model.pricing``); amounts are exact Decimals.

    Only ``method`` is common; which amounts are set depends on it (the others are null).
    ``AsyncClient.estimate_cost`` prices a request from them. A price the client refuses
    (negative, ``NaN``, above 10**12, finer than 18 places, not a number) is unknown: ``None``
    (or left out of its table) and listed in `refused`; an estimate that needs it raises
    ``CostUnknownError`` naming it, and the model's other prices still work.

    Attributes:
        method: ``per_image``, ``per_video_output_second``, ``token`` or ``time`` (any
            other string is kept as it is).
        cost_per_image: One image's price.
        cost_per_image_grid: One image's price by quality, then resolution:
            ``{"high": {"1920x1080": Decimal("0.28"), ...}, ...}``.
        cost_per_second: One second of output video.
        cost_per_second_high_res: One second of output video at high resolution.
        cost_per_second_with_audio: One second of output video with a soundtrack.
        cost_per_second_by_resolution: One second of output video by resolution
            (``{"1080p": Decimal("0.07")}``).
        input_cost_per_token: One input token (chat models).
        output_cost_per_token: One output token (chat models).
        refused: The published prices this client refused, each with why, by the name
            ``CostUnknownError.missing`` gives it: ``"cost_per_image"``,
            ``"cost_per_image_grid['high']['1920x1080']"``... Computed here, never the server's.
    """

    method: PricingMethod | str | None = None
    cost_per_image: Decimal | None = None
    cost_per_image_grid: dict[str, dict[str, Decimal]] | None = None
    cost_per_second: Decimal | None = None
    cost_per_second_high_res: Decimal | None = None
    cost_per_second_with_audio: Decimal | None = None
    cost_per_second_by_resolution: dict[str, Decimal] | None = None
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    refused: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read_prices(cls, data: Any) -> Any:
        # Every amount through the one owner, before pydantic sees it: what it refuses is
        # dropped and named, so one bad price costs that price alone, not the whole pricing.
        if not isinstance(data, Mapping):
            return data
        values: dict[str, Any] = dict(data)
        refused: dict[str, str] = {}
        for name in cls.model_fields:
            if name not in ("method", "refused"):
                values[name] = _read(values.get(name), name, refused, _DEPTH.get(name, 0))
        return {**values, "refused": refused}


# The price tables, by depth: {key: price}, {key: {key: price}}; every other field is a price.
_DEPTH: Final = {"cost_per_second_by_resolution": 1, "cost_per_image_grid": 2}


def _read(value: object, name: str, refused: dict[str, str], depth: int) -> Any:
    """A price (or table) by `_money.amount`; a refused one is dropped, named in ``refused``."""
    if value is None:
        return None
    if depth == 0:
        try:
            return amount(value)
        except AmountError as exc:
            refused[name] = str(exc)
            return None
    if not isinstance(value, Mapping):
        refused[name] = "not an object"
        return None
    table = {key: _read(raw, f"{name}[{key!r}]", refused, depth - 1) for key, raw in value.items()}
    return {key: price for key, price in table.items() if price is not None}


def _lenient_pricing(value: object) -> ModelPricing | None:
    # A pricing object the client cannot read leaves the model usable (its schema still
    # checks requests); only an estimate needs it, and says it is missing.
    if value is None or isinstance(value, ModelPricing):
        return value
    try:
        return ModelPricing.model_validate(value)
    except ValidationError:
        logger.debug("ignored an unreadable pricing object: %.200r", value)
        return None


class Model(_Response):
    """A model, as ``GET /api/ai/models/{id}`` returns it.

    The docs disagree on the name of the parameter schema (``request_schema`` in the spec and
    the models reference, ``json_request_schema`` on the per-model pages), so both are read;
    [`parameter_schema`][oxen_queue.Model.parameter_schema] is whichever is present.
    """

    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    display_name: str | None = None
    description: str | None = None
    model_type: str | None = None
    endpoint: str | None = None
    capabilities: ModelCapabilities | None = None
    pricing: Annotated[ModelPricing | None, BeforeValidator(_lenient_pricing)] = None
    """How the model is billed; ``None`` when not published (or unreadable)."""
    request_schema: dict[str, Any] | None = None
    json_request_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _warn_of_refused_prices(self) -> Model:
        # Once per model read (the client reads each model once): not once per estimate.
        if self.pricing is not None and self.pricing.refused:
            refused = "; ".join(f"{name}: {why}" for name, why in self.pricing.refused.items())
            logger.warning(
                "model %.100r publishes prices this client refuses, so they are unknown "
                "(an estimate that needs one raises CostUnknownError): %.500s",
                self.id,
                refused,
            )
        return self

    @property
    def parameter_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the model's parameters, from either documented key."""
        return self.request_schema or self.json_request_schema

    @property
    def media_type(self) -> str | None:
        """``"video"`` or ``"image"`` for models the queue accepts, else ``None``."""
        outputs = self.capabilities.output if self.capabilities else []
        if "video" in outputs or self.endpoint == "/videos/generate":
            return "video"
        if "image" in outputs or self.endpoint == "/images/generate":
            return "image"
        return None


class ImageResult(_Response):
    """One image from ``POST /api/ai/images/generate``: a temporary ``url`` or ``b64_json``."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(_Response):
    """The answer of the blocking ``POST /api/ai/images/generate`` and ``/images/edit``."""

    model: str | None = None
    created: int | None = None
    images: list[ImageResult] = Field(default_factory=list)


class VideoResult(_Response):
    """One video from ``POST /api/ai/videos/generate``: a temporary ``url`` or ``b64_json``."""

    url: str | None = None
    b64_json: str | None = None


class VideosResponse(_Response):
    """The answer of the blocking ``POST /api/ai/videos/generate``."""

    model: str | None = None
    created: int | None = None
    videos: list[VideoResult] = Field(default_factory=list)


class CompletionEvent(_Response):
    """The payload of a ``media_generation_completed`` event on ``GET /api/events``.

    Its keys differ from the row's: ``url`` (not ``result_url``), ``error`` (not
    ``error_message``), ``model`` (not ``model_name``), and ``model`` is absent on failures.
    """

    generation_id: str
    status: str
    media_type: str | None = None
    model: str | None = None
    url: str | None = None
    error: str | None = None

    def to_record(
        self, *, model: str | None, params: dict[str, Any], generation_id: str | None = None
    ) -> GenerationRecord:
        """The row this event implies, filled with what the client already knows.

        Args:
            model: The model the client sent, for an event that names none (failures).
            params: The parameters the client sent: the row's extra fields.
            generation_id: The id as the client holds it (the same string is kept, not a
                second copy); ``None``: the event's.
        """
        values: dict[str, Any] = {
            "generation_id": generation_id or self.generation_id,
            "status": _shared(self.status),
            "model_name": _shared(self.model) if self.model else model,
            "media_type": _shared(self.media_type),
            "result_url": self.url,
            "error_message": self.error,
        }
        if _RECORD_FIELDS.isdisjoint(params):
            # Every value is checked already (the event's by this model, the parameters by the
            # client before sending): no second validation, and one fields-set for every such
            # record. Over thousands of pending generations this halves what one holds.
            return GenerationRecord.model_construct(_EVENT_FIELDS_SET, **{**params, **values})
        return GenerationRecord.model_validate({**params, **values})


_RECORD_FIELDS: Final = frozenset(GenerationRecord.model_fields)
# Shared by every record made from an event: pydantic copies it before any change.
_EVENT_FIELDS_SET: Final = {
    "generation_id",
    "status",
    "model_name",
    "media_type",
    "result_url",
    "error_message",
}
_SHARED: dict[str, str] = {}


def _shared(value: str | None) -> str | None:
    """One copy of each short, recurring string (statuses, media types, model names)."""
    if value is None or len(value) > 64:
        return value
    if len(_SHARED) < 256:  # bounded: a server sending ever new strings fills nothing
        return _SHARED.setdefault(value, value)
    return _SHARED.get(value, value)
