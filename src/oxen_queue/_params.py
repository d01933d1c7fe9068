"""Request parameters, checked locally before anything is sent.

The queue accepts any parameters at enqueue time and checks them against the model only when
the job runs: "model-specific params ... are validated at run time" (async queue reference),
and a job that fails then is billed. So every check that can be made here is made here.

``gpt-image-2`` has typed parameters (:class:`GptImage2Params`, with the docs page's enums and
defaults). Any other model is checked against the JSON Schema the server publishes for it
(``GET /api/ai/models/{id}``), with :func:`check_against_schema`.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from ._models import Model

from ._exceptions import InvalidParamsError, NotFoundError

__all__ = [
    "QUEUE_FIELDS",
    "GptImage2Options",
    "GptImage2Params",
    "OutputFormat",
    "ParamChecker",
    "Quality",
    "Resolution",
    "check_against_schema",
    "merge_extra",
    "validate_params",
]

Resolution = Literal["1024x768", "1024x1024", "1024x1536", "1920x1080", "2560x1440", "3840x2160"]
"""GPT Image 2 output sizes. HD sizes (1920x1080 and lower) bill at the standard tier; QHD+
sizes (2560x1440 and higher) at the high-resolution tier."""

Quality = Literal["auto", "low", "medium", "high"]
"""GPT Image 2 quality tiers; ``auto`` lets the model pick."""

OutputFormat = Literal["png", "jpeg", "webp"]
"""GPT Image 2 file formats."""

QUEUE_FIELDS: Final = frozenset({"target_namespace", "target_repo", "target_directory"})
"""Fields the queue itself takes on any model: where results are stored and who is billed."""


class GptImage2Params(BaseModel):
    """Parameters of ``gpt-image-2``, exactly as its docs page lists them, with its defaults.

    Only the fields you set are sent; the server applies the same defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, description="Text description of the image to generate.")
    resolution: Resolution = "1920x1080"
    quality: Quality = "high"
    output_format: OutputFormat = "png"


class GptImage2Options(TypedDict, total=False):
    """The optional keyword arguments of a ``gpt-image-2`` request, for editors and type checkers.

    Defaults (applied by the server when a key is left out): ``resolution="1920x1080"``,
    ``quality="high"``, ``output_format="png"``.
    """

    resolution: Resolution
    quality: Quality
    output_format: OutputFormat
    target_namespace: str
    target_repo: str
    target_directory: str


_TYPED: Final[dict[str, type[BaseModel]]] = {"gpt-image-2": GptImage2Params}


class ParamChecker:
    """Checks a client's requests, fetching each untyped model's published schema once.

    Args:
        describe: Fetches a model (``GET /api/ai/models/{id}``).
        enabled: The client's default; each call may override it.
    """

    def __init__(self, describe: Callable[[str], Awaitable[Model]], *, enabled: bool) -> None:
        self._describe = describe
        self._enabled = enabled
        self._schemas: dict[str, dict[str, Any] | None] = {}

    async def check(
        self, model: str, params: Mapping[str, Any], validate: bool | None
    ) -> dict[str, Any]:
        """The parameters to send, once checked (unless checks are off for this call).

        Raises:
            InvalidParamsError: A bad parameter, or a model the API does not know.
        """
        if not (self._enabled if validate is None else validate):
            return dict(params)
        schema = None if model in _TYPED else await self._schema(model)
        return validate_params(model, params, schema=schema)

    async def _schema(self, model: str) -> dict[str, Any] | None:
        if model not in self._schemas:
            try:
                described = await self._describe(model)
            except NotFoundError:
                raise InvalidParamsError(
                    f"model={model!r} is not a model the API knows "
                    "(list them with `oxen-queue models`)",
                    field="model",
                ) from None
            self._schemas[model] = described.parameter_schema
        return self._schemas[model]


