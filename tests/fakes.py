"""A scripted fake of the queue API for ``httpx.MockTransport``: request shaping, error paths.

Lifecycles are driven by the number of times a job is read, not by time, so tests never sleep.
Anything richer (time, SSE, files) is the emulator's job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "https://hub.oxen.test"

Responder = Callable[[httpx.Request], httpx.Response | None]


@dataclass
class FakeJob:
    generation_id: str
    model: str
    params: dict[str, Any]
    statuses: list[str]
    reads: int = 0
    error_message: str | None = None
    enqueued_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def status(self) -> str:
        return self.statuses[min(self.reads, len(self.statuses) - 1)]

    def row(self) -> dict[str, Any]:
        status = self.status
        return {
            **self.params,
            "generation_id": self.generation_id,
            "model_name": self.model,
            "media_type": "image",
            "status": status,
            "enqueued_at": self.enqueued_at,
            "started_at": None if status == "queued" else self.enqueued_at + 1,
            "completed_at": self.enqueued_at + 5
            if status in ("succeeded", "failed", "cancelled")
            else None,
            "result_url": f"https://files.oxen.test/{self.generation_id}.png"
            if status == "succeeded"
            else None,
            "error_message": self.error_message if status == "failed" else None,
        }


@dataclass
class FakeAPI:
    """Jobs go through ``lifecycle`` one step per read of their row."""

    lifecycle: list[str] = field(default_factory=lambda: ["queued", "processing", "succeeded"])
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    error_message: str | None = None
    key: str = "test-key"
    before: list[Responder] = field(default_factory=list)
    """Hooks tried first; one returning a response answers the request instead."""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = f"{request.method} {request.url.path}"
        self.calls[key] += 1
        for hook in self.before:
            answer = hook(request)
            if answer is not None:
                return answer
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(
                401,
                json={
                    "error": {"type": "unauthenticated", "title": "Unauthenticated"},
                    "status": "error",
                    "status_message": "unauthenticated",
                },
            )
        path = request.url.path
        if request.method == "POST" and path == "/api/ai/queue":
            return self.create(json.loads(request.content))
        if path.startswith("/api/ai/queue/"):
            job = self.jobs.get(path.rsplit("/", 1)[1])
            if job is None:
                return not_found()
            if request.method == "DELETE":
                if job.status not in ("succeeded", "failed", "cancelled"):
                    job.statuses = ["cancelled"]
                    job.reads = 0
                return httpx.Response(
                    200, json={"status": "success", "generation_id": job.generation_id}
                )
            row = job.row()
            job.reads += 1
            return httpx.Response(200, json=row)
        if path == "/api/ai/queue":
            rows = [j.row() for j in self.jobs.values() if j.status in ("queued", "processing")]
            return httpx.Response(200, json={"count": len(rows), "generations": rows})
        if path == "/api/ai/generations":
            # Newest first, paged: the real endpoint's shape (spec: page_size <= 1000).
            size = int(request.url.params.get("page_size", 50))
            page = int(request.url.params.get("page", 1))
            newest_first = [j.row() for j in reversed(self.jobs.values())]
            rows = newest_first[(page - 1) * size : page * size]
            return httpx.Response(
                200,
                json={
                    "count": len(rows),
                    "generations": rows,
                    "page_number": page,
                    "page_size": size,
                    "total_pages": max(1, -(-len(newest_first) // size)),
                    "total_entries": len(newest_first),
                    "total_cost": None,
                },
            )
        if path.startswith("/api/ai/models/"):
            name = path.rsplit("/", 1)[1]
            if name != "flux-test":
                return httpx.Response(404, json={"error": {"message": f"Model not found: {name}"}})
            return httpx.Response(200, json=FLUX_MODEL)
        if path == "/api/ai/images/generate":
            body = json.loads(request.content)
            return httpx.Response(
                200,
                json={
                    "model": body["model"],
                    "created": 1_700_000_000,
                    "images": [{"url": "https://files.oxen.test/sync.png", "revised_prompt": None}]
                    * int(body.get("n", 1)),
                },
            )
        return httpx.Response(404, text="no route")

    def create(self, body: dict[str, Any]) -> httpx.Response:
        model = body.pop("model")
        count = int(body.pop("num_generations", 1))
        if not 1 <= count <= 4 or "n" in body:  # "n" is the blocking endpoint's, not the queue's
            return httpx.Response(
                400,
                json={"error": {"message": "num_generations must be an integer between 1 and 4"}},
            )
        ids = []
        for _ in range(count):
            job = FakeJob(
                str(uuid.uuid4()),
                model,
                body,
                list(self.lifecycle),
                error_message=self.error_message,
            )
            self.jobs[job.generation_id] = job
            ids.append({"generation_id": job.generation_id, "status": "queued"})
        return httpx.Response(200, json={"generations": ids})


FLUX_MODEL: dict[str, Any] = {
    "id": "flux-test",
    "object": "model",
    "created": 1_700_000_000,
    "owned_by": "oxen",
    "endpoint": "/images/generate",
    "capabilities": {"input": ["text"], "output": ["image"]},
    "request_schema": {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "aspect_ratio": {"type": "string", "enum": ["1:1", "16:9"], "default": "1:1"},
            "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 50},
            "seed": {"type": "integer"},
        },
    },
}


def not_found() -> httpx.Response:
    return httpx.Response(
        404,
        json={
            "error": {
                "type": "resource_not_found",
                "title": "The requested resource could not be found",
            },
            "status": "error",
            "status_message": "resource_not_found",
        },
    )


def on_enqueue(api: FakeAPI, answers: list[str]) -> None:
    """Script the next enqueues' answers, one word each: 'ok', '429', '503', 'refused' (never
    connected), 'lost' (a read timeout before the server made anything); or ambiguous ones
    that create the job first: 'cut' (the connection cut), 'timeout', 'garbled', '502',
    '504'. Past the list, the fake answers as usual."""

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST" or request.url.path != "/api/ai/queue" or not answers:
            return None
        kind = answers.pop(0)
        if kind == "429":
            return httpx.Response(429, headers={"Retry-After": "0"}, json={})
        if kind == "503":
            return httpx.Response(503, text="unavailable")
        if kind == "refused":
            raise httpx.ConnectError("refused", request=request)
        if kind == "lost":
            raise httpx.ReadTimeout("timed out before the server acted", request=request)
        if kind == "ok":
            return None
        created = api.create(json.loads(request.content))  # the job now exists
        if kind == "cut":
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        if kind == "timeout":
            raise httpx.ReadTimeout("read timed out", request=request)
        if kind == "garbled":
            return httpx.Response(200, content=created.content[:20])
        return httpx.Response(int(kind), text="<html>gateway</html>")

    api.before.append(hook)
