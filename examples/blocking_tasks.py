"""The blocking Client behind a Django view or a Celery task: plain functions they call.

Shows: one ``Client`` per process, made on first use (after the web server or the Celery worker
has forked), shared by every thread of the process and closed at exit; a view that enqueues and
answers at once with the job's id; a view that reports a job's current status; a task that
waits for a job by id and saves its file, and that makes no second job when it is retried; bad
input refused before anything is sent. Nothing here imports Django or Celery: see
``docs/guides/django-celery.md`` for the few lines that wire these functions to them.

Run it offline, against the embedded emulator (no key needed; jobs take a few seconds)::

    uv run python examples/blocking_tasks.py

or against the hub, with your key (this bills one image)::

    OXEN_API_KEY=... uv run python examples/blocking_tasks.py
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from oxen_queue import Client
from oxen_queue.testing import use_emulator


class ClientPerProcess:
    """One blocking ``Client`` per process: made on first use, made anew in a forked child,
    closed when the process exits.

    A ``Client`` runs its event loop in a thread of the process that made it, and a fork does
    not copy threads: a client made before a prefork server (gunicorn, uwsgi) or a Celery
    worker forks would hang in the child. So none is made at import time. One client serves
    every thread of its process: its calls go through a thread-safe portal, and it bounds its
    own requests in flight.

    Args:
        options: ``Client`` arguments (``max_spend=``, ``ledger=``, ...); the key and the
            hub come from ``OXEN_API_KEY`` and ``OXEN_BASE_URL`` unless given here.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._pid: int | None = None
        atexit.register(self.close)

    def get(self) -> Client:
        """This process's client."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # A client inherited from the parent is dropped, never closed: its event loop
                # thread is not in this process, and closing it would wait on that thread.
                self._client = Client(**self._options)
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        """Close this process's client, if it made one (also run at exit)."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                client.close()


clients = ClientPerProcess()


def start_image(prompt: str, **params: Any) -> dict[str, str]:
    """A view's work: enqueue one image and answer at once (HTTP 202) with its id.

    Raises:
        InvalidParamsError: Bad parameters (``exc.field`` names which): nothing was sent,
            nothing billed; the view answers 400.
    """
    generation = clients.get().enqueue("gpt-image-2", prompt=prompt, **params)
    return {"id": generation.id, "status": generation.status}


def image_status(generation_id: str) -> dict[str, str | None]:
    """A view's work, for a page that polls: the job's current row (one request; nothing is
    watched, so a page that stops polling leaves nothing behind).

    Raises:
        InvalidParamsError: ``generation_id`` is not a plausible id (the view answers 404).
        NotFoundError: No such job.
    """
    row = clients.get().get_generation(generation_id)
    return {
        "id": row.generation_id,
        "status": row.status,
        "result_url": row.result_url,
        "error": row.error_message,
    }


def save_image(generation_id: str, directory: str | os.PathLike[str], *, timeout: float) -> Path:
    """A task's work: wait for a job by id, then save its file in ``directory``.

    It reattaches to the job, so running it again (a retried task, a restarted worker) waits
    for the same job and never makes a second one. The file is named after the id, with the
    extension of what was received, and written atomically.

    Args:
        generation_id: The id ``start_image`` returned.
        directory: Where to save the file (created if need be).
        timeout: Seconds to wait at most, less than the task's own time limit: on expiry
            ``TimeoutError`` is raised and the job carries on, for a retry to wait for.

    Raises:
        GenerationFailedError: The job failed (``exc.error_message`` is the server's text);
            retrying will not help.
        GenerationCancelledError: The job was cancelled.
        TimeoutError: ``timeout`` passed first.
    """
    client = clients.get()
    record = client.generation(generation_id).result(timeout=timeout)
    return client.download(record, Path(directory))


def main() -> None:
    """A view starts a job, a page polls it, a task saves it (twice: a retry makes no job)."""
    started = start_image("An ox pulling a cart of lanterns", quality="low")
    print(f"view: 202, job {started['id']} ({started['status']})")
    with tempfile.TemporaryDirectory() as scratch:
        path = save_image(started["id"], scratch, timeout=120)
        print(f"task: saved {path.name} ({path.stat().st_size} bytes)")
        again = save_image(started["id"], scratch, timeout=120)  # a retried task
        print(f"task, retried: the same job, saved again as {again.name}")
    print(f"view: {image_status(started['id'])['status']}")
    clients.close()


if __name__ == "__main__":
    with use_emulator(unless_key_set=True):
        main()
