"""Prompt files in, JSONL manifests out: what a batch reads, and what lets it resume.

A prompts file holds one request per line: plain text is a prompt; a line starting with ``{``
is a JSON object of parameters (``{"prompt": "...", "resolution": "1024x1024"}``, optionally
with its own ``"model"``). Blank lines and ``#`` comments are skipped.

The manifest is appended one JSON line per event (enqueued, finished) and fsynced, so a crash
loses at most the line being written, and a torn last line is ignored when read back. The
latest line of each request tells a rerun what to do: reattach by id, skip, or enqueue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Manifest", "PromptLine", "PromptsFileError", "read_latest", "read_prompts"]


class PromptsFileError(ValueError):
    """A prompts file line that cannot be read, with its line number."""


@dataclass(frozen=True, slots=True)
class PromptLine:
    """One request of a prompts file.

    Attributes:
        number: Its 1-based line number (for messages only).
        params: Its parameters (``prompt`` and any others), without ``model``.
        model: Its own model, when the line names one.
        occurrence: How many identical requests come before it in the file.
    """

    number: int
    params: dict[str, Any]
    model: str | None = None
    occurrence: int = 0

    @property
    def digest(self) -> str:
        content = json.dumps([self.model, self.params], sort_keys=True)
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """Identifies the request across runs by its content, not its position: adding a
        comment or a prompt above it must not make a rerun enqueue (and bill) it again.
        Identical requests are told apart by their order."""
        return f"{self.digest}#{self.occurrence}"

    @property
    def prompt(self) -> str:
        return str(self.params.get("prompt", ""))


def read_prompts(path: Path) -> list[PromptLine]:
    """Read a prompts file.

    Raises:
        PromptsFileError: A JSON line is malformed or not an object with a string ``prompt``.
        OSError: The file cannot be read.
    """
    lines: list[PromptLine] = []
    seen: Counter[str] = Counter()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("{"):
            lines.append(_counted(PromptLine(number, {"prompt": text}), seen))
            continue
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptsFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(params, dict) or not isinstance(params.get("prompt"), str):
            raise PromptsFileError(f'{path}:{number}: a JSON line needs a string "prompt"')
        model = params.pop("model", None)
        if model is not None and not isinstance(model, str):
            raise PromptsFileError(f'{path}:{number}: "model" must be a string')
        lines.append(_counted(PromptLine(number, params, model), seen))
    return lines


def _counted(line: PromptLine, seen: Counter[str]) -> PromptLine:
    occurrence = seen[line.digest]
    seen[line.digest] += 1
    return dataclasses.replace(line, occurrence=occurrence) if occurrence else line


def read_latest(path: Path) -> dict[str, dict[str, Any]]:
    """The latest entry of each request of a manifest, by key (none if there is no file).
    Reads only: a dry run leaves no trace."""
    latest: dict[str, dict[str, Any]] = {}
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line torn by a crash: the event is simply redone
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                latest[entry["key"]] = entry
    return latest


class Manifest:
    """An append-only JSONL record of a batch, in its output directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.latest = read_latest(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            # A crash tore the last line: end it, so the next event starts a line of its own.
            os.write(self._fd, b"\n")

    def append(self, line: PromptLine, **fields: Any) -> None:
        """Record an event of a request: one ``write`` of one whole line, then fsync."""
        entry = {
            "key": line.key,
            "line": line.number,
            "prompt": line.prompt,
            "model": line.model,
            "params": line.params,
            **fields,
            "at": round(time.time(), 3),
        }
        self.latest[line.key] = entry
        assert self._fd is not None, "the manifest is closed"
        os.write(self._fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
