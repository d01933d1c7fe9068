"""The video model of the catalog: ``kling-video-v2-6-pro-text-to-video``.

Its parameters are exactly those its per-model page lists (fact sheet §3.10): ``prompt``
(required), ``negative_prompt``, ``aspect_ratio`` in {9:16, 16:9, 1:1} (default 16:9),
``duration`` in {5, 10} (default 5), ``generate_audio`` (default false) and ``cfg_scale``
0-10 (default 0.5). Video models bill ``per_video_output_second`` (the fact sheet, §7).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from ._spec import ModelSpec, Output, pricing, prop

__all__ = ["KLING_V2_6_PRO_T2V"]

# A small, aspect-matched stand-in for the real 1080p output, so rendering stays cheap.
_KLING_SIZES: Final = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}


def _per_second_cost(model: ModelSpec, params: Mapping[str, Any]) -> Decimal:
    """Seconds of output times the per-second price, the audio price with a soundtrack.

    An absent or invalid ``duration`` bills at the default (the API bills a job that then
    fails); only a literal ``true`` counts as ``generate_audio``.
    """
    key = (
        "cost_per_second_with_audio" if params.get("generate_audio") is True else "cost_per_second"
    )
    return Decimal(model.pricing[key]) * int(model.param(params, "duration"))


def _kling_output(model: ModelSpec, params: Mapping[str, Any]) -> Output:
    width, height = _KLING_SIZES[model.param(params, "aspect_ratio")]
    seconds = float(model.param(params, "duration"))
    return Output("video", width, height, "mp4", "video/mp4", seconds)


KLING_V2_6_PRO_T2V: Final = ModelSpec(
    id="kling-video-v2-6-pro-text-to-video",
    display_name="Kling Video v2.6 Pro (Text to Video)",
    description=(
        "Kling 2.6 Pro turns a text prompt into a cinematic video clip, optionally with "
        "generated audio."
    ),
    developer="Kuaishou",
    provider="fal",
    created=1764547200,
    released_at="2025-12-01",
    endpoint="/videos/generate",
    inputs=("text",),
    outputs=("video",),
    # INFERRED figures. Kling 2.6 Pro renders 1080p only, so the by-resolution table has the
    # one entry, equal to `cost_per_second`; audio doubles the price.
    pricing=pricing(
        "per_video_output_second",
        cost_per_second=Decimal("0.07"),
        cost_per_second_with_audio=Decimal("0.14"),
        cost_per_second_by_resolution={"1080p": Decimal("0.07")},
    ),
    request_schema={
        "type": "object",
        "properties": {
            "prompt": prop("string", "Text description of the video to generate.", order=0),
            "negative_prompt": prop("string", "What the video should not show.", order=1),
            "aspect_ratio": prop(
                "string",
                "Aspect ratio of the generated video.",
                order=2,
                default="16:9",
                enum=list(_KLING_SIZES),
            ),
            # An integer, as `duration` is in the queue's request schema and docs examples.
            "duration": prop(
                "integer",
                "Length of the video in seconds.",
                order=3,
                default=5,
                enum=[5, 10],
            ),
            "generate_audio": prop(
                "boolean", "Also generate a soundtrack.", order=4, default=False
            ),
            "cfg_scale": prop(
                "number",
                "How closely the video follows the prompt.",
                order=5,
                default=0.5,
                minimum=0,
                maximum=10,
            ),
        },
        "required": ["prompt"],
        "additionalProperties": False,
        "basic": ["prompt", "aspect_ratio", "duration"],
    },
    _cost=_per_second_cost,
    _output=_kling_output,
)
