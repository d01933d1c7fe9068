"""What a batch costs: estimates priced once per kind of request, the budget decided in file
order, the dry run's summary, and the run's estimated and charged totals (charged as the
history rows say).

Every amount here came through `oxen_queue._money.amount` (prices, charges,
``--max-spend``) or is an SDK estimate: sums are made in `oxen_queue._money.MONEY`,
exactly, and `money` prints any of them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
    "BudgetCursor",
    "BudgetPlan",
    "DryRun",
    "Estimate",
    "Pricer",
    "charged_costs",
    "estimate",
    "money",
    "parameter_set",
    "plan_budget",
    "totals",
]

_PLAIN_DIGITS: Final = 40  # the largest exponent printed in plain notation (estimates: 30)
_PAGE: Final = 1000  # the largest page the history serves
_HISTORY_ROWS: Final = 20 * _PAGE  # how far back to look for a run's generations
_PRICES_KEPT: Final = 10_000  # kinds of request whose estimate is remembered
_GROUPS_KEPT: Final = 1_000  # parameter sets the dry run tallies apart; past that, "others"
_GROUPS_SHOWN: Final = 20
_PROBLEMS_SHOWN: Final = 20


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


def parameter_set(params: dict[str, Any]) -> str:
    """A request's parameters but its prompt, as canonical JSON: what its price depends on."""
    return json.dumps(
        {name: value for name, value in params.items() if name != "prompt"},
        sort_keys=True,
        default=repr,
    )


