"""The blocking endpoints (``POST /api/ai/images/generate``, ``/images/edit``,
``/videos/generate``). They bill like an enqueue: a request is resent only if refused, and a
budget's estimate is held first and kept unless the server refused (no row tells the charge).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ._exceptions import InvalidParamsError

if TYPE_CHECKING:
    from ._api import QueueEndpoints
    from ._core import CallOptions, ClientCore
    from ._models import ImagesResponse, VideosResponse

R = TypeVar("R")


class Call(NamedTuple):
    """A blocking call's own arguments, as the facade's method took them."""

    n: int | None
    response_format: str | None
    timeout: float
    """Seconds to wait for the answer."""
    validate: bool | None


@dataclass(slots=True, eq=False, repr=False)
class Blocking:
    """The blocking endpoints of one view of a client: its ``validate`` and timeouts."""

    _core: ClientCore
    _api: QueueEndpoints
    _options: CallOptions

    async def images(self, model: str, params: Mapping[str, Any], call: Call) -> ImagesResponse:
        return await self._send(self._api.generate_images, model, params, call)

    async def edit(self, model: str, params: Mapping[str, Any], call: Call) -> ImagesResponse:
        return await self._send(self._api.edit_images, model, params, call)

    async def videos(self, model: str, params: Mapping[str, Any], call: Call) -> VideosResponse:
        if (params.get("prompt") is None) == (params.get("multi_prompt") is None):
            raise InvalidParamsError("give exactly one of prompt and multi_prompt", field="prompt")
        return await self._send(self._api.generate_videos, model, params, call)

    async def _send(
        self,
        send: Callable[..., Awaitable[R]],
        model: str,
        params: Mapping[str, Any],
        call: Call,
    ) -> R:
        n, response_format, timeout, validate = call
        await self._core.opened()
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidParamsError(f"n must be a positive integer, not {n!r}", field="n")
        body = await self._core.params.check(model, params, self._options.validating(validate))
        hold = await self._core.spend.reserve(model, body, n or 1)
        if n is not None:
            body["n"] = n
        if response_format is not None:
            body["response_format"] = response_format
        try:
            result = await send({"model": model, **body}, read=timeout)
        except BaseException as exc:
            hold.settle_blocking(exc)
            raise
        hold.settle_blocking(None)
        return result
