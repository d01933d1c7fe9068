"""What every part of the ``AsyncClient`` facade shares: its core, its options, its budget.

The facade is one class, assembled from parts by concern (reading rows, saving results,
the blocking endpoints) so that no module grows past what a reader can hold; each part reads
the same three attributes, which ``AsyncClient.__init__`` (or ``with_options``) sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import httpx

    from ._core import ClientCore
    from ._generation import Generation, GenerationOwner
    from ._spend import SpendControl

__all__ = ["ClientParts", "Options"]


@dataclass(frozen=True, slots=True)
class Options:
    """The per-call defaults of a client or of one of its views (``with_options``)."""

    timeout: httpx.Timeout | None  # None: the session's own
    validate: bool
    deadline: float | None


class ClientParts:
    """The attributes every part of the facade reads."""

    _core: ClientCore
    _options: Options
    _spend: SpendControl

    def _validate(self, validate: bool | None) -> bool:
        return self._options.validate if validate is None else validate

    @property
    def _owner(self) -> GenerationOwner:
        # Every part is a part of AsyncClient, and the whole facade is what a Generation
        # delegates to (cancel, refresh, download).
        return cast("GenerationOwner", self)

    def _generation_done(self, generation: Generation) -> None:
        self._core.forget(generation)
