"""A batch's output as a dataset: ``OUT/metadata.jsonl`` and ``OUT/not_generated.jsonl``.

``OUT/metadata.jsonl`` follows the Hugging Face ImageFolder / VideoFolder layout, so
``datasets.load_dataset("imagefolder", data_dir=OUT)`` loads the images with their prompts.
One row per result file in ``OUT``, with the columns:

- ``file_name``: the file, relative to ``OUT``;
- ``prompt``, ``model``, and each parameter of the request as a column of its own
  (``resolution``, ``quality``...; a parameter named like one of these columns is listed as
  ``param_NAME``);
- ``generation_id``, ``status`` (``succeeded``), ``cost`` (the estimate from the model's
  published price, a number; ``null`` when unknown), ``line`` (its line in the prompts
  file, when the row was written).

The lines that made no file (failed, cancelled, error, ambiguous, or left unsent by
``--max-spend``) are not rows of the dataset: they are listed in ``OUT/not_generated.jsonl``
(``line``, ``prompt``, ``model``, parameters, ``status``, ``error``, ``generation_id``).

Both are written when a run ends (not when it is interrupted), from the manifest in the
same pass that compacts it, each to a temporary file renamed over the last: a reader never
sees half a file. `DatasetWriter` writes them.
"""

from __future__ import annotations

import contextlib
import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Final

from ._files import WriteFailedError, describe
from ._index import RequestIndex, key_number

__all__ = ["LEFT_OUT", "METADATA", "DatasetWriter"]

METADATA: Final = "metadata.jsonl"
LEFT_OUT: Final = "not_generated.jsonl"
_COLUMNS: Final = frozenset(
    {"file_name", "prompt", "model", "generation_id", "status", "cost", "line", "error"}
)


class DatasetWriter:
    """Writes ``metadata.jsonl`` and ``not_generated.jsonl`` into ``out`` (see the module).

    Args:
        out: The output directory.
        index: The run's index: a failed entry is listed only if its request is in the
            prompts file this run read (one removed from it since is no line of it).
        model: The batch's model, for entries written before they named their own.

    Raises:
        WriteFailedError: A file could not be written.
    """

    def __init__(self, out: Path, index: RequestIndex, *, model: str) -> None:
        self.out = out
        self.index = index
        self.model = model
        self.rows = 0
        """Rows of the dataset written."""
        self.left_out = 0
        """Lines listed in ``not_generated.jsonl``."""
        self._root = os.path.realpath(out)
        self._files: dict[str, tuple[Path, IO[bytes]]] = {}
        for name in (METADATA, LEFT_OUT):
            temporary = out / f".{name}.writing"
            try:
                self._files[name] = (temporary, temporary.open("wb"))
            except OSError as exc:
                self.discard()
                raise self._failed(exc) from exc

    def entry(self, entry: dict[str, Any]) -> None:
        """A manifest entry (the latest of its request): a row, a line left out, or neither
        (a request no longer in the prompts file, or still running)."""
        status = entry.get("status")
        relative = self._relative(entry.get("file")) if status == "succeeded" else None
        if relative is not None:
            row = {"file_name": relative, **self._request(entry)}
            row.update(
                generation_id=entry.get("generation_id"),
                status=status,
                cost=_number(entry.get("cost")),
                line=entry.get("line"),
            )
            self._write(METADATA, row)
            self.rows += 1
        elif status not in ("queued", None) and self.index.seen(key_number(entry["key"])):
            error = entry.get("error") if status != "succeeded" else "its file is missing"
            self.not_generated(
                line=entry.get("line"),
                request=self._request(entry),
                status=str(status),
                error=error,
                generation_id=entry.get("generation_id"),
            )

    def not_generated(
        self,
        *,
        line: object,
        request: dict[str, Any],
        status: str,
        error: object = None,
        generation_id: object = None,
    ) -> None:
        """A line that made no file."""
        row = {"line": line, **request, "status": status, "error": error}
        row["generation_id"] = generation_id
        self._write(LEFT_OUT, row)
        self.left_out += 1

    def request(self, model: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request's columns: ``prompt``, ``model``, then its parameters."""
        row: dict[str, Any] = {"prompt": params.get("prompt"), "model": model}
        for name, value in params.items():
            if name != "prompt":
                row[f"param_{name}" if name in _COLUMNS else name] = value
        return row

    def _request(self, entry: dict[str, Any]) -> dict[str, Any]:
        params = entry.get("params")
        params = dict(params) if isinstance(params, dict) else {}
        params.setdefault("prompt", entry.get("prompt"))
        model = entry.get("model")
        return self.request(model if isinstance(model, str) else self.model, params)

    def _relative(self, file: object) -> str | None:
        """A result file's name relative to ``out``, if it is there (in ``out``)."""
        if not isinstance(file, str):
            return None
        try:
            real = os.path.realpath(file)
            if not os.path.isfile(real):
                return None
            relative = os.path.relpath(real, self._root)
        except (OSError, ValueError):
            return None
        if relative.startswith(os.pardir) or os.path.isabs(relative):
            return None
        return relative.replace(os.sep, "/")

    def _write(self, name: str, row: dict[str, Any]) -> None:
        _, file = self._files[name]
        try:
            file.write(json.dumps(row, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
        except OSError as exc:
            raise self._failed(exc) from exc

    def commit(self) -> None:
        """Make both files durable and put them in place (each renamed over the last)."""
        try:
            for name, (temporary, file) in self._files.items():
                file.flush()
                os.fsync(file.fileno())
                file.close()
                os.replace(temporary, self.out / name)
        except OSError as exc:
            self.discard()
            raise self._failed(exc) from exc
        self._files.clear()

    def discard(self) -> None:
        """Drop what was written (an interrupted run leaves the last files as they were)."""
        for temporary, file in self._files.values():
            with contextlib.suppress(OSError):
                file.close()
            with contextlib.suppress(OSError):
                temporary.unlink()
        self._files.clear()

    def _failed(self, exc: OSError) -> WriteFailedError:
        return WriteFailedError(f"cannot write the dataset in {self.out}: {describe(exc)}")


def _number(cost: object) -> float | None:
    """A cost of the manifest (a decimal string) as the dataset's number."""
    if not isinstance(cost, str):
        return None
    try:
        return float(Decimal(cost))
    except (InvalidOperation, ValueError):
        return None
