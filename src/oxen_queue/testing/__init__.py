"""A local emulator of Oxen.ai's inference API, for tests, benchmarks and offline demos.

It is a real HTTP server that behaves as the API is documented: the async queue
(``/api/ai/queue``), its history with costs (``/api/ai/generations``), the SSE stream
(``/api/events``), the models endpoints with their pricing, and the synchronous image, image
edit and video endpoints, with real result files (PNG/JPEG/WebP, MP4) on a second origin
behind presigned-looking URLs. Edits are composed from the emulator's own result files: it
never downloads anything from another host. Jobs move through
``queued -> processing -> succeeded | failed | cancelled`` on a configurable clock, and faults
(429s, cut connections, dropped streams, lost events...) can be switched on at runtime.

Three ways to run it::

    # 1. A real server in a background thread (sync code, asyncio or trio).
    with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
        ...  # point a client at emu.base_url; read emu.stats(); set emu.faults.read_500 = 0.1

    # 2. In-process, through httpx.ASGITransport (no event stream: it needs a real server).
    app = create_app(clock=ManualClock())

    # 3. From the command line (blocking): run_server(port=8000)

    # 4. For code that reads OXEN_BASE_URL / OXEN_API_KEY (examples, demos).
    with use_emulator():
        ...

and a pytest fixture, ``oxen_emulator``, from the plugin this package registers.

It imports nothing from the SDK (``oxen_queue._*``): the SDK is tested against it.
"""

from __future__ import annotations

from ._app import EmulatorApp as EmulatorApp
from ._app import create_app as create_app
from ._catalog import MODELS as MODELS
from ._catalog import ModelSpec as ModelSpec
from ._catalog import Output as Output
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._clock import MonotonicClock as MonotonicClock
from ._config import EmulatorConfig as EmulatorConfig
from ._env import use_emulator as use_emulator
from ._events import Stats as Stats
from ._faults import Faults as Faults
from ._faults import RetryAfterForm as RetryAfterForm
from ._jobs import Job as Job
from ._jobs import User as User
from ._server import Emulator as Emulator
from ._server import run_server as run_server
from ._state import EmulatorState as EmulatorState

__all__ = [
    "MODELS",
    "Clock",
    "Emulator",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorState",
    "Faults",
    "Job",
    "ManualClock",
    "ModelSpec",
    "MonotonicClock",
    "Output",
    "RetryAfterForm",
    "Stats",
    "User",
    "create_app",
    "run_server",
    "use_emulator",
]
