"""The public API: explicit re-exports, a complete ``__all__``, documented, typed."""

from __future__ import annotations

import ast
import inspect
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import oxen_queue
import oxen_queue.asgi
import oxen_queue.testing

PACKAGES = [oxen_queue, oxen_queue.testing]
PUBLIC_MODULES = [*PACKAGES, oxen_queue.asgi]

# The public API, spelled out: adding or removing a name is a decision this list records.
EXPORTS = {
    "oxen_queue": {
        "DEFAULT",
        "TERMINAL_STATUSES",
        "APIConnectionError",
        "APIError",
        "APIResponseValidationError",
        "APIStatusError",
        "APITimeoutError",
        "AmbiguousEnqueueError",
        "AsyncClient",
        "AuthenticationError",
        "BadRequestError",
        "BatchItem",
        "Client",
        "ClientClosedError",
        "ClientStats",
        "CompletionEvent",
        "CompletionMode",
        "HttpBackend",
        "Default",
        "DownloadError",
        "Generation",
        "GenerationCancelledError",
        "GenerationError",
        "GenerationFailedError",
        "GenerationPage",
        "GenerationRecord",
        "GenerationStatus",
        "GenerationTimeoutError",
        "GptImage2Options",
        "GptImage2Params",
        "ImageResult",
        "ImagesResponse",
        "InvalidParamsError",
        "LedgerError",
        "Model",
        "NotFoundError",
        "OutputFormat",
        "OxenError",
        "PollPolicy",
        "PollTimeoutError",  # deprecated alias of GenerationTimeoutError
        "ProgressCallback",
        "Quality",
        "RateLimitError",
        "Resolution",
        "RetryPolicy",
        "ServerError",
        "SyncGeneration",
        "__version__",
        "as_completed",
        "run_batch",
        "SpendSummary",
        "BudgetExceededError",
        "CostUnknownError",
        "GenerationHistory",
        "ModelPricing",
        "PricingMethod",
        "VideoResult",
        "VideosResponse",
        "GptImage2EditOptions",
        "GptImage2EditParams",
        "KlingAspectRatio",
        "KlingDuration",
        "KlingV26ProTextToVideoOptions",
        "KlingV26ProTextToVideoParams",
        "SyncGenerationHistory",
    },
    # What users need to test their own code; the emulator's internals (its state, jobs,
    # users, catalog) stay in the private modules.
    "oxen_queue.testing": {
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
    },
    "oxen_queue.asgi": {"ClientDisconnectedError", "DisconnectAware", "cancel_on_disconnect"},
}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_lists_every_public_name_once(package: ModuleType) -> None:
    """Every name the package binds is exported, once (ruff's RUF022 keeps the order)."""
    public = {
        name
        for name, value in vars(package).items()
        # "@py_builtins" and co. come from pytest's assertion rewriting of plugin packages.
        if (not name.startswith(("_", "@")) or name == "__version__")
        and not inspect.ismodule(value)
        and name != "annotations"  # from __future__
    }
    exported = list(package.__all__)
    assert len(exported) == len(set(exported))
    assert set(exported) == public


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_exactly_the_intended_api(module: ModuleType) -> None:
    assert len(module.__all__) == len(set(module.__all__))
    assert set(module.__all__) == EXPORTS[module.__name__]
    assert all(hasattr(module, name) for name in module.__all__)


@pytest.mark.parametrize("package", PUBLIC_MODULES, ids=lambda p: p.__name__)
def test_every_exported_class_and_function_is_documented(package: ModuleType) -> None:
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{package.__name__}.{name} has no docstring"


def test_the_package_is_typed() -> None:
    assert (Path(oxen_queue.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("package", PUBLIC_MODULES, ids=lambda p: p.__name__)
def test_public_classes_and_functions_report_the_package_as_their_module(
    package: ModuleType,
) -> None:
    """As httpx's and anyio's do: ``oxen_queue.AsyncClient``, the import users write."""
    names = [
        name
        for name in package.__all__
        if inspect.isclass(getattr(package, name)) or inspect.isfunction(getattr(package, name))
    ]
    assert names
    for name in names:
        assert getattr(package, name).__module__ == package.__name__, name


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_public_classes_and_functions_are_defined_in_private_modules(
    package: ModuleType,
) -> None:
    """The module list is the architecture: ``__init__`` only re-exports."""
    assert package.__file__ is not None
    tree = ast.parse(Path(package.__file__).read_text())
    defined = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    assert defined == []


def test_public_classes_pickle_by_their_public_name() -> None:
    policy = oxen_queue.PollPolicy(initial=0.5, deadline=None)
    assert pickle.loads(pickle.dumps(policy)) == policy  # noqa: S301 (our own bytes)
    assert b"oxen_queue._" not in pickle.dumps(policy)


@pytest.mark.slow
def test_importing_the_sdk_or_the_plugin_loads_no_emulator_dependency() -> None:
    """The emulator's dependencies are an extra: the SDK (and the pytest plugin every test
    run loads) must work without them."""
    code = (
        "import sys, oxen_queue, oxen_queue._pytest_plugin; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'uvicorn', 'PIL', 'av'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_as_completed_is_a_function_of_the_package_not_a_method() -> None:
    """One way to do it, as ``asyncio.as_completed``: ``oxen_queue.as_completed(generations)``."""
    assert inspect.isfunction(oxen_queue.as_completed)
    assert not hasattr(oxen_queue.AsyncClient, "as_completed")
    assert not hasattr(oxen_queue.Client, "as_completed")


def test_the_api_reference_documents_every_public_name() -> None:
    """``docs/reference`` renders each public name (``::: name``), so it cannot drift."""
    reference = Path(__file__).resolve().parents[1] / "docs" / "reference"
    text = " ".join(page.read_text() for page in reference.glob("*.md"))
    documented = set(re.findall(r":::\s+([\w.]+)", text))
    public = {
        f"{module.__name__}.{name}"
        for module in (oxen_queue, oxen_queue.testing, oxen_queue.asgi)
        for name in module.__all__
        if name != "__version__"
    }
    assert public - documented == set()
