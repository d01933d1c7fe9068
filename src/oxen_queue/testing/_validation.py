"""Model-parameter validation, as the API does it when a job runs.

The queue checks only the model, ``num_generations`` and authentication at enqueue; "model-
specific params such as prompt content, duration ranges and aspect-ratio values" fail at run
time, with an ``error_message`` from the provider's 422 (the docs' sync video errors read
``"Getting model response error: 422 - Value error, ..."``). The synchronous endpoints run the
same checks before answering, and refuse with 400.

This checks the subset of JSON Schema the catalog uses: ``required``,
``additionalProperties: false``, and per property ``type`` (one or a list), ``enum``,
``minimum``, ``maximum`` and, for arrays, ``minItems``, ``maxItems`` and ``items``; plus one
rule the schemas cannot say: a prompt must not be blank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ParamProblem", "check_params", "runtime_error_message"]

_TYPE_NAMES: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}


@dataclass(frozen=True, slots=True)
class ParamProblem:
    """One parameter the model would refuse.

    Attributes:
        field: The parameter's name.
        message: What is wrong, e.g. ``"must be one of 5, 10"``.
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_params(schema: Mapping[str, Any], params: Mapping[str, Any]) -> list[ParamProblem]:
    """Every problem with ``params`` under ``schema``, in the schema's ``x-order``.

    A ``None`` value counts as absent (the queue's request schema makes the generic fields
    nullable).

    Args:
        schema: The model's ``request_schema``.
        params: The model parameters of a request (queue-level fields already removed).

    Returns:
        The problems; empty if the parameters are valid.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    problems: list[ParamProblem] = []
    ordered = sorted(properties.items(), key=lambda item: item[1].get("x-order", 0))
    for name, prop in ordered:
        value = params.get(name)
        if value is None:
            if name in required:
                problems.append(ParamProblem(name, "is required"))
            continue
        message = _check_value(name, prop, value)
        if message is not None:
            problems.append(ParamProblem(name, message))
    if schema.get("additionalProperties", True) is False:
        problems.extend(
            ParamProblem(name, "is not a parameter of this model")
            for name, value in params.items()
            if name not in properties and value is not None
        )
    return problems


def runtime_error_message(problems: list[ParamProblem]) -> str:
    """The ``error_message`` of a job that failed validation when it ran."""
    return "Getting model response error: 422 - " + "; ".join(str(p) for p in problems)


def _check_value(name: str, prop: Mapping[str, Any], value: Any) -> str | None:
    type_ = prop.get("type")
    types = [type_] if isinstance(type_, str) else type_ if isinstance(type_, list) else []
    if types and not any(_has_type(value, str(option)) for option in types):
        return "must be " + " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
    enum = prop.get("enum")
    if enum is not None and not any(_same(value, option) for option in enum):
        return "must be one of " + ", ".join(str(option) for option in enum)
    minimum, maximum = prop.get("minimum"), prop.get("maximum")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            return f"must be between {minimum} and {maximum}"
        if minimum is not None and value < minimum:
            return f"must be >= {minimum}"
        if maximum is not None and value > maximum:
            return f"must be <= {maximum}"
    if isinstance(value, list):
        return _check_items(name, prop, value)
    if name == "prompt" and isinstance(value, str) and not value.strip():
        return "cannot be empty"
    return None


def _check_items(name: str, prop: Mapping[str, Any], value: list[Any]) -> str | None:
    low, high = prop.get("minItems"), prop.get("maxItems")
    if low is not None and len(value) < low:
        return f"must have at least {low} item{'s' if low != 1 else ''}"
    if high is not None and len(value) > high:
        return f"must have at most {high} items"
    items = prop.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            message = _check_value(f"{name}[{index}]", items, item)
            if message is not None:
                return f"item {index} {message}"
    return None


def _same(value: Any, option: Any) -> bool:
    # JSON has no bool/int distinction problem, Python does: True == 1.
    return type(value) is type(option) and bool(value == option)


def _has_type(value: Any, type_: str) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "array":
        return isinstance(value, list)
    if type_ == "object":
        return isinstance(value, dict)
    return True
