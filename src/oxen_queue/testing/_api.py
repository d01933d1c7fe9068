"""The API's endpoints, as the fact sheet and the OpenAPI spec (0.243.1) describe them.

Each handler takes the request, the authenticated user and the path parameters, and returns
a complete `Response`. Faults, authentication and counting happen around them, in
``_app``.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from typing import Any, Final

import anyio

from ._catalog import MODELS, ModelSpec, get_model
from ._files import InputRefusedError, resolve_inputs
from ._http import (
    BodyTooLargeError,
    Request,
    Response,
    invalid_params,
    json_response,
    not_found,
    raw_json_response,
    simple_error,
)
from ._jobs import STATUSES, User, dump_json
from ._media import MediaCache
from ._state import EmulatorState
from ._validation import check_params, runtime_error_message

__all__ = ["Api"]

# Fields of a queue request that belong to the queue, not to the model: never validated
# against the model's schema, never merged into rows as params.
_QUEUE_FIELDS: Final = frozenset(
    {"model", "num_generations", "target_namespace", "target_repo", "target_directory"}
)
_SYNC_FIELDS: Final = frozenset(
    {"model", "n", "response_format", "target_namespace", "target_repo", "target_directory"}
)
_MEDIA_TYPES: Final = ("image", "video")
_PAGE_SIZE_MAX: Final = 1000


class Api:
    """The endpoint handlers of one emulator."""

    def __init__(self, state: EmulatorState, media: MediaCache) -> None:
        self.state = state
        self.media = media
        seed = state.config.seed
        self._sync_rng = random.Random(None if seed is None else f"sync-{seed}")

    # --- POST /api/ai/queue --------------------------------------------------------------

    async def enqueue(self, request: Request, user: User, path: Mapping[str, str]) -> Response:
        """Create generations: only the model, ``num_generations`` and targets are checked."""
        body, error = await _json_object(request)
        if error is not None:
            return error
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name:
            return invalid_params("model is required and must be a string")
        model = get_model(model_name)
        if model is None:
            return simple_error(400, f"Model not found: {model_name}")
        if model.media_type is None:
            # Verbatim from the docs, leading colon included (an Elixir atom, apparently).
            return simple_error(400, ":unsupported_media_type")
        limit = self.state.config.max_generations_per_request
        count = body.get("num_generations", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
            return simple_error(400, f"num_generations must be an integer between 1 and {limit}")
        targets: dict[str, str | None] = {}
        for name in ("target_namespace", "target_repo", "target_directory"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                return invalid_params(f"{name} must be a string")
            targets[name] = value or None
        params = {k: v for k, v in body.items() if k not in _QUEUE_FIELDS}
        jobs = self.state.enqueue(
            user,
            model,
            params,
            count=count,
            target_namespace=targets["target_namespace"],
            target_repo=targets["target_repo"],
            target_directory=targets["target_directory"],
        )
        return json_response(
            {"generations": [{"generation_id": j.generation_id, "status": "queued"} for j in jobs]}
        )

    # --- GET /api/ai/queue ---------------------------------------------------------------

    async def list_queue(self, request: Request, user: User, path: Mapping[str, str]) -> Response:
        """The lean polling view: active rows only unless ``status=`` is given."""
        filters, error = _filters(request, user)
        if error is not None:
            return error
        active_only = filters["status"] is None
        jobs = self.state.find(user, active_only=active_only, **filters)
        rows = self.state.encode(jobs)
        return raw_json_response(b'{"count":%d,"generations":[%s]}' % (len(jobs), rows))

    # --- GET / DELETE /api/ai/queue/{generation_id} -------------------------------------

    async def show_queue_item(
        self, request: Request, user: User, path: Mapping[str, str]
    ) -> Response:
        """One row, flat (no envelope)."""
        job = self.state.job(user, path["generation_id"])
        return not_found() if job is None else raw_json_response(self.state.encode([job]))

    async def cancel(self, request: Request, user: User, path: Mapping[str, str]) -> Response:
        """Cancel an active generation; a terminal one is left as it is.

        The docs say cancelling a terminal generation "has no effect" but not what it
        answers; this assumes the same 200 body as a real cancellation.
        """
        job = self.state.cancel(user, path["generation_id"])
        if job is None:
            return not_found()
        return json_response({"status": "success", "generation_id": job.generation_id})

    # --- GET /api/ai/generations[/{generation_id}] --------------------------------------

    async def list_generations(
        self, request: Request, user: User, path: Mapping[str, str]
    ) -> Response:
        """Paginated history with cost, newest first (the spec does not say the order)."""
        filters, error = _filters(request, user)
        if error is not None:
            return error
        page = _positive_int(request.query.get("page"), default=1, maximum=None)
        if page is None:
            return invalid_params("page must be an integer >= 1")
        size = _positive_int(request.query.get("page_size"), default=50, maximum=_PAGE_SIZE_MAX)
        if size is None:
            return invalid_params(f"page_size must be an integer between 1 and {_PAGE_SIZE_MAX}")
        jobs = self.state.find(user, newest_first=True, **filters)
        charged = [job.cost for job in jobs if job.cost is not None]
        window = jobs[(page - 1) * size : page * size]
        head = {
            "count": len(window),
            "page_number": page,
            "page_size": size,
            "total_pages": (len(jobs) + size - 1) // size,
            "total_entries": len(jobs),
            # "Null when nothing in the set has been charged."
            "total_cost": str(sum(charged)) if charged else None,
        }
        rows = self.state.encode(window, history=True)
        return raw_json_response(b'{"generations":[%s],%s' % (rows, dump_json(head)[1:]))

    async def show_generation(
        self, request: Request, user: User, path: Mapping[str, str]
    ) -> Response:
        """One history row, in the success envelope."""
        job = self.state.job(user, path["generation_id"])
        if job is None:
            return not_found()
        return raw_json_response(
            b'{"status":"success","status_message":"resource_found","generation":%s}'
            % self.state.encode([job], history=True)
        )

    # --- models --------------------------------------------------------------------------

    async def list_models(self, request: Request, user: User, path: Mapping[str, str]) -> Response:
        """``{"object": "list", "data": [Model...]}`` with the spec's filters."""
        developer = request.query.get("developer_name", "").lower()
        provider = request.query.get("provider_name", "").lower()
        action = request.query.get("action")
        models = [
            model.to_api()
            for model in MODELS.values()
            if (not developer or model.developer.lower() == developer)
            and (not provider or model.provider.lower() == provider)
            # `action` selects fine-tunable models; none of the catalog's is.
            and not action
        ]
        return json_response({"object": "list", "data": models})

    async def show_model(self, request: Request, user: User, path: Mapping[str, str]) -> Response:
        """A bare Model object (no envelope)."""
        model = get_model(path["id"])
        if model is None:
            return simple_error(404, f"Model not found: {path['id']}")
        return json_response(model.to_api())

    # --- POST /api/ai/images/generate, /images/edit, /videos/generate -------------------

    async def generate_images(
        self, request: Request, user: User, path: Mapping[str, str]
    ) -> Response:
        """Synchronous image generation: validate, wait, answer with the results."""
        return await self._generate(request, user, "image")

    async def edit_images(self, request: Request, user: User, path: Mapping[str, str]) -> Response:
        """Synchronous image edit: as `generate_images`, composed from input images.

        The docs' request names the images ``input_image`` ("a URL string or an array of
        URLs"); the spec's ``ImageEditRequest`` names it ``image``. Either is accepted, not
        both. The images are downloaded from the emulator's own file origin only; any other
        URL answers 400 with the download's error.
        """
        return await self._generate(request, user, "image", edit=True)

    async def generate_videos(
        self, request: Request, user: User, path: Mapping[str, str]
    ) -> Response:
        """Synchronous video generation: validate, wait, answer with the results."""
        return await self._generate(request, user, "video")

    async def _generate(
        self, request: Request, user: User, media_type: str, *, edit: bool = False
    ) -> Response:
        body, error = await _json_object(request)
        if error is not None:
            return error
        model, error = self._sync_model(body, media_type, edit=edit)
        if error is not None:
            return error
        assert model is not None
        limit = self.state.config.max_generations_per_request
        count = body.get("n", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
            return simple_error(400, f"n must be an integer between 1 and {limit}")
        response_format = body.get("response_format", "url")
        if response_format not in ("url", "b64_json"):
            return simple_error(400, "response_format must be one of url, b64_json")
        namespace = body.get("target_namespace")
        if namespace is not None and not isinstance(namespace, str):
            return invalid_params("target_namespace must be a string")
        params = {k: v for k, v in body.items() if k not in _SYNC_FIELDS}
        if edit and "image" in params:
            if params.get("input_image") is not None:
                return simple_error(400, "Cannot provide both 'image' and 'input_image'.")
            params["input_image"] = params.pop("image")
        problems = check_params(model.request_schema or {}, params)
        if problems:
            return simple_error(400, runtime_error_message(problems))
        try:
            with self.state.lock:
                inputs = resolve_inputs(self.state, model, params)
        except InputRefusedError as exc:
            return simple_error(400, str(exc))
        await self._work(model)
        artifacts = [
            self.state.add_artifact(user, model, params, namespace=namespace or None, inputs=inputs)
            for _ in range(count)
        ]
        items: list[dict[str, Any]] = []
        for artifact in artifacts:
            if response_format == "b64_json":
                data = await self.media.get(artifact)
                items.append({"b64_json": base64.b64encode(data).decode()})
            elif media_type == "image":
                items.append({"url": self.state.signed_url(artifact), "revised_prompt": None})
            else:
                items.append({"url": self.state.signed_url(artifact)})
        created = int(self.state.clock.to_wall(self.state.clock.now()))
        key = "images" if media_type == "image" else "videos"
        return json_response({"model": model.id, "created": created, key: items})

    def _sync_model(
        self, body: Mapping[str, Any], media_type: str, *, edit: bool
    ) -> tuple[ModelSpec | None, Response | None]:
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name:
            return None, invalid_params("model is required and must be a string")
        model = get_model(model_name)
        if model is None:
            return None, simple_error(400, f"Model not found: {model_name}")
        if model.media_type != media_type:
            return None, simple_error(400, ":unsupported_media_type")
        if edit and not model.image_inputs:
            # INFERRED wording: the docs do not say what /images/edit answers for a model
            # that takes no input image.
            return None, simple_error(400, f"Model {model_name} does not take input images")
        prompt = body.get("prompt")
        if media_type == "video" and (prompt is None) == (body.get("multi_prompt") is None):
            # The video generation reference's two errors for "prompt or multi_prompt
            # (exactly one)".
            rule = (
                "Either 'prompt' or 'multi_prompt' must be provided."
                if prompt is None
                else "Cannot provide both 'prompt' and 'multi_prompt'."
            )
            return None, simple_error(
                400, f"Getting model response error: 422 - Value error, {rule}"
            )
        required = (model.request_schema or {}).get("required", ())
        if "prompt" in required and (not isinstance(prompt, str) or not prompt.strip()):
            # The image generation reference's own wording.
            return None, simple_error(400, "Prompt cannot be empty")
        return model, None

    async def _work(self, model: ModelSpec) -> None:
        """Wait as long as the generation "takes" (at once under a manual clock)."""
        if not self.state.clock.realtime:
            return
        config = self.state.config
        low, high = config.video_duration if model.media_type == "video" else config.image_duration
        seconds = self._sync_rng.uniform(low, high) * self.state.time_scale
        deadline = anyio.current_time() + seconds
        # In slices, so a server shutting down is not held up by a long generation.
        while not self.state.closing:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            await anyio.sleep(min(remaining, 0.1))


async def _json_object(request: Request) -> tuple[dict[str, Any], Response | None]:
    try:
        body = await request.json()
    except ValueError:
        return {}, invalid_params("the request body must be a JSON object")
    except BodyTooLargeError:
        return {}, invalid_params("the request body is too large")
    if not isinstance(body, dict):
        return {}, invalid_params("the request body must be a JSON object")
    return body, None


def _filters(request: Request, user: User) -> tuple[dict[str, Any], Response | None]:
    query = request.query
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        return {}, invalid_params(f"status must be one of {', '.join(STATUSES)}")
    media_type = query.get("media_type") or None
    if media_type is not None and media_type not in _MEDIA_TYPES:
        return {}, invalid_params("media_type must be one of image, video")
    return {
        "status": status,
        "model": query.get("model") or None,
        "media_type": media_type,
        # "namespace (defaults to the caller)"; a user only ever sees their own rows anyway.
        "namespace": query.get("namespace") or user.username,
        "repo": query.get("repo") or None,
        "folder": query.get("folder") or None,
    }, None


def _positive_int(raw: str | None, *, default: int, maximum: int | None) -> int | None:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    if value < 1 or (maximum is not None and value > maximum):
        return None
    return value
