"""Users, jobs and result files, and how they read as API rows."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal
from urllib.parse import quote

from ._spec import ModelSpec, Output, money

__all__ = [
    "ACTIVE_STATUSES",
    "STATUSES",
    "Artifact",
    "Inputs",
    "Job",
    "Status",
    "User",
    "dump_json",
]

Status = Literal["queued", "processing", "succeeded", "failed", "cancelled"]
STATUSES: Final[tuple[Status, ...]] = ("queued", "processing", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES: Final = frozenset({"queued", "processing"})

_USER_NAMESPACE: Final = uuid.UUID("6f78656e-2d71-7565-7565-656d756c6174")


def dump_json(value: Any) -> bytes:
    """Compact JSON, as Phoenix (Jason) writes it: one line, no spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class User:
    """The owner of an API key. The key itself is never kept, only a digest of it.

    Attributes:
        user_id: A UUID derived from the key.
        username: ``user-`` and 8 hex digits of the key's SHA-256; also the default namespace.
    """

    user_id: str
    username: str

    @classmethod
    def from_key_digest(cls, digest: str) -> User:
        """The user of the key whose SHA-256 hex digest is ``digest``."""
        return cls(
            user_id=str(uuid.uuid5(_USER_NAMESPACE, digest)),
            username=f"user-{digest[:8]}",
        )

    @staticmethod
    def digest(api_key: str) -> str:
        """The SHA-256 hex digest of a key."""
        return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Inputs:
    """The input files of an edit, as the model downloaded them.

    Attributes:
        images: The input images, in the request's order.
        mask: The mask image, if any.
    """

    images: tuple[Artifact, ...] = ()
    mask: Artifact | None = None


_NO_INPUTS: Final = Inputs()


@dataclass(frozen=True, slots=True)
class Artifact:
    """A result file, served by the file origin at `path` behind a signature.

    Attributes:
        generation_id: The generation (or synchronous result) it belongs to.
        namespace: The namespace that stores it.
        model: The model that "made" it.
        params: The model parameters (they decide the size, format and content).
        output: What file it is.
        expires: Unix time after which its signed URL is refused.
        inputs: The files an edit composes it from (none for a plain generation).
    """

    generation_id: str
    namespace: str
    model: ModelSpec
    params: Mapping[str, Any]
    output: Output
    expires: int
    inputs: Inputs = _NO_INPUTS

    @property
    def path(self) -> str:
        """The file's path on the file origin, unquoted: ``/files/<namespace>/<id>.<ext>``."""
        return f"/files/{self.namespace}/{self.generation_id}.{self.output.extension}"

    @property
    def quoted_path(self) -> str:
        """`path` as it appears in a URL."""
        return (
            f"/files/{quote(self.namespace, safe='')}/{self.generation_id}.{self.output.extension}"
        )

    @property
    def prompt(self) -> str:
        """The prompt to draw on the file."""
        prompt = self.params.get("prompt")
        return prompt if isinstance(prompt, str) else ""


@dataclass(slots=True, eq=False)
class Job:
    """One generation on the queue.

    Timestamps are Unix seconds (floats here; the API shows whole seconds). The plan
    (``delay``, ``duration``, ``planned_error``) is drawn at enqueue so a seeded emulator is
    deterministic.
    """

    generation_id: str
    owner: User
    model: ModelSpec
    params: dict[str, Any]
    namespace: str
    target_repo: str | None
    target_directory: str | None
    enqueued_at: float
    delay: float
    duration: float
    planned_error: str | None
    billable: bool
    status: Status = "queued"
    inputs: Inputs = _NO_INPUTS
    started_at: float | None = None
    completed_at: float | None = None
    clock_offset: float = 0.0
    """Seconds the server's clock is ahead of the real one (see ``EmulatorConfig``)."""
    result_url: str | None = None
    error_message: str | None = None
    cost: Decimal | None = None
    _queue_json: bytes | None = field(default=None, repr=False)
    _history_json: bytes | None = field(default=None, repr=False)

    @property
    def media_type(self) -> str:
        """``"image"`` or ``"video"``."""
        return self.model.media_type or "image"

    @property
    def prompt(self) -> str:
        """The submitted prompt, or ``""``."""
        prompt = self.params.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def changed(self) -> None:
        """Forget the cached JSON after a change."""
        self._queue_json = None
        self._history_json = None

    def row(self) -> dict[str, Any]:
        """The ``QueueGenerationResponse`` row.

        "Any additional parameters from the original enqueue request ... are included" at the
        top level: the submitted params first, so a param that collides with a row field
        (a misspelt ``status``, say) cannot mask it.
        """
        row = dict(self.params)
        row.update(
            generation_id=self.generation_id,
            model_name=self.model.id,
            media_type=self.media_type,
            status=self.status,
            enqueued_at=int(self.enqueued_at + self.clock_offset),
            started_at=_whole(self.started_at, self.clock_offset),
            completed_at=_whole(self.completed_at, self.clock_offset),
            result_url=self.result_url,
            error_message=self.error_message,
            # The effective namespace: "defaults to the current user".
            target_namespace=self.namespace,
            target_repo=self.target_repo,
            target_directory=self.target_directory,
        )
        return row

    def history_row(self) -> dict[str, Any]:
        """The row of ``/api/ai/generations``: `row` plus cost and user."""
        row = self.row()
        row.update(
            cost=None if self.cost is None else money(self.cost),
            user_id=self.owner.user_id,
            username=self.owner.username,
            user_image=None,
        )
        return row

    def queue_json(self) -> bytes:
        """`row` as JSON, cached until the next change."""
        if self._queue_json is None:
            self._queue_json = dump_json(self.row())
        return self._queue_json

    def history_json(self) -> bytes:
        """`history_row` as JSON, cached until the next change."""
        if self._history_json is None:
            self._history_json = dump_json(self.history_row())
        return self._history_json


def _whole(timestamp: float | None, offset: float) -> int | None:
    return None if timestamp is None else int(timestamp + offset)
