"""Client processes for the SDK's multi-process ledger tests: ``python -m tests.ledger.clients``.

Each runs a real ``AsyncClient`` on a shared ledger against a running emulator, and prints
one JSON line per event on stdout:

``enqueue``
    ``--calls`` enqueues, ``--concurrency`` at a time; every ``--shared-every``-th prompt is
    the same in every process. Prints ``{"call": i, "ids": [...]}`` or
    ``{"call": i, "ambiguous": [...]}`` or ``{"call": i, "error": "..."}`` per call, then
    ``{"stats": {...}}``.
``batch``
    Enqueues ``--calls`` prompts one after another, printing ``{"enqueued": id}`` each time,
    then sleeps until killed.
``recover``
    ``await client.recover(wait=...)``; prints ``{"recovered": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from oxen_queue import AmbiguousEnqueueError, AsyncClient, OxenError, PollPolicy, RetryPolicy


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def client(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(
        api_key=args.key,
        base_url=args.base_url,
        ledger=args.ledger,
        completion="shared",
        shared_poll_interval=30.0,
        poll_policy=PollPolicy(deadline=None),
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.2, deadline=60.0),
        timeout=args.timeout,
        validate=False,
    )


async def enqueue(args: argparse.Namespace) -> None:
    limit = anyio.Semaphore(args.concurrency)
    async with client(args) as oxen:

        async def one(call: int) -> None:
            shared = call % args.shared_every == 0
            prompt = f"shared {call}" if shared else f"{args.name} {call}"
            async with limit:
                try:
                    generation = await oxen.enqueue("gpt-image-2", prompt=prompt, quality="low")
                except AmbiguousEnqueueError as exc:
                    emit({"call": call, "ambiguous": list(exc.candidate_ids)})
                except OxenError as exc:
                    emit({"call": call, "error": f"{type(exc).__name__}: {exc}"})
                else:
                    emit({"call": call, "ids": [generation.id]})

        async with anyio.create_task_group() as group:
            for call in range(args.calls):
                group.start_soon(one, call)
        stats = oxen.stats
        emit({"stats": {"reconciled": stats.reconciled, "resent": stats.resent}})


async def batch(args: argparse.Namespace) -> None:
    async with client(args) as oxen:
        async with anyio.create_task_group() as group:
            for call in range(args.calls):

                async def one(call: int = call) -> None:
                    generation = await oxen.enqueue(
                        "gpt-image-2", prompt=f"{args.name} {call}", quality="low"
                    )
                    emit({"enqueued": generation.id})

                group.start_soon(one)
                await anyio.sleep(args.pace)  # the behaviour: a batch's pace
        emit({"done": True})
        await anyio.sleep_forever()


async def recover(args: argparse.Namespace) -> None:
    async with client(args) as oxen:
        generations = await oxen.recover(wait=args.wait)
        emit({"recovered": [g.id for g in generations]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["enqueue", "batch", "recover"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", default="ledger-test-key")
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--name", default="p")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shared-every", type=int, default=5)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=30.0)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    command = {"enqueue": enqueue, "batch": batch, "recover": recover}[args.command]
    anyio.run(command, args, backend=args.loop)


if __name__ == "__main__":
    main()
