"""What a request will cost, from the pricing a model publishes: pure, no HTTP.

A model's details (``GET /api/ai/models/{id}``) carry ``pricing`` in the spec's shape:
``method`` (``per_image``, ``per_video_output_second``, ``token``, ``time``) and the amounts
that method uses. `estimate_cost` applies it to a request's parameters:

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
Whatever cannot be resolved raises [`CostUnknownError`][oxen_queue.CostUnknownError] naming what is
missing: an estimate is never a guess, and never zero for want of a price. A price the model
publishes but the client refused (negative, ``NaN``, out of range: see `_money`) is missing too,
named as ``ModelPricing.refused`` names it; the model's other prices still work.

Arithmetic is done in `_money.MONEY`, exactly: a price times seconds is rounded up to
18 places (no realistic estimate has more), then times the number of generations, at most
`_money.MAX_COUNT` (more is ``InvalidParamsError``, naming ``num_generations``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ._exceptions import CostUnknownError, InvalidParamsError
from ._money import MAX_AMOUNT, MAX_COUNT, MONEY, AmountError, amount, brief, round_up, total

if TYPE_CHECKING:
    from ._models import ModelPricing

__all__ = ["check_priced_count", "estimate_cost", "schema_defaults"]


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
        InvalidParamsError: ``count`` is above `_money.MAX_COUNT`.
    """
    check_priced_count(count)
    return MONEY.multiply(_unit_price(model, pricing, params, defaults or {}), count)


def check_priced_count(count: int) -> None:
    """Refuse to price more generations at once than `_money.MAX_COUNT` (a million):
    the bound that keeps every estimate, and so the budget's sums, exact.

    Raises:
        InvalidParamsError: Naming ``num_generations``.
    """
    if count > MAX_COUNT:
        raise InvalidParamsError(
            f"num_generations={brief(count)} is more than one request can be priced for (at most "
            f"{MAX_COUNT:,})",
            field="num_generations",
        )


def _refused(model: str, pricing: ModelPricing, *names: str) -> None:
    """Raise for the first of ``names`` the client refused, if any (the price is unknown)."""
    for name in names:
        why = pricing.refused.get(name)
        if why is not None:
            raise CostUnknownError(
                f"{model} publishes a {name} this client cannot use ({why}), so the cost "
                "cannot be estimated",
                model=model,
                missing=name,
            )


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
    # A grid the client refused (in whole or in part) still prices the model: its images are
    # not priced by cost_per_image instead.
    if grid or any(name.startswith(_GRID) for name in pricing.refused):
        why = "images by quality and resolution"
        quality = str(_required(model, params, defaults, "quality", why))
        resolution = str(_required(model, params, defaults, "resolution", why))
        row = (grid or {}).get(quality)
        if row is None:
            _refused(model, pricing, _GRID, f"{_GRID}[{quality!r}]")
            raise CostUnknownError(
                f"{model}'s price grid has no quality {quality!r} (it prices: "
                f"{', '.join(grid or ())})",
                model=model,
                missing=f"{_GRID}[{quality!r}]",
            )
        price = row.get(resolution)
        if price is None:
            _refused(model, pricing, f"{_GRID}[{quality!r}][{resolution!r}]")
            raise CostUnknownError(
                f"{model}'s price grid has no resolution {resolution!r} at quality "
                f"{quality!r} (it prices: {', '.join(row)})",
                model=model,
                missing=f"{_GRID}[{quality!r}][{resolution!r}]",
            )
        return price
    if pricing.cost_per_image is None:
        _refused(model, pricing, "cost_per_image")
        raise CostUnknownError(
            f"{model} is billed per image but publishes no cost_per_image",
            model=model,
            missing="cost_per_image",
        )
    return pricing.cost_per_image


_GRID: Final = "cost_per_image_grid"
_BY_RESOLUTION: Final = "cost_per_second_by_resolution"


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
        seconds = total(_amount(model, d, "multi_prompt[].duration") for d in durations)
        if seconds > MAX_AMOUNT:
            raise CostUnknownError(
                f"{model} is billed per second of video, and the shots of multi_prompt last "
                f"more than 10**12 seconds in all ({len(durations)} shots)",
                model=model,
                missing="a number of seconds in multi_prompt[].duration",
            )
        return seconds
    value = _required(model, params, defaults, "duration", "video per second of output")
    return _amount(model, value, "duration")


def _amount(model: str, value: object, name: str) -> Decimal:
    """A number of seconds: an amount (`_money.amount`) above zero."""
    try:
        seconds = amount(value)
    except AmountError:
        seconds = Decimal(0)
    if seconds <= 0:
        raise CostUnknownError(
            f"{model} is billed per second of video, and {name}={brief(value)} is not a "
            "number of seconds",
            model=model,
            missing=f"a number of seconds in {name}",
        )
    return seconds


def _per_second(price: Decimal, seconds: Decimal) -> Decimal:
    return round_up(MONEY.multiply(price, seconds))


def _per_video_second(
    model: str, pricing: ModelPricing, params: Mapping[str, Any], defaults: Mapping[str, Any]
) -> Decimal:
    seconds = _seconds(model, params, defaults)
    if _param(params, defaults, "generate_audio") is True:
        if pricing.cost_per_second_with_audio is None:
            _refused(model, pricing, "cost_per_second_with_audio")
            raise CostUnknownError(
                f"{model} publishes no price for a second of video with audio "
                "(generate_audio=True)",
                model=model,
                missing="cost_per_second_with_audio",
            )
        return _per_second(pricing.cost_per_second_with_audio, seconds)
    by_resolution = pricing.cost_per_second_by_resolution
    resolution = _param(params, defaults, "resolution")
    # A table the client refused (in whole or in part) still prices by resolution.
    priced_apart = by_resolution or any(name.startswith(_BY_RESOLUTION) for name in pricing.refused)
    if priced_apart and resolution is not None:
        key = str(resolution)
        price = (by_resolution or {}).get(key)
        if price is None:
            _refused(model, pricing, _BY_RESOLUTION, f"{_BY_RESOLUTION}[{key!r}]")
            raise CostUnknownError(
                f"{model} publishes no per-second price for resolution {resolution!r} (it "
                f"prices: {', '.join(by_resolution or ())})",
                model=model,
                missing=f"{_BY_RESOLUTION}[{key!r}]",
            )
        return _per_second(price, seconds)
    if pricing.cost_per_second is None:
        _refused(model, pricing, "cost_per_second")
        priced = f" (it prices by resolution: {', '.join(by_resolution)})" if by_resolution else ""
        raise CostUnknownError(
            f"{model} is billed per second of video but publishes no cost_per_second for a "
            f"request without a resolution{priced}",
            model=model,
            missing="cost_per_second",
        )
    return _per_second(pricing.cost_per_second, seconds)
