"""A local emulator of Oxen.ai's inference API, for tests, benchmarks and offline demos.

It is a real HTTP server that behaves as the API is documented: the async queue
(``/api/ai/queue``), its history with costs (``/api/ai/generations``), the SSE stream
(``/api/events``), the models endpoints with their pricing, and the synchronous image, image
edit and video endpoints, with real result files (PNG/JPEG/WebP, MP4) on a second origin
behind presigned-looking URLs. Edits are composed from the emulator's own result files: it
never downloads anything from another host. Jobs move through
``queued -> processing -> succeeded | failed | cancelled`` on a configurable clock, and faults
(429s, cut connections, dropped streams, lost events...) can be switched on at runtime.

Four ways to run it:

```python
# 1. A real server in a background thread (sync code, asyncio or trio).
with Emulator(config=EmulatorConfig(time_scale=0.01)) as emu:
    ...  # point a client at emu.base_url; read emu.stats(); set emu.faults.read_500 = 0.1

# 2. In-process, through httpx.ASGITransport (no event stream: it needs a real server).
app = create_app(clock=ManualClock())

# 3. From the command line (blocking): run_server(port=8000)

# 4. For code that reads OXEN_BASE_URL / OXEN_API_KEY (examples, demos).
with use_emulator():
    ...
```

and a pytest fixture, ``oxen_emulator``, from the plugin this package registers (it sets
``OXEN_API_KEY`` to ``DUMMY_API_KEY`` and runs jobs at ``TEST_TIME_SCALE``).

It imports nothing from the SDK (``oxen_queue._*``): the SDK is tested against it.

It needs the ``emulator`` extra (uvicorn, Pillow, PyAV): without it, importing this package
raises `ModuleNotFoundError` whose message is the line to install it,
``pip install 'oxen-queue[emulator]'``.
"""

from __future__ import annotations

from types import FunctionType as _FunctionType

from ._extra import require_emulator_extra as _require_emulator_extra

_require_emulator_extra()  # first: a missing extra is reported as the line to install it
from ._app import create_app as create_app
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._config import DUMMY_API_KEY as DUMMY_API_KEY
from ._config import TEST_TIME_SCALE as TEST_TIME_SCALE
from ._config import EmulatorConfig as EmulatorConfig
from ._env import use_emulator as use_emulator
from ._faults import Faults as Faults
from ._faults import RetryAfterForm as RetryAfterForm
from ._server import Emulator as Emulator
from ._server import run_server as run_server

__all__ = [
    "DUMMY_API_KEY",
    "TEST_TIME_SCALE",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "ManualClock",
    "RetryAfterForm",
    "create_app",
    "run_server",
    "use_emulator",
]

# Public classes and functions report this package as their module (see oxen_queue/__init__).
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type | _FunctionType) and _value.__module__.startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _name, _value
