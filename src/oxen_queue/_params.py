"""Request parameters, checked locally before anything is sent.

The queue checks a model's parameters only when the job runs ("model-specific params ... are
validated at run time", async queue reference), and a job that fails then is billed: so every
check that can be made here is made here. Each typed model is declared once, as a ``*Params``
class registered in ``_TYPED`` (``.ci/codegen.py`` derives its ``*Options`` and the overloads
from it: run ``uv run python .ci/codegen.py`` after changing one). Any other model is checked
against the JSON Schema the server publishes for it (`check_against_schema`).
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, get_args, get_origin

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticUndefined

if TYPE_CHECKING:
    from ._models import Model

from ._exceptions import InvalidParamsError, NotFoundError
from ._ids import check_id, shown

Resolution = Literal["1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160"]
"""GPT Image 2 output sizes. HD sizes (1920x1080 and lower) bill at the standard tier; QHD+
sizes (2560x1440 and higher) at the high-resolution tier."""

Quality = Literal["auto", "low", "medium", "high"]
"""GPT Image 2 quality tiers; ``auto`` lets the model pick."""

OutputFormat = Literal["png", "jpeg", "webp"]
"""GPT Image 2 file formats."""

KlingAspectRatio = Literal["9:16", "16:9", "1:1"]
"""Kling v2.6 Pro text-to-video aspect ratios."""

KlingDuration = Literal[5, 10]
"""Kling v2.6 Pro text-to-video lengths, in seconds."""

_MAX_INPUT_IMAGES: Final = 16  # OpenAI's limit for GPT image edits (the emulator's schema too)

QUEUE_FIELDS: Final = frozenset({"target_namespace", "target_repo", "target_directory"})
"""Fields the queue itself takes on any model: where results are stored and who is billed."""


class GptImage2Params(BaseModel):
    """Parameters of ``gpt-image-2``, exactly as its docs page lists them, with its defaults.

    Only the fields you set are sent; the server applies the same defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    prompt: str = Field(min_length=1, description="Text description of the image to generate.")
    resolution: Resolution = "1920x1080"
    quality: Quality = "high"
    output_format: OutputFormat = "png"


def _url(value: object, field: str, not_text: str) -> object:
    # "The URL must be publicly downloadable. Data URIs work but are not recommended." (the
    # image editing reference): an http(s) URL or a data: URI, nothing else.
    if not isinstance(value, str):
        raise ValueError(not_text.format(value))
    if not value.startswith(("https://", "http://", "data:")):
        raise ValueError(f"{field} must be an http(s) URL (or a data: URI), not {value!r}")
    return value