def validate_params(
    model: str, params: Mapping[str, Any], *, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check a request's parameters and return what to send.

    Args:
        model: The model id.
        params: The parameters, queue fields (``target_namespace``, ...) included.
        schema: The model's published JSON Schema, used when the model has no typed parameters.
            ``None`` checks only what every model needs.

    Returns:
        The parameters to send: the caller's, unchanged (defaults are left to the server).

    Raises:
        InvalidParamsError: A parameter is missing, unknown, of the wrong type or out of range.
    """
    model_params = {k: v for k, v in params.items() if k not in QUEUE_FIELDS}
    for key in QUEUE_FIELDS & params.keys():
        value = params[key]
        if value is not None and not isinstance(value, str):
            raise InvalidParamsError(f"{key} must be a string, not {value!r}", field=key)
    prompt = model_params.get("prompt")
    if isinstance(prompt, str) and not prompt.strip():
        raise InvalidParamsError("prompt must not be empty", field="prompt")
    typed = _TYPED.get(model)
    if typed is not None:
        _check_typed(model, typed, model_params)
    elif schema is not None:
        check_against_schema(model, schema, model_params)
    return dict(params)


def _check_typed(model: str, typed: type[BaseModel], params: Mapping[str, Any]) -> None:
    try:
        typed.model_validate(params, strict=True)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else None
        kind = error["type"]
        known = [*typed.model_fields, *sorted(QUEUE_FIELDS)]
        if kind == "extra_forbidden":
            raise _unknown(model, str(field), known) from None
        if kind == "missing":
            raise InvalidParamsError(f"{field} is required for {model}", field=field) from None
        if field in typed.model_fields:
            allowed = get_args(typed.model_fields[field].annotation)
            if allowed:
                raise _not_allowed(model, field, error.get("input"), allowed) from None
        raise InvalidParamsError(
            f"{field}: {error['msg']} (got {error.get('input')!r})", field=field
        ) from None


def _unknown(model: str, name: str, known: Iterable[str]) -> InvalidParamsError:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return InvalidParamsError(
        f"{model} has no parameter {name!r}{hint}; its parameters are: {', '.join(known)}. "
        "To send a key its schema does not list, pass extra_params={...}",
        field=name,
        allowed=known,
    )


def merge_extra(body: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Add ``extra_params`` (sent unchecked) to checked parameters.

    Raises:
        InvalidParamsError: A key given both ways, or a key that is not a string.
    """
    if not extra:
        return body
    for key in extra:
        if not isinstance(key, str) or not key:
            raise InvalidParamsError(f"extra_params keys must be strings, not {key!r}", field=key)
        if key in body or key in ("model", "num_generations"):
            raise InvalidParamsError(
                f"{key!r} is given both as a parameter and in extra_params", field=key
            )
    return {**body, **extra}


def _not_allowed(
    model: str, field: str, value: object, allowed: tuple[Any, ...]
) -> InvalidParamsError:
    listed = ", ".join(str(a) for a in allowed)
    return InvalidParamsError(
        f"{field}={value!r} is not allowed for {model}; allowed values: {listed}",
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


def check_against_schema(model: str, schema: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Check flat parameters against a model's published JSON Schema.

    Only the keywords that model schemas use are checked: ``required``,
    ``additionalProperties: false`` (unknown keys), and per property ``type``,
    ``enum``, ``minimum``/``maximum``, ``exclusiveMinimum``/``exclusiveMaximum`` and
    ``minLength``/``maxLength``. A schema keyword not understood here is let through: the
    server stays the judge. A parameter the schema does not list is refused (a misspelling
    would be billed, then fail when the job runs), with a suggestion; send it anyway with
    ``extra_params``.

    Raises:
        InvalidParamsError: Naming the field, and the allowed values where there is a set.
    """
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for name in schema.get("required") or ():
        if name not in params:
            raise InvalidParamsError(f"{name} is required for {model}", field=str(name))
    unknown = sorted(set(params) - set(properties))
    if unknown and properties:
        raise _unknown(model, unknown[0], [*properties, *sorted(QUEUE_FIELDS)])
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
        _check_range(name, value, spec)
    if isinstance(value, str):
        if len(value) < spec.get("minLength", 0):
            raise InvalidParamsError(f"{name} must not be empty", field=name)
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            raise InvalidParamsError(
                f"{name} must be at most {spec['maxLength']} characters", field=name
            )


def _check_range(name: str, value: float, spec: Mapping[str, Any]) -> None:
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
