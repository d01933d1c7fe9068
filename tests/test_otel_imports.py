"""OpenTelemetry is optional (issue 18): without it, importing oxen_queue and running whole
generations import none of it; with it, a cold start (import, make a client) imports none of
it either: only a client's first call does.

Each case runs in a fresh interpreter, so what is imported is that run's alone. Absence is
simulated both ways an environment can lack a package: ``sys.modules["opentelemetry"] = None``
and an import hook that refuses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

BLOCKERS = {
    "sys.modules": """
        sys.modules["opentelemetry"] = None
    """,
    "meta path": """
        import importlib.abc

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
    """,
    # Installed (as here) and imported by nothing else: no SDK can be configured, so the
    # client does not import it either.
    "installed, unused": "",
}

GENERATIONS = """
import json, sys
{blocker}
import anyio, httpx
import oxen_queue
from oxen_queue import AsyncClient
from oxen_queue._otel import NO_TELEMETRY
from oxen_queue.testing import EmulatorConfig, create_app

async def main():
    app = create_app(config=EmulatorConfig(time_scale=0.0, seed=1))
    async with AsyncClient(
        api_key="k", base_url="https://hub.oxen.test", max_spend=100,
        transport=httpx.ASGITransport(app=app), completion="shared",
        shared_poll_interval=0.01,
    ) as client:
        absent = client._core.telemetry is NO_TELEMETRY
        record = await client.generate("gpt-image-2", prompt="An ox", quality="low")
        many = await client.enqueue_many("gpt-image-2", 2, prompt="Two oxen", quality="low")
        for generation in many:
            await generation
    return record.status, absent

status, absent = anyio.run(main, backend=sys.argv[1])
loaded = [name for name, module in sys.modules.items()
          if name.split(".")[0] == "opentelemetry" and module is not None]
print(json.dumps({{"status": status, "absent": absent, "loaded": loaded}}))
"""

COLD_START = """
import json, sys
import oxen_queue
client = oxen_queue.AsyncClient(api_key="k", base_url="http://127.0.0.1:9")
import importlib.util
print(json.dumps({
    "installed": importlib.util.find_spec("opentelemetry") is not None,
    "loaded": [name for name in sys.modules if name.split(".")[0] == "opentelemetry"],
}))
"""


def run(source: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("blocker", sorted(BLOCKERS))
def test_without_opentelemetry_or_unused_whole_generations_import_none_of_it(
    blocker: str, backend: str
) -> None:
    """Absent (blocked either way), the client's telemetry is the no-op one; installed but
    imported by nothing else, it is there and stays dormant. Either way, a generate(), a
    budget's charges and an enqueue_many() import no ``opentelemetry`` module."""
    source = GENERATIONS.format(blocker=textwrap.dedent(BLOCKERS[blocker]))
    absent = blocker != "installed, unused"
    assert run(source, backend) == {"status": "succeeded", "absent": absent, "loaded": []}


def test_with_opentelemetry_installed_a_cold_start_imports_none_of_it() -> None:
    """Installed (as here), it is imported by a client's first call, not by ``import
    oxen_queue`` or ``AsyncClient()``: a CLI command or a serverless cold start pays nothing."""
    assert run(COLD_START) == {"installed": True, "loaded": []}


CONFIGURED_LATER = """
import json, sys
import anyio, httpx
from oxen_queue import AsyncClient
from oxen_queue.testing import EmulatorConfig, create_app

async def main():
    app = create_app(config=EmulatorConfig(time_scale=0.0, seed=1))
    async with AsyncClient(
        api_key="k", base_url="https://hub.oxen.test",
        transport=httpx.ASGITransport(app=app), completion="shared",
        shared_poll_interval=0.01,
    ) as client:
        first = await client.generate("gpt-image-2", prompt="Before", quality="low")
        loaded = [name for name in sys.modules if name.startswith("opentelemetry.")]
        # The application configures OpenTelemetry only now, as usual.
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        second = await client.generate("gpt-image-2", prompt="After", quality="low")
    ids = [span.attributes.get("gen_ai.response.id") for span in exporter.get_finished_spans()]
    return loaded, ids == [second.generation_id], first.generation_id in ids

print(json.dumps(anyio.run(main, backend=sys.argv[1])))
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_sdk_configured_after_the_client_was_made_traces_the_generations_after(
    backend: str,
) -> None:
    """No code change: the client made, a generation done without OpenTelemetry imported,
    then the application configures an SDK globally: the next generation has its span."""
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURED_LATER, backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[], True, False]