class GptImage2EditParams(BaseModel):
    """Parameters of ``gpt-image-2-edit``, as its edit reference and the spec list them, with
    gpt-image-2's defaults.

    The input images must be publicly downloadable: the provider fetches them when the job
    runs. Only the fields you set are sent; the server applies the same defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    prompt: str = Field(min_length=1, description="Text instruction for the edit.")
    input_image: str | list[str] = Field(
        description="URL of the image to edit, or a list of URLs of images to compose (1-16)."
    )
    mask: str | None = Field(
        default=None, description="URL of a mask image: where the edit may change the image."
    )
    resolution: Resolution = "1920x1080"
    quality: Quality = "high"
    output_format: OutputFormat = "png"

    @field_validator("input_image", mode="before")
    @classmethod
    def _input_images(cls, value: object) -> object:
        if not isinstance(value, list):
            return _url(value, "input_image", "input_image must be a URL or a list of URLs")
        if not 1 <= len(value) <= _MAX_INPUT_IMAGES:
            raise ValueError(f"input_image takes 1 to {_MAX_INPUT_IMAGES} URLs")
        for item in value:
            _url(item, "input_image", "input_image must list URLs, not {!r}")
        return value

    @field_validator("mask", mode="before")
    @classmethod
    def _mask(cls, value: object) -> object:
        return _url(value, "mask", "mask must be a URL (leave it out for no mask)")


class KlingV26ProTextToVideoParams(BaseModel):
    """Parameters of ``kling-video-v2-6-pro-text-to-video``, as its model page lists them, with
    its defaults. Billed per second of output (``duration``), more with ``generate_audio``.

    Only the fields you set are sent; the server applies the same defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    prompt: str = Field(min_length=1, description="Text description of the video to generate.")
    negative_prompt: str | None = Field(default=None, description="What the video should not show.")
    aspect_ratio: KlingAspectRatio = "16:9"
    duration: KlingDuration = 5
    generate_audio: bool = False
    cfg_scale: float = Field(
        default=0.5, ge=0, le=10, description="How closely the video follows the prompt (0-10)."
    )

    @field_validator("negative_prompt", mode="before")
    @classmethod
    def _negative_prompt(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("negative_prompt must be a string (leave it out for none)")
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _whole_seconds(cls, value: object) -> object:
        # 5.0 equals 5, but the schema's type is integer: send what the server expects.
        if isinstance(value, float):
            raise ValueError(f"duration must be 5 or 10 (an integer), not {value!r}")
        return value


# Read (as source) by .ci/codegen.py; export a new model's *Params and *Options in __init__.py
# and the API reference.
_TYPED: Final[dict[str, type[BaseModel]]] = {
    "gpt-image-2": GptImage2Params,
    "gpt-image-2-edit": GptImage2EditParams,
    "kling-video-v2-6-pro-text-to-video": KlingV26ProTextToVideoParams,
}


def typed_defaults(model: str) -> dict[str, Any]:
    """The defaults of a model with typed parameters (``{}`` for any other model)."""
    fields = _TYPED[model].model_fields if model in _TYPED else {}
    return {
        name: field.default
        for name, field in fields.items()
        if field.default is not PydanticUndefined and field.default is not None
    }


class ParamChecker:
    """Checks a client's requests (``enabled``: the client's default, which each call may
    override), fetching each untyped model once with ``describe`` (``GET /api/ai/models/{id}``)
    and keeping it whole: its ``pricing`` prices requests too."""

    def __init__(self, describe: Callable[[str], Awaitable[Model]], *, enabled: bool) -> None:
        self._describe = describe
        self._enabled = enabled
        self._models: dict[str, Model] = {}
        self._fetching: dict[str, anyio.Lock] = {}

    async def check(
        self, model: str, params: Mapping[str, Any], validate: bool | None, *, partial: bool = False
    ) -> dict[str, Any]:
        """The parameters to send, checked unless ``validate`` (the call's override of the
        client's setting) is off; with ``partial``, nothing is required (an estimate needs no
        prompt). An empty model and openai-python's request options are refused either way."""
        if not isinstance(model, str) or not model.strip():  # a list is no dictionary key
            raise InvalidParamsError("model must be a non-empty model id", field="model")
        refuse_request_options(params, waits=not partial)
        if not (self._enabled if validate is None else validate):
            return dict(params)
        schema = None if model in _TYPED else (await self.describe(model)).parameter_schema
        return validate_params(model, params, schema=schema, partial=partial)

    async def describe(self, model: str) -> Model:
        """The model as the API describes it, fetched once per client (concurrent callers
        share the one request; a failed fetch is tried again by the next caller); a model the
        API does not know, or an id that cannot be a path segment, is ``InvalidParamsError``."""
        check_id(model, field="model")  # before the cache is asked, and a lock made for it
        if model not in self._models:
            async with self._fetching.setdefault(model, anyio.Lock()):
                if model not in self._models:
                    try:
                        self._models[model] = await self._describe(model)
                    except NotFoundError:
                        raise InvalidParamsError(
                            f"model={model!r} is not a model the API knows "
                            "(list them with `oxen-queue models`)",
                            field="model",
                        ) from None
            self._fetching.pop(model, None)
        return self._models[model]


def validate_params(
    model: str,
    params: Mapping[str, Any],
    *,
    schema: Mapping[str, Any] | None = None,
    partial: bool = False,
) -> dict[str, Any]:
    """Check a request's parameters (queue fields included) and return them, unchanged:
    defaults are left to the server. ``schema`` (the model's published JSON Schema) checks a
    model without typed parameters; ``None`` checks only what every model needs. With
    ``partial``, required parameters may be absent. ``InvalidParamsError`` for a parameter
    missing, unknown, of the wrong type or out of range."""
    model_params = {k: v for k, v in params.items() if k not in QUEUE_FIELDS}
    for key in QUEUE_FIELDS & params.keys():
        if params[key] is not None and not isinstance(params[key], str):
            raise InvalidParamsError(f"{key} must be a string, not {shown(params[key])}", field=key)
    prompt = model_params.get("prompt")
    if isinstance(prompt, str) and not prompt.strip():
        raise InvalidParamsError("prompt must not be empty", field="prompt")
    typed = _TYPED.get(model)
    if typed is not None:
        _check_typed(model, typed, model_params, partial=partial)
    elif schema is not None:
        check_against_schema(model, schema, model_params, partial=partial)
    return dict(params)


def _check_typed(
    model: str, typed: type[BaseModel], params: Mapping[str, Any], *, partial: bool = False
) -> None:
    try:
        typed.model_validate(params, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        error = next((e for e in errors if not (partial and e["type"] == "missing")), None)
        if error is None:
            return
        field = str(error["loc"][0]) if error["loc"] else None
        kind = error["type"]
        if kind == "extra_forbidden":
            raise _unknown(model, str(field), typed.model_fields) from None
        if kind == "missing":
            raise InvalidParamsError(f"{field} is required for {model}", field=field) from None
        annotation = typed.model_fields[field].annotation if field in typed.model_fields else None
        if get_origin(annotation) is Literal and kind in ("literal_error", "value_error"):
            allowed = get_args(annotation)
            raise _not_allowed(model, str(field), error.get("input"), allowed) from None
        if kind == "value_error":
            message = str(error["msg"]).removeprefix("Value error, ")
            raise InvalidParamsError(message, field=field) from None
        raise InvalidParamsError(
            f"{field}: {error['msg']} (got {shown(error.get('input'))})", field=field
        ) from None


# openai-python's per-call request options: never a model's parameter (sent, one would reach
# the model, and fail billed). A model that truly takes one gets it through extra_params.
_REQUEST_OPTIONS: Final = {
    "timeout": "{name} is not a parameter of a generation. For how long to wait for the "
    "result: deadline={value!r}; for each HTTP request: client.with_options(timeout={value!r})",
    "extra_body": "{name} is openai-python's: here, keys sent as given, unchecked, go in "
    "extra_params={{...}}",
    "extra_headers": "{name} is openai-python's: this client sends no headers of the call's "
    "own (the key is the client's api_key)",
    "extra_query": "{name} is openai-python's: the queue's requests take no query parameters",
}
# The same message where nothing is waited for (estimate_cost): only the HTTP knob applies.
_NO_WAIT_TIMEOUT: Final = (
    "timeout is not a parameter of a request. For each HTTP request: "
    "client.with_options(timeout={value!r})"
)

# Near misses from openai-python's image API, named when the model does not know them.
_NEAR_MISSES: Final = {
    "n": "for several generations of one request, use client.enqueue_many(model, n, ...), "
    "which sends num_generations and returns every generation",
    "response_format": "results are files at record.result_url: read them with "
    "client.read(record) or save them with client.download(record)",
}
# Renamed parameters: openai's name -> this model's, suggested when the model has it.
_RENAMED: Final = {"size": "resolution"}


def refuse_request_options(params: Mapping[str, Any], *, waits: bool = True) -> None:
    """Refuse (``InvalidParamsError``) an openai-python request option given as a model
    parameter (``timeout=``, ``extra_body=``, ...), checks on or off, naming what does that
    here: ``deadline=`` (when the call ``waits``) or ``client.with_options(timeout=)`` for a
    timeout, ``extra_params`` for keys sent as given."""
    for name, message in _REQUEST_OPTIONS.items():
        if name in params:
            message = message if waits or name != "timeout" else _NO_WAIT_TIMEOUT
            raise InvalidParamsError(message.format(name=name, value=params[name]), field=name)


def _unknown(model: str, name: str, known: Iterable[str]) -> InvalidParamsError:
    """The error of a parameter the model does not take (its ``known`` ones, and the queue's),
    with the likeliest hint: openai's name of one of its parameters, an openai habit this
    client meets otherwise, else the closest known name."""
    known = [*known, *sorted(QUEUE_FIELDS)]
    listed = ", ".join(known)
    habit = _NEAR_MISSES.get(name)
    if habit is not None:  # not a key to send anyway: no word of extra_params
        message = f"{model} has no parameter {name!r}: {habit}. Its parameters are: {listed}"
    else:
        renamed = _RENAMED.get(name)
        close = [renamed] if renamed in known else difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = (
            f"{model} has no parameter {name!r}{hint}; its parameters are: {listed}. "
            "To send a key its schema does not list, pass extra_params={...}"
        )
    return InvalidParamsError(message, field=name, allowed=known)


def check_count(num_generations: object) -> None:
    """Refuse (``InvalidParamsError``) a ``num_generations`` that is not a positive integer
    (``True`` is not 1)."""
    if isinstance(num_generations, bool) or not isinstance(num_generations, int):
        message = f"num_generations must be an integer, not {num_generations!r}"
    elif num_generations < 1:
        message = f"num_generations must be at least 1, not {num_generations}"
    else:
        return
    raise InvalidParamsError(message, field="num_generations")


def merge_extra(body: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Add ``extra_params`` (sent unchecked) to checked parameters; a key given both ways, or
    one that is not a string, is ``InvalidParamsError``."""
    for key in extra or ():
        if not isinstance(key, str) or not key:
            raise InvalidParamsError(f"extra_params keys must be strings, not {key!r}", field=key)
        if key in body or key in ("model", "num_generations"):
            raise InvalidParamsError(
                f"{key!r} is given both as a parameter and in extra_params", field=key
            )
    return {**body, **extra} if extra else body


def _not_allowed(
    model: str, field: str, value: object, allowed: tuple[Any, ...]
) -> InvalidParamsError:
    listed = ", ".join(str(a) for a in allowed)
    return InvalidParamsError(
        f"{field}={shown(value)} is not allowed for {model}; allowed values: {listed}",
        field=field,
        allowed=allowed,
    )


_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}


def check_against_schema(
    model: str, schema: Mapping[str, Any], params: Mapping[str, Any], *, partial: bool = False
) -> None:
    """Check flat parameters against a model's published JSON Schema: ``required`` (unless
    ``partial``), unknown keys (a misspelling would be billed, then fail when the job runs;
    ``extra_params`` sends one anyway), and per property ``type``, ``enum``, ``minimum``,
    ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``minLength`` and ``maxLength``.
    Any other keyword is let through: the server stays the judge. ``InvalidParamsError``
    names the field, and the allowed values where there is a set."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for name in () if partial else schema.get("required") or ():
        if name not in params:
            raise InvalidParamsError(f"{name} is required for {model}", field=str(name))
    unknown = sorted(set(params) - set(properties))
    if unknown and properties:
        raise _unknown(model, unknown[0], properties)
    for name, value in params.items():
        spec = properties.get(name)
        if isinstance(spec, Mapping):
            _check_property(model, name, value, spec)


def _check_property(model: str, name: str, value: object, spec: Mapping[str, Any]) -> None:
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        # bool is an int in Python, but True is not 1 in JSON: compare types too.
        if not any(value == e and type(value) is type(e) for e in enum):
            raise _not_allowed(model, name, value, tuple(enum))
        return
    expected = spec.get("type")
    kinds = [expected] if isinstance(expected, str) else expected
    if isinstance(kinds, list) and kinds:
        accepted = tuple(t for k in kinds for t in _JSON_TYPES.get(str(k), ()))
        is_bool = isinstance(value, bool)
        if accepted and (not isinstance(value, accepted) or (is_bool and bool not in accepted)):
            raise InvalidParamsError(
                f"{name} must be of type {' or '.join(map(str, kinds))}, not {value!r}", field=name
            )
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = spec.get("minimum"), spec.get("maximum")
        xlow, xhigh = spec.get("exclusiveMinimum"), spec.get("exclusiveMaximum")
        if (
            (isinstance(low, int | float) and value < low)
            or (isinstance(high, int | float) and value > high)
            or (isinstance(xlow, int | float) and value <= xlow)
            or (isinstance(xhigh, int | float) and value >= xhigh)
        ):
            bounds = f"{low if low is not None else xlow}..{high if high is not None else xhigh}"
            raise InvalidParamsError(f"{name}={value!r} is out of range {bounds}", field=name)
    if isinstance(value, str):
        if len(value) < spec.get("minLength", 0):
            raise InvalidParamsError(f"{name} must not be empty", field=name)
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            raise InvalidParamsError(
                f"{name} must be at most {spec['maxLength']} characters", field=name
            )
