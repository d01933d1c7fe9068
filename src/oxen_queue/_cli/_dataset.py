"""A batch's output as a dataset: ``OUT/metadata.jsonl`` (or ``OUT/metadata.parquet``) and
``OUT/not_generated.jsonl``.

``OUT/metadata.jsonl`` follows the Hugging Face ImageFolder / VideoFolder layout, so
``datasets.load_dataset("imagefolder", data_dir=OUT)`` loads the images with their prompts.
One row per result file in ``OUT``, with the columns:

- ``file_name``: the file, relative to ``OUT``;
- ``prompt``, ``model``, and each parameter of the request as a column of its own
  (``resolution``, ``quality``...; a parameter named like one of these columns, or whose
  name starts with ``param_``, is listed as ``param_NAME``: no two share a column);
- ``generation_id``, ``status`` (``succeeded``), ``cost`` (the estimate from the model's
  published price, a number; ``null`` when unknown), ``line`` (its line in the prompts
  file, when the row was written).

The lines that made no file (failed, cancelled, error, ambiguous, or left unsent by
``--max-spend``) are not rows of the dataset: they are listed in ``OUT/not_generated.jsonl``
(``line``, ``prompt``, ``model``, parameters, ``status``, ``error``, ``generation_id``).

Both are written when a run ends (not when it is interrupted), from the manifest in the
same pass that compacts it, each to a temporary file renamed over the last: a reader never
sees half a file. `DatasetWriter` writes them.

With ``--metadata parquet`` the rows go to ``OUT/metadata.parquet`` instead: the same rows
and columns, typed by what each holds (`_schema`), written with pyarrow (the ``parquet``
extra, imported only then: `import_pyarrow`). A folder with
metadata files of two kinds is refused by ``datasets``, so the run that writes one kind
removes the other kind's file (after the new one is in place).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Final, Literal

from ._files import WriteFailedError, describe
from ._index import RequestIndex, key_number
from ._shared import MissingExtraError

__all__ = [
    "LEFT_OUT",
    "METADATA",
    "METADATA_FORMATS",
    "PARQUET_EXTRA_HINT",
    "DatasetWriter",
    "MetadataFormat",
    "import_pyarrow",
]

MetadataFormat = Literal["jsonl", "parquet"]
METADATA_FORMATS: Final[tuple[MetadataFormat, ...]] = ("jsonl", "parquet")
METADATA: Final = "metadata.jsonl"
LEFT_OUT: Final = "not_generated.jsonl"
_METADATA_FILES: Final[dict[MetadataFormat, str]] = {
    "jsonl": METADATA,
    "parquet": "metadata.parquet",
}
_TYPED: Final = {"cost": "float64", "line": "int64"}
"""The pyarrow types of ``metadata.parquet``'s columns that keep theirs when null in every row."""
PARQUET_EXTRA_HINT: Final = "pip install 'oxen-queue[parquet]'"
ROW_GROUP: Final = 4096
"""Rows per row group of ``metadata.parquet``: what the conversion holds in memory at once."""
_COLUMNS: Final = frozenset(
    {"file_name", "prompt", "model", "generation_id", "status", "cost", "line", "error"}
)


