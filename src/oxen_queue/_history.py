"""Paging through history (``GET /api/ai/generations``): an async iterator of rows."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import GenerationPage, GenerationRecord


class GenerationHistory:
    """The rows of the history, page after page: ``async for record in history``.

    Made by [`AsyncClient.iter_generations`][oxen_queue.AsyncClient.iter_generations]. Each page is
    fetched when the rows before it have been consumed, so breaking out early costs no further
    request. A row seen on an earlier page (rows shift while new ones arrive) is not yielded twice.

    Attributes:
        total_cost: What the whole filtered set was charged, as the last page read says
            (``None`` before the first page, and when nothing in it has been charged).
        total_entries: Rows in the whole filtered set (``None`` before the first page).
        total_pages: Pages in all at this page size (``None`` before the first page).
        pages_read: Pages fetched so far.
    """

    def __init__(
        self,
        fetch: Callable[[int], Awaitable[GenerationPage]],
        *,
        observe: Callable[[Iterable[GenerationRecord]], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._observe = observe
        self._rows: deque[GenerationRecord] = deque()
        self._seen: set[str] = set()
        self._done = False
        self.pages_read = 0
        self.total_cost: Decimal | None = None
        self.total_entries: int | None = None
        self.total_pages: int | None = None

    def __repr__(self) -> str:
        return (
            f"<GenerationHistory pages_read={self.pages_read} "
            f"total_entries={self.total_entries} total_cost={self.total_cost}>"
        )

    def __aiter__(self) -> GenerationHistory:
        return self

    async def __anext__(self) -> GenerationRecord:
        while not self._rows:
            if self._done:
                raise StopAsyncIteration
            page = await self._fetch(self.pages_read + 1)
            self.pages_read += 1
            self.total_cost = page.total_cost
            self.total_entries = page.total_entries
            self.total_pages = page.total_pages
            for record in page.generations:
                if record.generation_id not in self._seen:
                    self._seen.add(record.generation_id)
                    self._rows.append(record)
            if self._observe is not None:
                self._observe(page.generations)
            self._done = not page.generations or self.pages_read >= page.total_pages
        return self._rows.popleft()
