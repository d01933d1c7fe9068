"""Admin routes under ``/_emulator/``: counters, faults and clock for out-of-process tests.

They need no authentication (the emulator listens on loopback by default) and live outside
``/api`` so they never collide with the API.

- ``GET /_emulator/stats``: the counters (``EmulatorState.snapshot()``).
- ``GET /_emulator/faults``: the fault switches.
- ``POST /_emulator/faults``: merge a JSON object into the switches; answers the result.
  ``{"reset": true}`` turns them all off first.
- ``POST /_emulator/reset``: forget jobs, files and counters, and turn faults off.
- ``GET|POST /_emulator/clock``: read or change ``time_scale`` (new jobs only), or
  ``{"advance": seconds}`` to move a manual clock.
"""

from __future__ import annotations

from typing import Any

from ._clock import ManualClock
from ._http import Request, Response, json_response, parse_json, simple_error
from ._media import MediaCache
from ._state import EmulatorState

__all__ = ["Admin"]


class Admin:
    """The admin route handlers of one emulator."""

    def __init__(self, state: EmulatorState, media: MediaCache) -> None:
        self.state = state
        self.media = media

    async def stats(self, request: Request) -> Response:
        """``GET /_emulator/stats``."""
        return json_response(self.state.snapshot())

    async def get_faults(self, request: Request) -> Response:
        """``GET /_emulator/faults``."""
        return json_response(self.state.faults.to_dict())

    async def set_faults(self, request: Request) -> Response:
        """``POST /_emulator/faults``."""
        body, error = await _object(request)
        if error is not None:
            return error
        faults = self.state.faults
        try:
            if body.pop("reset", False) is True:
                faults.reset()
            faults.update(body)
        except ValueError as exc:
            return simple_error(400, str(exc))
        return json_response(faults.to_dict())

    async def reset(self, request: Request) -> Response:
        """``POST /_emulator/reset``."""
        self.state.reset()
        self.state.faults.reset()
        self.media.clear()
        return json_response({"status": "success"})

    async def clock(self, request: Request) -> Response:
        """``GET|POST /_emulator/clock``."""
        state = self.state
        if request.method == "POST":
            body, error = await _object(request)
            if error is not None:
                return error
            unknown = set(body) - {"time_scale", "advance"}
            if unknown:
                return simple_error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
            scale = body.get("time_scale")
            if scale is not None:
                if not _non_negative(scale):
                    return simple_error(400, "time_scale must be a number >= 0")
                state.time_scale = float(scale)
            advance = body.get("advance")
            if advance is not None:
                if not isinstance(state.clock, ManualClock):
                    return simple_error(409, "advance needs a ManualClock")
                if not _non_negative(advance):
                    return simple_error(400, "advance must be a number of seconds >= 0")
                state.clock.advance(float(advance))
                state.advance()
        return json_response(
            {
                "time_scale": state.time_scale,
                "manual": not state.clock.realtime,
                "now": state.clock.now(),
            }
        )


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


async def _object(request: Request) -> tuple[dict[str, Any], Response | None]:
    raw = await request.body()
    if not raw.strip():
        return {}, None  # an empty POST is an empty object
    try:
        body = parse_json(raw)
    except ValueError:
        return {}, simple_error(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return {}, simple_error(400, "the body must be a JSON object")
    return body, None
