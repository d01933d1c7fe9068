"""A first program against the installed wheel, as a new user would write it: enqueue one
image on the embedded emulator, await it, download it, and open it.

CI runs it with the interpreter of a fresh virtual environment where only the wheel (with its
``emulator`` and ``cli`` extras) is installed, from a directory outside the checkout, so that
nothing of the source tree can stand in for what the wheel lacks::

    python tests/wheel_smoke.py
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

warnings.simplefilter("error")  # an import or a call that warns fails the smoke test

import anyio  # noqa: E402 - after the warnings filter, on purpose
from PIL import Image  # noqa: E402

import oxen_queue  # noqa: E402
from oxen_queue import AsyncClient  # noqa: E402
from oxen_queue.testing import Emulator, EmulatorConfig  # noqa: E402


async def generate_one(base_url: str, out: Path) -> Path:
    async with AsyncClient(base_url=base_url, api_key="smoke-test") as client:
        generation = await client.enqueue(
            "gpt-image-2", prompt="A smoke-tested ox", resolution="1024x768", output_format="jpeg"
        )
        record = await generation
        return await client.download(record, out)


def main() -> int:
    package = Path(oxen_queue.__file__).resolve().parent
    if "site-packages" not in package.parts:
        print(f"wheel smoke: oxen_queue comes from {package}, not an install", file=sys.stderr)
        return 1
    with (
        Emulator(config=EmulatorConfig(time_scale=0.01)) as emulator,
        tempfile.TemporaryDirectory() as scratch,
    ):
        path = anyio.run(generate_one, emulator.base_url, Path(scratch))
        with Image.open(path) as image:
            image.verify()
            size, kind = image.size, image.format
    if (size, kind) != ((1024, 768), "JPEG"):
        print(f"wheel smoke: got a {kind} of {size}, not a 1024x768 JPEG", file=sys.stderr)
        return 1
    print(f"wheel smoke: oxen-queue {oxen_queue.__version__} from {package}: saved and opened")
    print(f"  {path.name}, a {size[0]}x{size[1]} {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
