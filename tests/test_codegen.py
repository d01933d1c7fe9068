"""The code generated from the typed models and from AsyncClient (``.ci/codegen.py``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import oxen_queue
import oxen_queue._options
from oxen_queue import AsyncClient, Client
from oxen_queue._params import _TYPED, QUEUE_FIELDS, typed_defaults

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "codegen.py"


def codegen(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.slow
def test_the_generated_code_is_current() -> None:
    """Drift fails the suite as it fails CI: run `uv run python .ci/codegen.py` to mend it."""
    result = codegen("--check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the checkout's package and configuration, for the script to work on."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow
def test_check_reports_stale_code_writes_nothing_and_a_run_mends_it(tree: Path) -> None:
    """A new field of a typed model and a new AsyncClient method: both are stale to --check
    (with a diff, nothing written); a run writes them; --check then passes."""
    package = tree / "src" / "oxen_queue"
    edit(
        package / "_params.py",
        '    output_format: OutputFormat = "png"\n',
        '    output_format: OutputFormat = "png"\n'
        '    background: Literal["auto", "opaque"] | None = None\n',
    )
    edit(
        package / "_client.py",
        "    # -- results --",
        "    async def newest(self, *, model: str | None = None) -> list[Generation]:\n"
        '        """The newest generations."""\n'
        "        return []\n\n"
        "    # -- results --",
    )
    before = {p: p.read_text() for p in package.glob("_*.py")}

    stale = codegen("--check", root=tree)
    assert stale.returncode == 1, stale.stderr
    assert "+    background: Literal[" in stale.stdout  # in GptImage2Options
    assert "+    def newest(" in stale.stdout
    assert "-> list[SyncGeneration]:" in stale.stdout
    assert "are stale: run `uv run python .ci/codegen.py`" in stale.stdout
    assert {p: p.read_text() for p in package.glob("_*.py")} == before

    written = codegen(root=tree)
    assert written.returncode == 0, written.stdout + written.stderr
    options = (package / "_options.py").read_text()
    assert 'background: Literal["auto", "opaque"]\n' in options  # `| None` reduced
    assert "no ``background``" in options
    client = (package / "_sync_client.py").read_text()
    assert "return [\n" in client
    assert "self._bridge.run(self._async.newest(model=model))" in client
    assert codegen("--check", root=tree).returncode == 0


@pytest.mark.slow
def test_a_return_type_without_a_blocking_form_is_refused_by_name(tree: Path) -> None:
    """The script stops rather than guess how a Generation inside another type is blocked."""
    edit(
        tree / "src" / "oxen_queue" / "_client.py",
        "    # -- results --",
        "    async def by_id(self) -> dict[str, Generation]:\n"
        '        """Each generation, by id."""\n'
        "        return {}\n\n"
        "    # -- results --",
    )
    result = codegen("--check", root=tree)
    assert result.returncode == 2
    assert "AsyncClient.by_id: returns dict[str, Generation]" in result.stderr
    assert "RETURNS" in result.stderr


def test_each_options_lists_its_models_optional_fields_and_the_queues() -> None:
    """The TypedDicts agree with pydantic's own reading of each *Params model: its optional
    fields (not its required ones) and the queue's, none required, the defaults in the doc."""
    assert len(oxen_queue._options.__all__) == len(_TYPED)
    for model, params in _TYPED.items():
        options = getattr(oxen_queue._options, params.__name__.removesuffix("Params") + "Options")
        optional = {name for name, f in params.model_fields.items() if not f.is_required()}
        assert set(options.__annotations__) == optional | QUEUE_FIELDS, model
        assert options.__required_keys__ == frozenset()
        doc = options.__doc__ or ""
        assert f"``{model}``" in doc
        for name, value in typed_defaults(model).items():
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            assert f"``{name}={shown}``" in doc, (model, name)


def test_each_typed_model_has_one_overload_per_method_on_both_clients() -> None:
    """``enqueue`` and ``generate``: one overload per typed model, then the catch-all."""
    expected = [f"Literal[{model!r}]" for model in _TYPED] + ["str"]
    for cls in (AsyncClient, Client):
        for name in ("enqueue", "generate"):
            found = [
                str(overload.__annotations__["model"])
                for overload in typing.get_overloads(getattr(cls, name))
            ]
            assert found == expected, (cls, name)


def test_each_options_is_exported_and_documented() -> None:
    reference = (ROOT / "docs" / "reference" / "params.md").read_text()
    for name in oxen_queue._options.__all__:
        assert name in oxen_queue.__all__
        assert re.search(rf"^::: oxen_queue\.{name}$", reference, re.MULTILINE), name


def test_generated_files_say_so_and_name_the_script() -> None:
    for name in ("_options.py", "_sync_client.py"):
        head = (ROOT / "src" / "oxen_queue" / name).read_text().splitlines()[0]
        assert head.startswith("# Generated by .ci/codegen.py"), name
