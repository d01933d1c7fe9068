"""Saving and reading results: a part of the ``AsyncClient`` facade (see ``_parts.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from ._exceptions import DownloadError
from ._generation import Generation
from ._models import GenerationRecord
from ._rows import RowOperations

__all__ = ["ResultOperations"]


class ResultOperations(RowOperations):
    """The client's operations on result files (a record, a generation or an id)."""

    # -- results ------------------------------------------------------------------------

    async def download(
        self,
        source: Generation | GenerationRecord | str,
        path: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Save a generation's result file and return its path.

        Args:
            source: A finished record, a Generation or a generation id (waited for first).
            path: A file path, or a directory (also any path ending with ``/``, created if
                need be) where the file is named after the generation id with the extension
                its bytes show, or ``None`` for the current directory. The server never names
                the file. A name made from an id is the id itself when it is a plain
                lowercase id (a UUID: ``<uuid>.png``); any other id is cleaned and given a
                short hash of itself (``ab~<16 hex>.png`` for ``a/b``), so two generations
                never share a file and no name is a Windows device name.

        Raises:
            DownloadError: No result URL, a bad one, the file host refused, the transfer
                stalled, the file is too large, or the body is not the media the generation
                asked for (empty, text such as an HTML error page, or a video for an image):
                then no file is left behind.
            GenerationError: The generation did not succeed (when given one to wait for).
        """
        record = await self._finished(source)
        return await self._core.files.save(
            self._result_url(record),
            generation_id=record.generation_id,
            media_type=record.media_type,
            path=path,
        )

    async def read(self, source: Generation | GenerationRecord | str) -> bytes:
        """A generation's result file, in memory, within the same bounds and by the same rule
        (the media the generation asked for) as :meth:`download`.

        Raises:
            DownloadError: As for :meth:`download`.
            GenerationError: The generation did not succeed (when given one to wait for).
        """
        record = await self._finished(source)
        return await self._core.files.read(
            self._result_url(record),
            generation_id=record.generation_id,
            media_type=record.media_type,
        )

    async def _finished(self, source: Generation | GenerationRecord | str) -> GenerationRecord:
        self._core.require_open()
        if isinstance(source, GenerationRecord):
            return source
        generation = self.generation(source) if isinstance(source, str) else source
        return await generation

    @staticmethod
    def _result_url(record: GenerationRecord) -> str:
        if not record.result_url:
            raise DownloadError(
                f"generation {record.generation_id} has no result_url (status {record.status!r})"
            )
        return record.result_url
