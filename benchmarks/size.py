"""The library's size: hand-written lines and lines of code, beside a baseline revision.

Counts ``src/oxen_queue`` without ``testing/`` (the emulator), ``_cli/`` (the console script)
and ``_otel/`` (the otel extra, counted apart), as issue 15 measured it. Generated code (the
files and blocks ``.ci/codegen.py`` writes) is counted apart. A line of code is one that is not
blank, not a comment and not part of a docstring.

Run::

    uv run python benchmarks/size.py                      # this checkout
    uv run python benchmarks/size.py --against 27f6011~1  # beside the tree before issue 14
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APART = {"testing", "_cli", "_otel"}
GENERATED_FILES = {"_sync_client.py", "_options.py"}


@dataclass
class Size:
    lines: int = 0
    code: int = 0
    generated: int = 0
    otel: int = 0


def _docstring_lines(source: str) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and node.end_lineno is not None
        ):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def measure(package: Path) -> Size:
    """The size of the package at ``package`` (see the module)."""
    size = Size()
    for path in sorted(package.rglob("*.py")):
        part = path.relative_to(package).parts[0]
        lines = path.read_text(encoding="utf-8").splitlines()
        if part == "_otel":
            size.otel += len(lines)
            continue
        if part in APART:
            continue
        if path.name in GENERATED_FILES:
            size.generated += len(lines)
            continue
        kept: list[str] = []
        inside = False
        for line in lines:
            inside = inside or "--- begin generated" in line
            if inside:
                size.generated += 1
            else:
                kept.append(line)
            inside = inside and "--- end generated" not in line
        size.lines += len(kept)
        docstrings = _docstring_lines("\n".join(kept))
        size.code += sum(
            1
            for number, line in enumerate(kept, 1)
            if line.strip() and not line.strip().startswith("#") and number not in docstrings
        )
    return size


def measure_revision(revision: str) -> Size:
    """The size of ``src/oxen_queue`` at a git revision of this checkout."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src/oxen_queue"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory() as directory:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        return measure(Path(directory) / "src" / "oxen_queue")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="a git revision to measure beside")
    args = parser.parse_args()
    rows = [("this checkout", measure(ROOT / "src" / "oxen_queue"))]
    if args.against:
        rows.insert(0, (args.against, measure_revision(args.against)))
    print(f"{'tree':<16} {'hand-written':>12} {'of code':>8} {'generated':>9} {'otel':>6}")
    for name, size in rows:
        print(f"{name:<16} {size.lines:>12,} {size.code:>8,} {size.generated:>9,} {size.otel:>6,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
