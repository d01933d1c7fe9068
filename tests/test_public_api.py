"""The public API: explicit re-exports, a complete ``__all__``, documented, typed."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import oxen_queue
import oxen_queue.testing

PACKAGES = [oxen_queue, oxen_queue.testing]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_lists_every_public_name_once(package: ModuleType) -> None:
    """Every name the package binds is exported, once (ruff's RUF022 keeps the order)."""
    public = {
        name
        for name, value in vars(package).items()
        if (not name.startswith("_") or name == "__version__")
        and not inspect.ismodule(value)
        and name != "annotations"  # from __future__
    }
    exported = list(package.__all__)
    assert len(exported) == len(set(exported))
    assert set(exported) == public


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_exported_class_and_function_is_documented(package: ModuleType) -> None:
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{package.__name__}.{name} has no docstring"


def test_the_package_is_typed() -> None:
    assert (Path(oxen_queue.__file__).parent / "py.typed").is_file()


def test_public_classes_and_functions_live_in_private_modules() -> None:
    """The module list is the architecture; users import from the package only."""
    for name in oxen_queue.__all__:
        obj = getattr(oxen_queue, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.split(".")[1].startswith("_"), name


def test_importing_the_sdk_or_the_plugin_loads_no_emulator_dependency() -> None:
    """The emulator's dependencies are an extra: the SDK (and the pytest plugin every test
    run loads) must work without them."""
    code = (
        "import sys, oxen_queue, oxen_queue.testing._pytest_plugin; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'uvicorn', 'PIL', 'av'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
