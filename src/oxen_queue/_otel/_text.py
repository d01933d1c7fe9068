"""What text reaches a span, and in what form: the redaction's one owner.

`Redactor` is the door every recorded text passes (an error's description, a prompt when
captured): the API key never goes through it, nor, unless prompts are captured, the request's
prompts; an ``InvalidParamsError``, whose message may quote the caller's values, is described
by its field alone. `input_messages` builds ``gen_ai.input.messages`` when capture is on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from .._exceptions import APIStatusError, GenerationFailedError, InvalidParamsError

__all__ = [
    "CAPTURE_ENV",
    "PROMPT_LIMIT",
    "Redactor",
    "capture_enabled",
    "error_type",
    "input_messages",
    "scrubbed",
]

CAPTURE_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI conventions' switch for recording content (prompts)."""
PROMPT_LIMIT: Final = 1000
"""Characters of prompt text recorded at most, in all, when capture is on."""
_CAPTURE_VALUES: Final = frozenset({"true", "1", "span_only", "span_and_event"})
_DESCRIPTION_LIMIT: Final = 300
_SCRUBBED_PROMPT_MIN: Final = 8  # shorter prompts are too common as words to take out of text


def capture_enabled(value: str | None) -> bool:
    """Whether the environment's `CAPTURE_ENV` turns capture on: ``true`` (as the
    conventions' instrumentations read it; ``SPAN_ONLY`` and ``SPAN_AND_EVENT``, the newer
    values, too). Anything else, or nothing, leaves it off."""
    return value is not None and value.strip().lower() in _CAPTURE_VALUES


class Redactor:
    """The one door of text to a span: what it lets through never holds the API key, and is
    at most ``limit`` characters. Shows nothing of the key in its ``repr``."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "<Redactor>"

    def text(
        self, value: str, *, hide: tuple[str, ...] = (), limit: int = _DESCRIPTION_LIMIT
    ) -> str:
        """``value`` without the key (nor the strings of ``hide``), cut to ``limit`` (an
        ellipsis marks the cut). Empty if the key would still show: one that the markers put
        in its place re-form (a key overlapping ``[redacted]``), which no real key does."""
        secret = self._secret
        if secret and secret in value:
            value = value.replace(secret, "[redacted]")
        for hidden in hide:
            if hidden in value:
                value = value.replace(hidden, "[prompt]")
        if len(value) > limit:
            value = value[: limit - 3] + "..." if limit > 3 else value[:limit]
        return "" if not self.clean(value) else value

    def clean(self, value: str) -> bool:
        """Whether ``value`` is free of the key."""
        return not self._secret or self._secret not in value

    def describe(self, error: BaseException, *, hide: tuple[str, ...] = ()) -> str:
        """A span status description of ``error``: the server's message of a failed
        generation, the field of refused parameters (their message may quote values), else the
        error's own message."""
        if isinstance(error, GenerationFailedError):
            text = error.error_message or "failed"
        elif isinstance(error, InvalidParamsError):
            text = f"invalid parameter {error.field}" if error.field else "invalid parameters"
        else:
            text = str(error) or type(error).__name__
        return self.text(text, hide=hide)


def error_type(error: BaseException | None) -> str:
    """``error.type``: an HTTP status as a number, else the error's class name."""
    if isinstance(error, APIStatusError):
        return str(error.status_code)
    return "_OTHER" if error is None else type(error).__qualname__


def _prompts(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The request's text prompts: ``prompt`` and each ``multi_prompt`` shot's."""
    found: list[str] = []
    prompt = params.get("prompt")
    if isinstance(prompt, str):
        found.append(prompt)
    shots = params.get("multi_prompt")
    if isinstance(shots, list):
        found.extend(
            shot["prompt"]
            for shot in shots
            if isinstance(shot, Mapping) and isinstance(shot.get("prompt"), str)
        )
    return tuple(found)


def input_messages(params: Mapping[str, Any], redactor: Redactor) -> str | None:
    """``gen_ai.input.messages`` (a JSON string, as the conventions allow on spans): one user
    message whose text parts are the prompts, at most `PROMPT_LIMIT` characters in all."""
    left = PROMPT_LIMIT
    parts: list[dict[str, str]] = []
    for prompt in _prompts(params):
        if left <= 0:
            break
        shown = redactor.text(prompt, limit=left)
        if shown:
            left -= len(shown)
            parts.append({"type": "text", "content": shown})
    if not parts:
        return None
    messages = json.dumps([{"role": "user", "parts": parts}], ensure_ascii=False)
    # JSON's escapes could re-form a key that holds a quote or a backslash: none is recorded.
    return messages if redactor.clean(messages) else None


def scrubbed(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The prompts to take out of any text recorded for the request (without capture)."""
    return tuple(p for p in _prompts(params) if len(p) >= _SCRUBBED_PROMPT_MIN)
