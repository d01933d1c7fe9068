"""Helpers of the emulator's tests: the OpenAPI spec as a validator, clients, keys."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from oxen_queue.testing._app import EmulatorApp

DATA: Final = Path(__file__).parent.parent / "data"
SPEC_PATH: Final = DATA / "oxen-hub-openapi-0.243.1.json"
DOCS_PAGE_PATH: Final = DATA / "oxen-gpt-image-2-page.md"

KEY: Final = "test-key-alice"
OTHER_KEY: Final = "test-key-bob"
API_ORIGIN: Final = "http://hub.oxen.test"
PROMPT: Final = "An ox on a long open road at sunset"


class OpenAPI:
    """The published spec's component schemas, as validators."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        spec = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(spec, default_specification=DRAFT4)
        self._registry: Registry[Any] = Registry().with_resource("urn:oxen-hub", resource)
        self.schemas: dict[str, Any] = spec["components"]["schemas"]

    def validate(self, schema: str, instance: object) -> None:
        """Raise ``jsonschema.ValidationError`` unless ``instance`` fits the named schema."""
        assert schema in self.schemas, schema
        validator = OAS30Validator(
            {"$ref": f"urn:oxen-hub#/components/schemas/{schema}"},
            registry=self._registry,
            format_checker=oas30_format_checker,
        )
        validator.validate(instance)


def auth(key: str = KEY) -> dict[str, str]:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


def asgi_client(app: EmulatorApp, *, key: str | None = KEY) -> httpx.AsyncClient:
    """An in-process client of the app (the API origin and the file origin alike)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=API_ORIGIN,
        headers=auth(key) if key is not None else None,
    )


async def enqueue(client: httpx.AsyncClient, **body: Any) -> list[str]:
    """Enqueue and return the generation ids (asserting a 200)."""
    body.setdefault("model", "gpt-image-2")
    body.setdefault("prompt", PROMPT)
    response = await client.post("/api/ai/queue", json=body)
    assert response.status_code == 200, response.text
    return [item["generation_id"] for item in response.json()["generations"]]


class SSEParser:
    """Server-Sent Events from lines, as the spec parses them (data lines joined by "\\n")."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """Take one line; return ``(event name, data)`` when an event completes."""
        if line == "":
            name, data = self._name, self._data
            self._name, self._data = None, []
            return (name or "message", "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None


async def next_completion(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next well-formed ``media_generation_completed`` payload on a stream."""
    parser = SSEParser()
    async for line in lines:
        event = parser.feed(line)
        if event is None or event[0] != "media_generation_completed":
            continue
        try:
            payload = json.loads(event[1])
        except ValueError:
            continue
        if isinstance(payload, dict):
            return payload
    raise EOFError("the stream ended")


async def wait_for_status(
    client: httpx.AsyncClient, generation_id: str, statuses: set[str], *, timeout: float = 5.0
) -> dict[str, Any]:
    """Poll a generation until its status is one of ``statuses``."""
    with anyio.fail_after(timeout):
        while True:
            row: dict[str, Any] = (await client.get(f"/api/ai/queue/{generation_id}")).json()
            if row["status"] in statuses:
                return row
            await anyio.sleep(0.01)  # polling, as a client without the stream does


@contextlib.asynccontextmanager
async def event_lines(
    client: httpx.AsyncClient, *, key: str | None = None
) -> AsyncIterator[MemoryObjectReceiveStream[str]]:
    """Subscribe to ``/api/events`` and receive its lines.

    A task reads the stream to its end (or until the block exits and cancels it), so no
    half-consumed async generator is left for trio to warn about.
    """
    headers = auth(key) if key is not None else None
    send, receive = anyio.create_memory_object_stream[str](10_000)
    async with client.stream("GET", "/api/events", headers=headers) as response:
        assert response.status_code == 200, response.status_code

        async def pump() -> None:
            async with send:
                async for line in response.aiter_lines():
                    await send.send(line)

        async with anyio.create_task_group() as group, receive:
            group.start_soon(pump)
            try:
                yield receive
            finally:
                group.cancel_scope.cancel()
