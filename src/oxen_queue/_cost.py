"""What a request will cost, from the pricing a model publishes: pure, no HTTP.

A model's details (``GET /api/ai/models/{id}``) carry ``pricing`` in the spec's shape:
``method`` (``per_image``, ``per_video_output_second``, ``token``, ``time``) and the amounts
that method uses. :func:`estimate_cost` applies it to a request's parameters:

- ``per_image`` with a ``cost_per_image_grid``: the grid's cell for the request's
  ``quality``, then its ``resolution`` ("Cost per image keyed by quality then resolution
  tier"). Without a grid, ``cost_per_image``.
- ``per_video_output_second``: seconds of output (``duration``, or the sum of a
  ``multi_prompt``'s shot durations) times the price of a second: with ``generate_audio``,
  ``cost_per_second_with_audio``; with a ``resolution`` the model prices apart,
  ``cost_per_second_by_resolution``; else ``cost_per_second``.
- ``token`` and ``time``: the cost depends on how the job runs, so no estimate exists.

A parameter the request leaves out counts at its default (the model's typed parameters, else
the ``default`` of its published schema), since that is what the server applies and bills.
Whatever cannot be resolved raises :class:`CostUnknownError` naming what is missing: an
estimate is never a guess, and never zero for want of a price.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._exceptions import CostUnknownError
from ._models import to_decimal

if TYPE_CHECKING:
    from ._models import ModelPricing

__all__ = ["estimate_cost", "schema_defaults"]


def schema_defaults(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``default`` of each property of a model's published parameter schema."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {
        name: spec["default"]
        for name, spec in properties.items()
        if isinstance(spec, Mapping) and spec.get("default") is not None
    }


def estimate_cost(
    model: str,
    pricing: ModelPricing | None,
    params: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    count: int = 1,
) -> Decimal:
    """The cost of ``count`` generations of one request, by the model's published pricing.

    Args:
        model: The model id (for messages).
        pricing: The model's ``pricing``; ``None`` when it publishes none.
        params: The request's parameters.
        defaults: The value of each parameter the request leaves out.
        count: Generations (``num_generations``).

    Raises:
        CostUnknownError: The price cannot be worked out; ``.missing`` says what is missing.
    """
    return _unit_price(model, pricing, params, defaults or {}) * count


def _unit_price(
    model: str, pricing: ModelPricing | None, params: Mapping[str, Any], defaults: Mapping[str, Any]
) -> Decimal:
    if pricing is None or pricing.method is None:
        raise CostUnknownError(
            f"{model} publishes no pricing, so its cost cannot be estimated",
            model=model,
            missing="pricing",
        )
    method = pricing.method
    if method == "per_image":
        return _per_image(model, pricing, params, defaults)
    if method == "per_video_output_second":
        return _per_video_second(model, pricing, params, defaults)
    if method in ("token", "time"):
        what = "tokens" if method == "token" else "run time"
        raise CostUnknownError(
            f"{model} is billed by {method}: its cost depends on the {what} the job uses, "
            "which is not known before it runs",
            model=model,
            missing=what,
        )
    raise CostUnknownError(
        f"{model} is billed by {method!r}, a pricing method this client cannot estimate",
        model=model,
        missing=f"a known pricing method (got {method!r})",
    )


def _param(params: Mapping[str, Any], defaults: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    return defaults.get(name) if value is None else value


def _required(
    model: str, params: Mapping[str, Any], defaults: Mapping[str, Any], name: str, why: str
) -> Any:
    value = _param(params, defaults, name)
    if value is None:
        raise CostUnknownError(
            f"{model} prices {why}, and the request gives no {name} (nor does the model "
            "publish a default for it)",
            model=model,
            missing=name,
        )
    return value


def _per_image(
    model: str, pricing: ModelPricing, params: Mapping[str, Any], defaults: Mapping[str, Any]
) -> Decimal:
    grid = pricing.cost_per_image_grid
    if grid:
        why = "images by quality and resolution"
        quality = str(_required(model, params, defaults, "quality", why))
        resolution = str(_required(model, params, defaults, "resolution", why))
        row = grid.get(quality)
        if row is None:
            raise CostUnknownError(
                f"{model}'s price grid has no quality {quality!r} (it prices: {', '.join(grid)})",
                model=model,
                missing=f"cost_per_image_grid[{quality!r}]",
            )
        price = row.get(resolution)
        if price is None:
            raise CostUnknownError(
                f"{model}'s price grid has no resolution {resolution!r} at quality "
                f"{quality!r} (it prices: {', '.join(row)})",
                model=model,
                missing=f"cost_per_image_grid[{quality!r}][{resolution!r}]",
            )
        return price
    if pricing.cost_per_image is None:
        raise CostUnknownError(
            f"{model} is billed per image but publishes no cost_per_image",
            model=model,
            missing="cost_per_image",
        )
    return pricing.cost_per_image


def _seconds(model: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> Decimal:
    """Seconds of output: ``duration``, or the sum of a multi-shot request's durations."""
    shots = params.get("multi_prompt")
    if params.get("duration") is None and isinstance(shots, list) and shots:
        # "multi_prompt = array of {prompt, duration}" (video generation reference): the
        # shots play one after the other. INFERRED: the output lasts their sum.
        durations = [shot.get("duration") if isinstance(shot, Mapping) else None for shot in shots]
        if any(d is None for d in durations):
            raise CostUnknownError(
                f"{model} is billed per second of video, and a shot of multi_prompt has no "
                "duration",
                model=model,
                missing="multi_prompt[].duration",
            )
        values = [_amount(model, d, "multi_prompt[].duration") for d in durations]
        return sum(values, Decimal(0))
    value = _required(model, params, defaults, "duration", "video per second of output")
    return _amount(model, value, "duration")


def _amount(model: str, value: object, name: str) -> Decimal:
    try:
        seconds = to_decimal(value)
    except ValueError:
        seconds = Decimal(-1)
    if seconds <= 0:
        raise CostUnknownError(
            f"{model} is billed per second of video, and {name}={value!r} is not a number "
            "of seconds",
            model=model,
            missing=f"a number of seconds in {name}",
        )
    return seconds


def _per_video_second(
    model: str, pricing: ModelPricing, params: Mapping[str, Any], defaults: Mapping[str, Any]
) -> Decimal:
    seconds = _seconds(model, params, defaults)
    if _param(params, defaults, "generate_audio") is True:
        if pricing.cost_per_second_with_audio is None:
            raise CostUnknownError(
                f"{model} publishes no price for a second of video with audio "
                "(generate_audio=True)",
                model=model,
                missing="cost_per_second_with_audio",
            )
        return pricing.cost_per_second_with_audio * seconds
    by_resolution = pricing.cost_per_second_by_resolution
    resolution = _param(params, defaults, "resolution")
    if by_resolution and resolution is not None:
        price = by_resolution.get(str(resolution))
        if price is None:
            raise CostUnknownError(
                f"{model} publishes no per-second price for resolution {resolution!r} (it "
                f"prices: {', '.join(by_resolution)})",
                model=model,
                missing=f"cost_per_second_by_resolution[{str(resolution)!r}]",
            )
        return price * seconds
    if pricing.cost_per_second is None:
        priced = f" (it prices by resolution: {', '.join(by_resolution)})" if by_resolution else ""
        raise CostUnknownError(
            f"{model} is billed per second of video but publishes no cost_per_second for a "
            f"request without a resolution{priced}",
            model=model,
            missing="cost_per_second",
        )
    return pricing.cost_per_second * seconds
