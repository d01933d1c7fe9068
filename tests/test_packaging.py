"""What an installed package promises before any call: a silent import, on every dependency
version it accepts (CI runs this file on the lowest declared versions too), the install line
where the emulator extra is missing, and a source distribution of the project's own files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -W error -c code`` in a fresh interpreter, its output captured."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "modules",
    [
        "oxen_queue",
        "oxen_queue.testing",
        "oxen_queue._pytest_plugin",
        "oxen_queue._cli, oxen_queue._cli._main",
    ],
)
def test_importing_the_package_is_silent_with_warnings_as_errors(modules: str) -> None:
    """``python -W error -c "import ..."`` succeeds and prints nothing: no DeprecationWarning,
    no pydantic warning about the ``model_`` namespace (pydantic 2.7 warns for ``model_name``
    unless the models say otherwise)."""
    result = _python(f"import {modules}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


# --- the emulator extra ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["uvicorn", "PIL", "av"])
def test_importing_the_emulator_without_its_extra_raises_the_install_line(missing: str) -> None:
    """Without one of the emulator extra's modules, ``from oxen_queue.testing import
    use_emulator`` (or anything of the package) raises ``ModuleNotFoundError``: one line
    naming what is missing, with ``pip install 'oxen-queue[emulator]'``; its ``name`` is the
    module. The SDK and the pytest plugin still import."""
    code = (
        f"import sys, json\nsys.modules[{missing!r}] = None\n"
        "import oxen_queue, oxen_queue._pytest_plugin\n"
        "try:\n"
        "    from oxen_queue.testing import use_emulator\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(json.dumps({'message': str(exc), 'name': exc.name}))\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    error = json.loads(result.stdout)
    assert error["name"] == missing
    assert "\n" not in error["message"]
    assert error["message"].startswith("the emulator needs the 'emulator' extra (")
    assert "pip install 'oxen-queue[emulator]'" in error["message"]


# --- the parquet extra ----------------------------------------------------------------------


@pytest.mark.slow
def test_pyarrow_is_the_parquet_extras_alone_and_the_command_line_does_not_import_it() -> None:
    """pyarrow comes with the ``parquet`` extra, never as a core dependency, and importing
    the command line (its parser, its commands, the dataset writer) loads none of it: only
    ``batch --metadata parquet`` does."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert [name.split(">")[0] for name in project["optional-dependencies"]["parquet"]] == [
        "pyarrow"
    ]
    assert not [name for name in project["dependencies"] if name.startswith("pyarrow")]
    code = (
        "import sys\n"
        "import oxen_queue._cli._main, oxen_queue._cli._dataset\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'pyarrow'))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- the source distribution -----------------------------------------------------------------

_LEFT_BY_RUNS = {
    "oxen-demo/manifest.jsonl": b'{"line": 1}\n',
    "oxen-demo/ledger.db": b"SQLite format 3\0",
    "oxen-demo/ledger.db-wal": b"",
    "oxen-demo/0b6f.png": b"\x89PNG",
    "oxen-output/manifest.jsonl": b"",
    "examples/my-run/manifest.jsonl": b"",
    "examples/my-run/ledger.db": b"",
}


def _checkout_copy(destination: Path) -> None:
    """The checkout's files as git sees them (tracked, and new ones it does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.mark.slow
def test_the_sdist_holds_the_project_and_nothing_a_demo_left_behind(tmp_path: Path) -> None:
    """The README in order (``oxen-queue demo``, then ``uv build``), in a copy of the
    checkout: the sdist holds the sources, tests, examples and docs, and none of what runs
    left (oxen-demo/, oxen-output/, a manifest or ledger anywhere); the wheel built from it
    carries the demo's prompts."""
    if shutil.which("uv") is None or shutil.which("git") is None:
        pytest.skip("needs uv and git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    project = tmp_path / "project"
    _checkout_copy(project)
    for name, data in _LEFT_BY_RUNS.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(data)
    dist = tmp_path / "dist"
    command = ["uv", "build", "--quiet", "--out-dir", str(dist)]
    # The cache holds hatchling once the project is installed; online only if it does not.
    built = subprocess.run(
        [*command, "--offline"], cwd=project, capture_output=True, timeout=300, check=False
    )
    if built.returncode != 0:
        subprocess.run(command, cwd=project, capture_output=True, timeout=300, check=True)

    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {member.name.split("/", 1)[1] for member in archive.getmembers() if member.isfile()}
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        wheel_names = set(archive.namelist())

    assert not {name for name in names if name in _LEFT_BY_RUNS or "oxen-demo" in name}
    assert not {name for name in names if Path(name).name in ("manifest.jsonl", "ledger.db")}
    for needed in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "uv.lock",
        "src/oxen_queue/__init__.py",
        "src/oxen_queue/py.typed",
        "examples/prompts.txt",
        "tests/conftest.py",
        "docs/index.md",
    ):
        assert needed in names, needed
    assert "oxen_queue/_cli/prompts.txt" in wheel_names