class Pricer:
    """Prices requests through the client's ``estimate_cost``, each kind of request once.

    A price depends on no prompt; whether a request is refused does, but only through the
    prompt's length and whether it is blank (the checks the SDK makes of a prompt: not
    empty, not blank, a schema's ``minLength``/``maxLength``). So requests alike in model,
    other parameters, prompt length and blankness get the same answer, and a million lines
    of a few kinds cost a few hundred estimates. What is remembered is bounded
    (`_PRICES_KEPT` kinds; past that, forgotten and learnt again).
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._known: dict[tuple[str, str, int, bool], Estimate] = {}

    async def price(self, model: str, params: dict[str, Any], rest: str) -> Estimate:
        """The estimate of a request (``rest``: its `parameter_set`)."""
        prompt = params.get("prompt")
        text = prompt if isinstance(prompt, str) else ""
        kind = (model, rest, len(text), not text.strip())
        known = self._known.get(kind)
        if known is None:
            known = await estimate(self._client, model, params)
            if len(self._known) >= _PRICES_KEPT:
                self._known.clear()
            self._known[kind] = known
        return known


class BudgetCursor:
    """Which requests of a run fit a budget, decided one by one in file order.

    A run sends requests in order while their estimates fit; the first that does not, or
    that has no estimate (its price unknown: the budget cannot be kept past it), stops it:
    it and every request after it are left unsent for a later run. Requests with bad
    parameters cost nothing (they fail before anything is sent) and never stop it.

    Attributes:
        max_spend: The budget.
        spent: The estimates of the requests that fit.
        fitted: How many fit.
        left: How many are left unsent (the one that stopped the run included).
        stopped_by: The place of the request that stopped the run (its number in the
            batch and its line), and whether it had an estimate; ``None`` until one does.
    """

    __slots__ = ("fitted", "left", "max_spend", "spent", "stopped_by")

    def __init__(self, max_spend: Decimal) -> None:
        self.max_spend = max_spend
        self.spent = Decimal(0)
        self.fitted = 0
        self.left = 0
        self.stopped_by: tuple[int, int, bool] | None = None

    def take(self, one: Estimate, *, index: int = 0, line: int = 0) -> bool:
        """Whether the next request is sent (``index`` and ``line`` name it if it stops
        the run)."""
        if self.stopped_by is not None:
            self.left += 1
            return False
        if one.invalid:
            return True
        if one.amount is None or MONEY.add(self.spent, one.amount) > self.max_spend:
            self.stopped_by = (index, line, one.amount is not None)
            self.left += 1
            return False
        self.spent = MONEY.add(self.spent, one.amount)
        self.fitted += 1
        return True

    def line(self) -> str:
        """What the budget covers, in one line (the dry run's)."""
        covered = f"--max-spend {money(self.max_spend)} covers"
        if self.stopped_by is None:
            return f"{covered} every request ({money(self.spent)})"
        index, number, priced = self.stopped_by
        why = "would pass it" if priced else "has no estimate"
        return (
            f"{covered} {plural(self.fitted, 'request')} ({money(self.spent)}): "
            f"#{index} (line {number}) {why}, so the run stops there and {self.left} would be "
            "left unsent"
        )


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """Which requests fit a budget (`BudgetCursor`, all at once).

    Attributes:
        sent: For each request, whether the run sends it.
        spent: The estimates of the requests sent.
        stopped_by: The index of the request that stopped the run, if one did.
    """

    sent: list[bool]
    spent: Decimal
    stopped_by: int | None


def plan_budget(estimates: Sequence[Estimate], max_spend: Decimal) -> BudgetPlan:
    """Which requests fit ``max_spend``, in order (see `BudgetCursor`)."""
    cursor = BudgetCursor(max_spend)
    sent = [cursor.take(one, index=index) for index, one in enumerate(estimates)]
    stopped = cursor.stopped_by
    return BudgetPlan(sent, cursor.spent, None if stopped is None else stopped[0])


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


@dataclass(slots=True)
class _Group:
    shown: str
    count: int = 0
    amount: Decimal = Decimal(0)
    each: Decimal | None = None


@dataclass(slots=True)
class DryRun:
    """The dry run's tallies, kept as requests stream past: per model and parameter set,
    how many and what they cost; the total; what has no estimate; where a budget stops.

    Attributes:
        budget: The ``--max-spend`` cursor, if one was given.
    """

    budget: BudgetCursor | None = None
    requests: int = 0
    not_sent: int = 0
    unknown: int = 0
    invalid: int = 0
    amounts: list[Decimal] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _groups: dict[tuple[str, str], _Group] = field(default_factory=dict)
    _others: _Group = field(default_factory=lambda: _Group("others"))

    def add(self, *, number: int, model: str, rest: str, one: Estimate) -> bool:
        """Tally a request a run would send (``number``: its line); whether the budget
        covers it."""
        self.requests += 1
        index = self.requests
        group = self._groups.get((model, rest))
        if group is None:
            if len(self._groups) < _GROUPS_KEPT:
                group = self._groups[model, rest] = _Group(_listed(rest))
            else:
                group = self._others
        group.count += 1
        if one.amount is None:
            self.unknown += 1
            self.invalid += one.invalid
            if len(self.problems) < _PROBLEMS_SHOWN:
                self.problems.append(f"#{index} (line {number}): {one.problem}")
        else:
            group.amount = MONEY.add(group.amount, one.amount)
            group.each = one.amount if group.each is None else group.each
            if len(self.amounts) > 1000:  # summed now and then: exact, and bounded
                self.amounts = [total(self.amounts)]
            self.amounts.append(one.amount)
        return self.budget is None or self.budget.take(one, index=index, line=number)

    def report(self, console: Console) -> int:
        """Print the summary; the exit status: 2 when a request has parameters the client
        refuses (a run would have it refused, a usage error), 1 when another has no estimate
        (a price unknown), else 0."""
        table = Table(show_edge=False, header_style="bold")
        table.add_column("model", no_wrap=True)
        table.add_column("parameters", overflow="fold")
        table.add_column("requests", justify="right", no_wrap=True)
        table.add_column("each", justify="right", no_wrap=True)
        table.add_column("estimate", justify="right", no_wrap=True)
        ranked = sorted(self._groups.items(), key=lambda item: -item[1].count)
        for (model, _), group in ranked[:_GROUPS_SHOWN]:
            each = money(group.each) if group.each is not None else "unknown"
            table.add_row(
                shown(model),
                shown(group.shown),
                f"{group.count:,}",
                shown(each),
                shown(money(group.amount)),
            )
        rest = [group for _, group in ranked[_GROUPS_SHOWN:]]
        if self._others.count:
            rest.append(self._others)
        if rest:
            count = sum(group.count for group in rest)
            amount = total([group.amount for group in rest])
            sets = "more parameter sets" if self._others.count else plural(len(rest), "more set")
            table.add_row("", f"... {sets}", f"{count:,}", "", money(amount))
        if self.requests:
            console.print(table)
        for problem in self.problems:  # below the table: a long reason would squeeze it
            console.print(problem, style="red")
        if self.unknown > len(self.problems):
            more = self.unknown - len(self.problems)
            console.print(
                f"... and {plural(more, 'more request')} without an estimate (--json lists each)",
                style="red",
            )
        line = (
            f"estimated total: {money(total(self.amounts))} for "
            f"{plural(self.requests - self.unknown, 'request')}"
        )
        if self.unknown:
            line += f"; {plural(self.unknown, 'request')} without an estimate"
        console.print(line)
        if self.not_sent:
            console.print(
                f"{plural(self.not_sent, 'request')} done or enqueued in an earlier run: "
                "not counted"
            )
        if self.budget is not None:
            console.print(self.budget.line())
        console.print("dry run: nothing was sent")
        return 2 if self.invalid else 1 if self.unknown else 0


def _listed(rest: str) -> str:
    """A parameter set as the summary lists it: ``quality=low resolution=1024x1024``."""
    params = json.loads(rest)
    listed = " ".join(
        f"{name}={value if isinstance(value, str) else json.dumps(value)}"
        for name, value in params.items()
    )
    return listed or "-"


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
