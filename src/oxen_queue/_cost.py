"""What a request will cost, from the pricing a model publishes: pure, no HTTP.

By the ``pricing.method``: ``per_image``, the ``cost_per_image_grid`` cell for the request's
``quality``, then ``resolution`` ("Cost per image keyed by quality then resolution tier"), or
without a grid ``cost_per_image``; ``per_video_output_second``, seconds of output (``duration``,
or the sum of a ``multi_prompt``'s shot durations) times ``cost_per_second_with_audio`` with
``generate_audio``, ``cost_per_second_by_resolution`` for a ``resolution`` the model prices
apart, else ``cost_per_second``, rounded up to 18 places; ``token`` and ``time``, no estimate.
What cannot be resolved, a refused price included, raises ``CostUnknownError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ._exceptions import CostUnknownError, InvalidParamsError
from ._money import MAX_AMOUNT, MAX_COUNT, MONEY, AmountError, amount, brief, round_up, total

if TYPE_CHECKING:
    from ._models import ModelPricing

_GRID: Final = "cost_per_image_grid"
_BY_RESOLUTION: Final = "cost_per_second_by_resolution"


def schema_defaults(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``default`` of each property of a model's published parameter schema."""
    properties = (schema or {}).get("properties")
    return {
        name: spec["default"]
        for name, spec in (properties.items() if isinstance(properties, Mapping) else ())
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
    """The cost of ``count`` generations of one request by the model's ``pricing`` (``None``
    when it publishes none), a parameter the request leaves out at its value in ``defaults``.
    ``CostUnknownError`` when it cannot be worked out (``.missing`` says what is missing)."""
    check_priced_count(count)
    if pricing is None or pricing.method is None:
        raise CostUnknownError(
            f"{model} publishes no pricing, so its cost cannot be estimated",
            model=model,
            missing="pricing",
        )
    request = _Request(model, pricing, params, defaults or {})
    return MONEY.multiply(request.unit_price(), count)


def check_priced_count(count: int) -> None:
    """Refuse (``InvalidParamsError`` naming ``num_generations``) to price more generations at
    once than `_money.MAX_COUNT`: the bound that keeps every estimate, and the budget, exact."""
    if count > MAX_COUNT:
        raise InvalidParamsError(
            f"num_generations={brief(count)} is more than one request can be priced for (at most "
            f"{MAX_COUNT:,})",
            field="num_generations",
        )


@dataclass(frozen=True, slots=True)
class _Request:
    model: str
    pricing: ModelPricing
    params: Mapping[str, Any]
    defaults: Mapping[str, Any]

    def get(self, name: str) -> Any:
        value = self.params.get(name)
        return self.defaults.get(name) if value is None else value

    def require(self, name: str, why: str) -> Any:
        value = self.get(name)
        if value is None:
            raise self.unknown(
                name,
                f" prices {why}, and the request gives no {name} (nor does the model publish a "
                "default for it)",
            )
        return value

    def unknown(self, missing: str, message: str, table: str = "") -> CostUnknownError:
        """The model's name and ``message``, naming ``missing``, or the refusal of that price
        (or of its ``table``)."""
        refused = [name for name in (table, missing) if name in self.pricing.refused]
        if refused:
            missing, why = refused[0], self.pricing.refused[refused[0]]
            message = f" publishes a {missing} this client cannot use ({why}), so the cost "
            message += "cannot be estimated"
        return CostUnknownError(f"{self.model}{message}", model=self.model, missing=missing)

    def unit_price(self) -> Decimal:
        method = self.pricing.method
        if method == "per_image":
            return self.per_image()
        if method == "per_video_output_second":
            return round_up(MONEY.multiply(self.seconds(), self.per_second()))
        if method in ("token", "time"):
            what = "tokens" if method == "token" else "run time"
            raise self.unknown(
                what,
                f" is billed by {method}: its cost depends on the {what} the job uses, which is "
                "not known before it runs",
            )
        raise self.unknown(
            f"a known pricing method (got {method!r})",
            f" is billed by {method!r}, a pricing method this client cannot estimate",
        )

    def per_image(self) -> Decimal:
        grid = self.pricing.cost_per_image_grid
        # A grid the client refused (in whole or in part) still prices the model: its images
        # are not priced by cost_per_image instead.
        if not grid and not any(name.startswith(_GRID) for name in self.pricing.refused):
            if self.pricing.cost_per_image is None:
                raise self.unknown(
                    "cost_per_image", " is billed per image but publishes no cost_per_image"
                )
            return self.pricing.cost_per_image
        why = "images by quality and resolution"
        quality, resolution = (
            str(self.require("quality", why)),
            str(self.require("resolution", why)),
        )
        row = (grid or {}).get(quality)
        if row is None:
            listed = ", ".join(grid or ())
            raise self.unknown(
                f"{_GRID}[{quality!r}]",
                f"'s price grid has no quality {quality!r} (it prices: {listed})",
                _GRID,
            )
        price = row.get(resolution)
        if price is None:
            raise self.unknown(
                f"{_GRID}[{quality!r}][{resolution!r}]",
                f"'s price grid has no resolution {resolution!r} at quality {quality!r} (it "
                f"prices: {', '.join(row)})",
            )
        return price

    def seconds(self) -> Decimal:
        """Seconds of output: ``duration``, or the sum of a multi-shot request's durations."""
        shots = self.params.get("multi_prompt")
        if self.params.get("duration") is not None or not isinstance(shots, list) or not shots:
            return self.duration(self.require("duration", "video per second of output"), "duration")
        # "multi_prompt = array of {prompt, duration}" (video generation reference): the shots
        # play one after the other. INFERRED: the output lasts their sum.
        durations = [shot.get("duration") if isinstance(shot, Mapping) else None for shot in shots]
        if None in durations:
            raise self.unknown(
                "multi_prompt[].duration",
                " is billed per second of video, and a shot of multi_prompt has no duration",
            )
        seconds = total(self.duration(d, "multi_prompt[].duration") for d in durations)
        if seconds > MAX_AMOUNT:
            raise self.unknown(
                "a number of seconds in multi_prompt[].duration",
                " is billed per second of video, and the shots of multi_prompt last more than "
                f"10**12 seconds in all ({len(durations)} shots)",
            )
        return seconds

    def duration(self, value: object, name: str) -> Decimal:
        """A number of seconds: an amount (`_money.amount`) above zero."""
        try:
            seconds = amount(value)
        except AmountError:
            seconds = Decimal(0)
        if seconds <= 0:
            raise self.unknown(
                f"a number of seconds in {name}",
                f" is billed per second of video, and {name}={brief(value)} is not a number of "
                "seconds",
            )
        return seconds

    def per_second(self) -> Decimal:
        """The price of a second of output video."""
        pricing = self.pricing
        by_resolution = pricing.cost_per_second_by_resolution
        resolution = self.get("resolution")
        if self.get("generate_audio") is True:
            price = pricing.cost_per_second_with_audio
            if price is None:
                raise self.unknown(
                    "cost_per_second_with_audio",
                    " publishes no price for a second of video with audio (generate_audio=True)",
                )
        # A table the client refused (in whole or in part) still prices by resolution.
        elif resolution is not None and (
            by_resolution or any(name.startswith(_BY_RESOLUTION) for name in pricing.refused)
        ):
            key = str(resolution)
            price = (by_resolution or {}).get(key)
            if price is None:
                raise self.unknown(
                    f"{_BY_RESOLUTION}[{key!r}]",
                    f" publishes no per-second price for resolution {resolution!r} (it prices: "
                    f"{', '.join(by_resolution or ())})",
                    _BY_RESOLUTION,
                )
        else:
            price = pricing.cost_per_second
            if price is None:
                listed = ", ".join(by_resolution or ())
                listed = f" (it prices by resolution: {listed})" if listed else ""
                raise self.unknown(
                    "cost_per_second",
                    " is billed per second of video but publishes no cost_per_second for a "
                    f"request without a resolution{listed}",
                )
        return price
