"""Quickstart: enqueue one image, await it like a future, save it.

Shows: ``AsyncClient`` from the environment, ``await client.enqueue(...)``, ``await
generation``, ``client.download``, and the error you get for a failed generation.

Run it offline, against the embedded emulator (no key needed)::

    uv run python examples/quickstart.py

or against the hub, with your key::

    OXEN_API_KEY=... uv run python examples/quickstart.py
"""

from __future__ import annotations

from pathlib import Path

import anyio

from oxen_queue import AsyncClient, GenerationFailedError
from oxen_queue.testing import use_emulator


async def main() -> None:
    async with AsyncClient() as client:  # $OXEN_API_KEY, $OXEN_BASE_URL or https://hub.oxen.ai
        generation = await client.enqueue(
            "gpt-image-2",
            prompt="An ox standing in the middle of a long open road at sunset",
            resolution="1920x1080",
            quality="high",
            output_format="png",
        )
        print(f"enqueued {generation.id} ({generation.status})")
        try:
            record = await generation  # polling, events: the client takes care of it
        except GenerationFailedError as exc:
            print(f"failed: {exc.error_message}")
            return
        path = await client.download(record, Path("quickstart-ox.png"))
        print(f"{record.status}: {record.result_url}\nsaved {path}")


if __name__ == "__main__":
    with use_emulator(unless_key_set=True):
        anyio.run(main)