class DatasetWriter:
    """Writes the metadata file and ``not_generated.jsonl`` into ``out`` (see the module).

    The rows are written as JSON lines, to a temporary file, in either format. For
    ``metadata="parquet"`` that file is converted when the run commits: a Parquet file
    states its schema before its rows, and the columns (the union of every row's
    parameters) and their types are known only once the last row is written. So the rows
    are streamed out as JSON lines, their columns' kinds noted as they go, then read back
    `ROW_GROUP` at a time, each batch a row group of the Parquet file: memory stays bounded
    as it is for JSON lines (the disk holds the rows twice during the conversion).

    Args:
        out: The output directory.
        index: The run's index: a failed entry is listed only if its request is in the
            prompts file this run read (one removed from it since is no line of it).
        model: The batch's model, for entries written before they named their own.
        metadata: The metadata file's format: ``jsonl`` or ``parquet``.

    Raises:
        WriteFailedError: A file could not be written.
        MissingExtraError: ``parquet`` where pyarrow cannot be imported.
    """

    def __init__(
        self, out: Path, index: RequestIndex, *, model: str, metadata: MetadataFormat = "jsonl"
    ) -> None:
        self.out = out
        self.index = index
        self.model = model
        self.metadata = out / _METADATA_FILES[metadata]
        """The metadata file: ``metadata.jsonl`` or ``metadata.parquet``."""
        self.rows = 0
        """Rows of the dataset written."""
        self.left_out = 0
        """Lines listed in ``not_generated.jsonl``."""
        self._root = os.path.realpath(out)
        self._arrow = import_pyarrow() if metadata == "parquet" else None
        self._kinds: dict[str, set[type]] = {}
        """Each column's kinds of value so far (``metadata.parquet``'s schema)."""
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
        """A request's columns: ``prompt``, ``model``, then its parameters (``param_NAME``
        for a name of the dataset's columns or one starting with ``param_``, so that
        ``cost`` and ``param_cost`` are two columns)."""
        row: dict[str, Any] = {"prompt": params.get("prompt"), "model": model}
        for name, value in params.items():
            if name != "prompt":
                renamed = name in _COLUMNS or name.startswith("param_")
                row[f"param_{name}" if renamed else name] = value
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
        if name == METADATA and self._arrow is not None:
            for column, value in row.items():
                self._kinds.setdefault(column, set()).add(_kind(value))

    def commit(self) -> None:
        """Make both files durable and put them in place (each renamed over the last). The
        metadata file of the other format, if an earlier run left one, is removed as soon as
        this one is in place: a folder is never left with two (``datasets`` refuses it)."""
        try:
            for name, (temporary, file) in self._files.items():
                file.flush()
                target = self.out / name
                if name == METADATA and self._arrow is not None:
                    file.close()  # rows to convert: they need not outlive a crash
                    temporary, target = self._to_parquet(temporary), self.metadata
                else:
                    os.fsync(file.fileno())
                    file.close()
                os.replace(temporary, target)
                if target == self.metadata:
                    for other in _METADATA_FILES.values():
                        if other != target.name:
                            with contextlib.suppress(FileNotFoundError):
                                (self.out / other).unlink()
        except OSError as exc:
            self.discard()
            raise self._failed(exc) from exc
        except Exception as exc:
            # pyarrow's own refusals (ArrowInvalid, ArrowTypeError...): none is known to
            # happen (the schema follows the values seen), but one must not reach the user
            # as a traceback. The JSON lines are kept beside the run, as metadata.jsonl.
            if self._arrow is None or not isinstance(exc, self._arrow[0].ArrowException):
                raise
            self._keep_rows()
            self.discard()
            raise WriteFailedError(
                f"cannot convert the dataset's rows to {self.metadata.name} ({exc}); they are "
                f"in {self.out / METADATA} as JSON lines"
            ) from exc
        self._files.clear()

    def _keep_rows(self) -> None:
        """Put the JSON lines a failed Parquet conversion left in place, as metadata.jsonl
        (the only metadata file: an earlier run's metadata.parquet is out of date)."""
        temporary, _ = self._files[METADATA]
        with contextlib.suppress(OSError):
            os.replace(temporary, self.out / METADATA)
            (self.out / _METADATA_FILES["parquet"]).unlink(missing_ok=True)

    def _to_parquet(self, source: Path) -> Path:
        """The rows of ``source`` (JSON lines, removed once converted) in a temporary
        Parquet file, synced, one row group per `ROW_GROUP` rows; return that file.

        Each column's type follows the kinds of value it held (`_schema`): a column of
        several kinds, or of lists or objects, holds each value's JSON text.
        """
        assert self._arrow is not None
        pa, parquet = self._arrow
        schema, as_text = _schema(pa, self._kinds)
        target = self.out / f".{self.metadata.name}.writing"
        try:
            with source.open("rb") as lines, target.open("wb") as sink:
                with parquet.ParquetWriter(sink, schema) as writer:
                    while rows := [json.loads(line) for line in itertools.islice(lines, ROW_GROUP)]:
                        for row in rows:
                            for column in as_text:
                                if row.get(column) is not None:
                                    row[column] = json.dumps(row[column], ensure_ascii=False)
                        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                target.unlink()
            raise
        source.unlink()
        return target

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


def import_pyarrow() -> tuple[ModuleType, ModuleType]:
    """``pyarrow`` and ``pyarrow.parquet``, imported now: only ``--metadata parquet`` needs
    them (the ``parquet`` extra).

    Raises:
        MissingExtraError: They cannot be imported: one line naming the option and what to
            install (exit status 2).
    """
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingExtraError(
            f"--metadata parquet needs the 'parquet' extra (pyarrow): {PARQUET_EXTRA_HINT}  "
            "(or: uv add 'oxen-queue[parquet]')"
        ) from None
    return pyarrow, pyarrow.parquet


class _Wide:
    """The kind of an integer past 2**53 (within 64 bits): an ``int64``, but not a number a
    ``float64`` holds exactly (pyarrow refuses to round it)."""


def _kind(value: object) -> type:
    """What decides a value's column type in ``metadata.parquet``: its type, but an integer
    past 64 bits counts as an object (JSON text), and one past 2**53 as `_Wide`."""
    if type(value) is int and not -(2**53) <= value <= 2**53:
        return _Wide if -(2**63) <= value < 2**63 else object
    return type(value)


def _schema(pa: Any, kinds: dict[str, set[type]]) -> tuple[Any, list[str]]:
    """``metadata.parquet``'s schema from its columns' kinds of value, and the columns that
    hold JSON text.

    Booleans, integers (``int64``), numbers (``float64``: integers and floats mixed, but no
    integer past 2**53, which a ``float64`` would round) and strings are typed; a column of
    lists, of objects, or of several kinds holds each value's JSON text. A column null in
    every row is of the null type, but `_TYPED`'s (a run whose costs are all unknown still
    has a ``float64`` cost).
    """
    fields, as_text = [], []
    for column, seen in kinds.items():
        seen = seen - {type(None)}
        if not seen:
            typed = getattr(pa, _TYPED.get(column, "null"))()
        elif seen <= {int, _Wide}:
            typed = pa.int64()
        elif seen <= {int, float}:
            typed = pa.float64()
        elif seen == {bool}:
            typed = pa.bool_()
        elif seen == {str}:
            typed = pa.string()
        else:
            typed = pa.string()
            as_text.append(column)
        fields.append((column, typed))
    return pa.schema(fields), as_text
