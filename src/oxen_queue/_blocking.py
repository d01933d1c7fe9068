"""The blocking endpoints and cost estimates: a part of the ``AsyncClient`` facade.

``POST /api/ai/images/generate``, ``/images/edit`` and ``/videos/generate`` hold the request
open until the media exist; they bill like an enqueue, so they are resent only when refused
and, with a budget, reserved first. See ``_parts.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, TypeVar

from ._cost import check_priced_count
from ._exceptions import InvalidParamsError
from ._models import ImagesResponse, VideosResponse
from ._params import check_count
from ._parts import ClientParts

R = TypeVar("R")

__all__ = ["BlockingOperations"]


class BlockingOperations(ClientParts):
    """The client's blocking endpoints, and what a request would cost."""

    async def generate_images(
        self,
        model: str,
        /,
        *,
        prompt: str,
        n: int | None = None,
        response_format: Literal["url", "b64_json"] | None = None,
        timeout: float = 600.0,
        validate: bool | None = None,
        **params: Any,
    ) -> ImagesResponse:
        """Generate images with the blocking endpoint (``POST /api/ai/images/generate``).

        The server holds the request open until the images exist (5-30 s), so nothing is
        polled; prefer :meth:`enqueue` for many images. The request is resent only if the
        server refused it; a lost answer is raised, since the images may have been billed.

        Args:
            model: The model id.
            prompt: The prompt.
            n: Images to generate (the spec's ``n``); the server's default is 1.
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters.
        """
        return await self._blocking(
            self._core.endpoints.generate_images,
            model,
            {"prompt": prompt, **params},
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
        )

    async def edit_images(
        self,
        model: str,
        /,
        *,
        prompt: str,
        input_image: str | list[str],
        n: int | None = None,
        response_format: Literal["url", "b64_json"] | None = None,
        timeout: float = 600.0,
        validate: bool | None = None,
        **params: Any,
    ) -> ImagesResponse:
        """Edit images with the blocking endpoint (``POST /api/ai/images/edit``).

        As :meth:`generate_images`: nothing is polled, and the request is resent only if the
        server refused it. The provider downloads the input images, so their URLs must be
        publicly reachable (a result's ``result_url`` is).

        Args:
            model: The model id, e.g. ``"gpt-image-2-edit"``.
            prompt: The edit's instruction.
            input_image: The URL of the image to edit, or a list of URLs of images to compose.
            n: Images to generate; the server's default is 1.
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters (``mask``, ``resolution``, ...).

        Raises:
            InvalidParamsError: Bad parameters (nothing was sent).
            BadRequestError: The server refused (an input image it could not download, ...).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        return await self._blocking(
            self._core.endpoints.edit_images,
            model,
            {"prompt": prompt, "input_image": input_image, **params},
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
        )

    async def generate_videos(
        self,
        model: str,
        /,
        *,
        prompt: str | None = None,
        n: int | None = None,
        response_format: Literal["url", "b64_json"] | None = None,
        timeout: float = 1800.0,
        validate: bool | None = None,
        **params: Any,
    ) -> VideosResponse:
        """Generate videos with the blocking endpoint (``POST /api/ai/videos/generate``).

        The server holds the request open until the videos exist: "1-10+ min", so the
        default ``timeout`` is 30 minutes. The docs recommend the queue (:meth:`enqueue`)
        instead; this call is here for parity. The request is resent only if the server
        refused it: a lost answer is raised, since the video may have been billed.

        Args:
            model: The model id, e.g. ``"kling-video-v2-6-pro-text-to-video"``.
            prompt: The prompt; a multi-shot model takes ``multi_prompt=[{"prompt",
                "duration"}, ...]`` in ``params`` instead (exactly one of the two).
            n: Videos to generate (the server's default is 1).
            response_format: ``"url"`` (a temporary link) or ``"b64_json"`` (inline data).
            timeout: Seconds to wait for the answer.
            validate: Override the client's ``validate`` for this call.
            **params: The model's other parameters (``duration``, ``aspect_ratio``, ...).

        Raises:
            InvalidParamsError: Bad parameters, or neither or both of ``prompt`` and
                ``multi_prompt`` (nothing was sent).
            BudgetExceededError: Over the client's ``max_spend`` (nothing was sent).
        """
        if (prompt is None) == (params.get("multi_prompt") is None):
            raise InvalidParamsError("give exactly one of prompt and multi_prompt", field="prompt")
        return await self._blocking(
            self._core.endpoints.generate_videos,
            model,
            params if prompt is None else {"prompt": prompt, **params},
            n=n,
            response_format=response_format,
            timeout=timeout,
            validate=validate,
        )

    async def _blocking(
        self,
        send: Callable[..., Awaitable[R]],
        model: str,
        params: Mapping[str, Any],
        *,
        n: int | None,
        response_format: str | None,
        timeout: float,
        validate: bool | None,
    ) -> R:
        """A blocking endpoint's call: checked, its estimate held against the budget (kept
        unless the server refused: no row will tell its charge), then sent."""
        core = self._core
        core.require_open()
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidParamsError(f"n must be a positive integer, not {n!r}", field="n")
        body = await core.params.check(model, params, self._validate(validate))
        hold = await self._spend.reserve(model, body, n or 1)
        if n is not None:
            body["n"] = n
        if response_format is not None:
            body["response_format"] = response_format
        try:
            result = await send(
                {"model": model, **body}, timeout=core.session.read_timeout(timeout)
            )
        except BaseException as exc:
            hold.settle_blocking(exc)
            raise
        hold.settle_blocking(None)
        return result

    # -- cost ---------------------------------------------------------------------------

    async def estimate_cost(
        self,
        model: str,
        /,
        *,
        num_generations: int = 1,
        validate: bool | None = None,
        **params: Any,
    ) -> Decimal:
        """What a request would cost, from the model's published pricing; nothing is sent
        but, once per model and client, ``GET /api/ai/models/{id}`` (shared with the
        parameter checks).

        Parameters left out count at their defaults, as the server applies and bills them.
        Images are priced by the ``cost_per_image_grid`` cell of their ``quality`` and
        ``resolution`` (else ``cost_per_image``); videos by seconds of ``duration`` times the
        price of a second (with audio, or by resolution, when the model prices those apart).

        Args:
            model: The model id.
            num_generations: Generations of the request (as :meth:`enqueue_many` makes).
            validate: Override the client's ``validate``: bad parameters raise first.
            **params: The request's parameters, as :meth:`enqueue` takes them.

        Returns:
            The estimated cost, exact (a ``Decimal``), in the API's currency.

        Raises:
            CostUnknownError: The pricing cannot be resolved for these parameters (billed by
                token or time, no price for this quality and resolution, no ``duration``, a
                published price the client refuses as not an amount...); ``.missing`` names
                what is missing. Never a guess of zero.
            InvalidParamsError: Bad parameters, an unknown model, or ``num_generations``
                below 1 or above 1,000,000.
        """
        core = self._core
        core.require_open()
        check_count(num_generations)
        check_priced_count(num_generations)
        # A price depends on no prompt or input image: what is given is checked, and what
        # is absent counts at its default.
        checked = await core.params.check(model, params, self._validate(validate), partial=True)
        return await self._spend.estimate(model, checked, num_generations)
