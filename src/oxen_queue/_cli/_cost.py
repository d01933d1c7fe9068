"""What a batch costs: the dry run's table of estimates, and the summary's estimated and
charged totals (charged as the history rows say).

Every amount here came through :func:`oxen_queue._money.amount` (prices, charges,
``--max-spend``) or is an SDK estimate: sums are made in :data:`oxen_queue._money.MONEY`,
exactly, and :func:`money` prints any of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from rich.table import Table

from .._exceptions import InvalidParamsError, OxenError
from .._money import MONEY, total
from ._display import plural
from ._shown import shown

if TYPE_CHECKING:
    from rich.console import Console

    from .._client import AsyncClient

__all__ = [
    "BudgetPlan",
    "Estimate",
    "Row",
    "charged_costs",
    "dry_run_report",
    "estimate",
    "money",
    "plan_budget",
    "totals",
]

_PLAIN_DIGITS: Final = 40  # the largest exponent printed in plain notation (estimates: 30)
_PAGE: Final = 1000  # the largest page the history serves
_HISTORY_ROWS: Final = 20 * _PAGE  # how far back to look for a run's generations
_SHOWN_PARAMS: Final = (
    "resolution",
    "quality",
    "output_format",
    "duration",
    "aspect_ratio",
    "generate_audio",
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """One request's estimated cost, or why there is none.

    Attributes:
        amount: The estimate; ``None`` when there is none.
        problem: Why there is none.
        invalid: The request has bad parameters: it fails before it is sent, costing nothing.
    """

    amount: Decimal | None
    problem: str | None = None
    invalid: bool = False


Row = tuple[tuple[int, int], str, dict[str, Any], Estimate]
"""A dry run's request: (its number in the batch, its line in the file), model, parameters,
estimate."""


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """Which requests of a run fit a budget, in file order.

    A run sends requests in order while their estimates fit; the first that does not, or
    that has no estimate (its price unknown: the budget cannot be kept past it), stops it:
    it and every request after it are left unsent for a later run. Requests with bad
    parameters cost nothing (they fail before anything is sent) and never stop it.

    Attributes:
        sent: For each request, whether the run sends it.
        spent: The estimates of the requests sent.
        stopped_by: The index of the request that stopped the run, if one did.
    """

    sent: list[bool]
    spent: Decimal
    stopped_by: int | None


def plan_budget(estimates: Sequence[Estimate], max_spend: Decimal) -> BudgetPlan:
    """Which requests fit ``max_spend``, in order (see :class:`BudgetPlan`)."""
    sent: list[bool] = []
    spent = Decimal(0)
    stopped_by: int | None = None
    for index, one in enumerate(estimates):
        if stopped_by is not None:
            sent.append(False)
        elif one.invalid:
            sent.append(True)
        elif one.amount is None or MONEY.add(spent, one.amount) > max_spend:
            stopped_by = index
            sent.append(False)
        else:
            spent = MONEY.add(spent, one.amount)
            sent.append(True)
    return BudgetPlan(sent, spent, stopped_by)


def money(amount: Decimal) -> str:
    """An amount in plain notation (``0.28``, never ``2.8E-1``).

    Total: every amount the SDK accepts or estimates prints in at most about 50 characters;
    anything else (which none of its amounts are) prints as ``str`` does, never at a length
    set by its exponent, and never raises.
    """
    if amount.is_finite() and -_PLAIN_DIGITS <= amount.adjusted() <= _PLAIN_DIGITS:
        return format(amount, "f")
    return str(amount)


async def estimate(client: AsyncClient, model: str, params: dict[str, Any]) -> Estimate:
    """A request's estimate; a bad parameter or an unknown price is the reason instead."""
    try:
        return Estimate(await client.estimate_cost(model, **params))
    except InvalidParamsError as exc:
        return Estimate(None, str(exc), invalid=True)
    except OxenError as exc:  # CostUnknownError, the API's refusal
        return Estimate(None, str(exc))


def totals(estimates: Iterable[Estimate]) -> tuple[Decimal, int]:
    """The sum of the known estimates, and how many are unknown."""
    known: list[Decimal] = []
    unknown = 0
    for one in estimates:
        if one.amount is None:
            unknown += 1
        else:
            known.append(one.amount)
    return total(known), unknown


def dry_run_report(
    console: Console,
    rows: Sequence[Row],
    *,
    not_sent: int,
    max_spend: Decimal | None,
) -> None:
    """The dry run's table (one row per request that a run would send) and its totals.

    Args:
        console: Where to print.
        rows: Each request's place, model, parameters and estimate.
        not_sent: Requests a run would not send (done, or enqueued, in an earlier run).
        max_spend: The budget given, to say where it would stop the run.
    """
    table = Table(show_edge=False, header_style="bold")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("prompt", no_wrap=True, overflow="ellipsis", max_width=34)
    table.add_column("model", no_wrap=True)
    table.add_column("parameters", overflow="fold")
    table.add_column("estimate", justify="right", no_wrap=True)
    problems: list[str] = []
    for (index, number), model, params, one in rows:
        listed = " ".join(f"{k}={params[k]}" for k in _SHOWN_PARAMS if k in params)
        cost = shown(money(one.amount)) if one.amount is not None else shown("unknown", "red")
        prompt = str(params.get("prompt", ""))
        table.add_row(str(index), str(number), prompt, model, listed or "-", cost)
        if one.amount is None:
            problems.append(f"#{index} (line {number}): {one.problem}")
    console.print(table)
    for problem in problems:  # below the table: a long reason would squeeze its columns
        console.print(problem, style="red")
    estimated, unknown = totals(one for *_, one in rows)
    line = f"estimated total: {money(estimated)} for {plural(len(rows) - unknown, 'request')}"
    if unknown:
        line += f"; {plural(unknown, 'request')} without an estimate"
    console.print(line)
    if not_sent:
        console.print(
            f"{plural(not_sent, 'request')} done or enqueued in an earlier run: not counted"
        )
    if max_spend is not None:
        console.print(_budget_line(max_spend, rows))
    console.print("dry run: nothing was sent")


def _budget_line(max_spend: Decimal, rows: Sequence[Row]) -> str:
    budget = plan_budget([one for *_, one in rows], max_spend)
    covered = f"--max-spend {money(max_spend)} covers"
    if budget.stopped_by is None:
        return f"{covered} every request ({money(budget.spent)})"
    (index, number), _, _, stopper = rows[budget.stopped_by]
    why = "has no estimate" if stopper.amount is None else "would pass it"
    left = budget.sent.count(False)
    return (
        f"{covered} {plural(budget.sent.count(True), 'request')} ({money(budget.spent)}): "
        f"#{index} (line {number}) {why}, so the run stops there and {left} would be left "
        "unsent"
    )


async def charged_costs(
    client: AsyncClient, generation_ids: set[str], models: set[str]
) -> dict[str, Decimal | None]:
    """What each generation was charged, read from the history (``None``: not charged yet).

    Newest rows come first on the emulator (the spec does not say the order): a run's rows
    are on the first pages. At most 20 pages of 1,000 rows are read; rows not found are
    left out of the answer.
    """
    found: dict[str, Decimal | None] = {}
    if not generation_ids:
        return found
    only = next(iter(models)) if len(models) == 1 else None
    try:
        seen = 0
        async for record in client.iter_generations(model=only, page_size=_PAGE):
            if record.generation_id in generation_ids:
                found[record.generation_id] = record.cost
                if len(found) == len(generation_ids):
                    break
            seen += 1
            if seen >= _HISTORY_ROWS:
                break
    except OxenError:
        pass  # the summary says what it could not find
    return found
