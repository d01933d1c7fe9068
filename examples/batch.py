"""Batch: fire 50 prompts concurrently, report each one as it finishes.

Shows: enqueueing many at once (the client bounds its own concurrency, so there is no pool
timeout), ``as_completed`` over Generations, and per-generation outcomes without exceptions
escaping. One event stream tells the client about every completion.

Run it offline, against the embedded emulator (no key needed; jobs take a few seconds)::

    uv run python examples/batch.py

or against the hub (this bills 50 images)::

    OXEN_API_KEY=... uv run python examples/batch.py
"""

from __future__ import annotations

import time

import anyio

from oxen_queue import AsyncClient, Generation, GenerationError, as_completed
from oxen_queue.testing import use_emulator

SUBJECTS = ["an ox", "a lighthouse", "a fox", "a teapot", "a glacier"]
STYLES = [
    "watercolor",
    "pixel art",
    "photograph",
    "charcoal sketch",
    "isometric render",
    "stained glass",
    "ukiyo-e print",
    "neon sign",
    "paper cut-out",
    "oil painting",
]


async def main() -> None:
    prompts = [f"{subject}, {style}" for subject in SUBJECTS for style in STYLES]
    started = time.monotonic()
    async with AsyncClient() as client:
        generations: list[Generation] = []

        async def enqueue(prompt: str) -> None:
            generations.append(await client.enqueue("gpt-image-2", prompt=prompt, quality="low"))

        async with anyio.create_task_group() as task_group:
            for prompt in prompts:
                task_group.start_soon(enqueue, prompt)
        print(f"enqueued {len(generations)} in {time.monotonic() - started:.2f} s")

        succeeded = 0
        async for generation in as_completed(generations):
            elapsed = time.monotonic() - started
            try:
                record = generation.result()
            except GenerationError as exc:
                print(f"{elapsed:6.2f} s  {generation.id}  {exc}")
                continue
            succeeded += 1
            print(f"{elapsed:6.2f} s  {generation.id}  {record.params['prompt']!r}")
        print(f"{succeeded}/{len(generations)} succeeded in {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    with use_emulator(unless_key_set=True):
        anyio.run(main)
