"""Real result files: images (Pillow) and MP4 videos (PyAV), rendered lazily and cached.

An image has exactly the size and format the parameters ask for and shows the prompt, over a
gradient and shapes seeded from the generation id (so two results differ). An edit is
composed from its input images instead: they are decoded, tiled over the canvas, tinted (or,
with a mask, tinted where the mask allows), and the prompt is drawn on top. A video is a small
H.264 MP4 of the requested length and aspect ratio, at 12 frames per second. Pillow and PyAV
are imported on first use only: importing the emulator stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import random
import textwrap
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread

from ._jobs import Artifact

if TYPE_CHECKING:
    from PIL import Image, ImageFont

__all__ = ["MediaCache", "compose_image", "render_artifact", "render_image", "render_video"]

_VIDEO_FPS: Final = 12
_SAVE_OPTIONS: Final[dict[str, dict[str, int]]] = {
    # compress_level=1: a 3840x2160 PNG in well under a second; size matters less here.
    "png": {"compress_level": 1},
    "jpeg": {"quality": 85},
    "webp": {"quality": 80, "method": 0},
}


def render_artifact(
    artifact: Artifact, images: Sequence[bytes] = (), mask: bytes | None = None
) -> bytes:
    """The bytes of a result file.

    Args:
        artifact: The file to render.
        images: The encoded files of ``artifact.inputs.images`` (an edit composes from them).
        mask: The encoded file of ``artifact.inputs.mask``.
    """
    output = artifact.output
    seed = int.from_bytes(hashlib.sha256(artifact.generation_id.encode()).digest()[:8], "big")
    caption = f"{artifact.model.id} \u00b7 {output.width}x{output.height} \u00b7 oxen emulator"
    if output.media_type == "video":
        return render_video(
            output.width,
            output.height,
            seconds=output.seconds or 1.0,
            prompt=artifact.prompt,
            caption=caption,
            seed=seed,
        )
    fmt = {"png": "png", "jpg": "jpeg", "webp": "webp"}[output.extension]
    if images:
        return compose_image(
            output.width,
            output.height,
            fmt=fmt,
            images=images,
            mask=mask,
            prompt=artifact.prompt,
            caption=caption,
            seed=seed,
        )
    return render_image(
        output.width, output.height, fmt=fmt, prompt=artifact.prompt, caption=caption, seed=seed
    )


def render_image(
    width: int, height: int, *, fmt: str, prompt: str, caption: str = "", seed: int = 0
) -> bytes:
    """Render an image file.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        fmt: ``"png"``, ``"jpeg"`` or ``"webp"``.
        prompt: Text to draw, wrapped.
        caption: A small line of text under the prompt.
        seed: Seeds the colours and shapes.

    Returns:
        The encoded file.
    """
    image = _picture(width, height, prompt=prompt, caption=caption, seed=seed)
    return _encode(image, fmt)


def compose_image(
    width: int,
    height: int,
    *,
    fmt: str,
    images: Sequence[bytes],
    mask: bytes | None = None,
    prompt: str,
    caption: str = "",
    seed: int = 0,
) -> bytes:
    """Compose an edit's image from its inputs.

    The inputs are tiled in a grid (one fills the canvas; two sit side by side; ...), each
    scaled and cropped to its cell. A tint seeded from ``seed`` is then blended over a quarter
    of every pixel, or, with a mask, half of the pixels the mask allows to change: where it is
    transparent or, if it has no transparency, white. The prompt is drawn on top.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        fmt: ``"png"``, ``"jpeg"`` or ``"webp"``.
        images: The encoded input images (at least one).
        mask: The encoded mask image, if any.
        prompt: Text to draw, wrapped.
        caption: A small line of text under the prompt.
        seed: Seeds the tint.

    Returns:
        The encoded file.

    Raises:
        ValueError: No input image.
    """
    from PIL import Image, ImageOps

    if not images:
        raise ValueError("an edit needs at least one input image")
    canvas = Image.new("RGB", (width, height))
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    for index, data in enumerate(images):
        row, column = divmod(index, columns)
        box = (
            column * width // columns,
            row * height // rows,
            (column + 1) * width // columns,
            (row + 1) * height // rows,
        )
        with Image.open(io.BytesIO(data)) as source:
            cell = ImageOps.fit(source.convert("RGB"), (box[2] - box[0], box[3] - box[1]))
        canvas.paste(cell, box[:2])
    rng = random.Random(seed)
    tint = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    if mask is None:
        canvas = Image.blend(canvas, tint, 0.25)
    else:
        with Image.open(io.BytesIO(mask)) as source:
            if "A" in source.getbands():
                editable = ImageOps.invert(source.getchannel("A"))
            else:
                editable = source.convert("L")
            editable = editable.resize((width, height))
        canvas = Image.composite(Image.blend(canvas, tint, 0.5), canvas, editable)
    _draw_prompt(canvas, prompt=prompt, caption=caption)
    return _encode(canvas, fmt)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **_SAVE_OPTIONS[fmt])
    return buffer.getvalue()


def render_video(
    width: int, height: int, *, seconds: float, prompt: str, caption: str = "", seed: int = 0
) -> bytes:
    """Render an MP4 (H.264, or MPEG-4 Part 2 if this PyAV lacks an H.264 encoder).

    Args:
        width: Width in pixels (even).
        height: Height in pixels (even).
        seconds: Length of the video.
        prompt: Text to draw on every frame.
        caption: A small line of text under the prompt.
        seed: Seeds the colours.

    Returns:
        The encoded file.
    """
    import av
    from PIL import ImageDraw

    base = _picture(width, height, prompt=prompt, caption=caption, seed=seed, shapes=False)
    base = base.convert("RGBA")  # the layout VideoFrame.from_bytes copies
    frames = max(1, round(seconds * _VIDEO_FPS))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(_video_codec(), rate=_VIDEO_FPS)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        bar = max(4, height // 12)
        for index in range(frames):
            frame_image = base.copy()
            draw = ImageDraw.Draw(frame_image)
            x = index * (width - bar) // max(1, frames - 1)
            draw.rectangle((x, height - bar, x + bar, height), fill=(255, 200, 0, 255))
            frame = av.VideoFrame.from_bytes(frame_image.tobytes(), width, height, format="rgba")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@functools.cache
def _video_codec() -> str:
    import av

    for name in ("libx264", "libopenh264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: S112 - PyAV raises several types for a missing encoder
            continue
        return name
    raise RuntimeError("PyAV has no H.264 or MPEG-4 encoder")


def _picture(
    width: int, height: int, *, prompt: str, caption: str, seed: int, shapes: bool = True
) -> Image.Image:
    from PIL import Image, ImageDraw, ImageOps

    rng = random.Random(seed)
    dark = (rng.randrange(0, 90), rng.randrange(0, 90), rng.randrange(40, 140))
    light = (rng.randrange(150, 256), rng.randrange(110, 220), rng.randrange(60, 200))
    gradient = Image.linear_gradient("L").resize((width, height))
    image = ImageOps.colorize(gradient, black=dark, white=light)
    draw = ImageDraw.Draw(image)
    if shapes:
        for _ in range(6):
            radius = rng.randrange(
                max(2, min(width, height) // 12), max(3, min(width, height) // 4)
            )
            cx, cy = rng.randrange(width), rng.randrange(height)
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    _draw_prompt(image, prompt=prompt, caption=caption)
    return image


def _draw_prompt(image: Image.Image, *, prompt: str, caption: str) -> None:
    """Draw the prompt, wrapped, white on a black box, and the caption under it."""
    from PIL import ImageDraw

    width, height = image.size
    draw = ImageDraw.Draw(image)
    size = max(10, min(width // 28, height // 12))
    font = _font(size)
    chars = max(8, int(width * 0.8 / (size * 0.55)))
    max_lines = max(1, int(height * 0.6 / (size * 1.3)))
    lines = textwrap.wrap(prompt, width=chars)[:max_lines] or [" "]
    line_height = int(size * 1.3)
    top = (height - line_height * (len(lines) + 1)) // 2
    left = width // 10
    draw.rectangle(
        (
            left - size // 2,
            top - size // 2,
            width - left + size // 2,
            top + line_height * (len(lines) + 1),
        ),
        fill=(0, 0, 0),
    )
    for index, line in enumerate(lines):
        draw.text((left, top + index * line_height), line, fill=(255, 255, 255), font=font)
    if caption:
        small = _font(max(8, size // 2))
        draw.text((left, top + len(lines) * line_height), caption, fill=(200, 200, 200), font=small)


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


class MediaCache:
    """Rendered files, least recently used evicted past a byte budget.

    Rendering runs in a worker thread; concurrent requests for the same file render it once.
    An edit's input files are got (rendered if need be) before the edit itself: inputs are
    always older files, so the per-file locks cannot deadlock.

    Args:
        max_bytes: The budget, in bytes.
    """

    def __init__(self, *, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, artifact: Artifact) -> bytes:
        """The file's bytes, rendered on first use."""
        key = artifact.generation_id
        data = self._hit(key)
        if data is not None:
            return data
        lock = self._locks.setdefault(key, anyio.Lock())
        try:
            async with lock:
                data = self._hit(key)
                if data is None:
                    # An edit's inputs are files of this emulator: "download" them from
                    # here (rendering them, if they were evicted, as they were first made).
                    inputs = artifact.inputs
                    images = [await self.get(image) for image in inputs.images]
                    mask = None if inputs.mask is None else await self.get(inputs.mask)
                    data = await anyio.to_thread.run_sync(render_artifact, artifact, images, mask)
                    self._store(key, data)
                return data
        finally:
            if not lock.statistics().tasks_waiting:
                self._locks.pop(key, None)

    def clear(self) -> None:
        """Forget every rendered file."""
        self._items.clear()
        self._bytes = 0

    def _hit(self, key: str) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def _store(self, key: str, data: bytes) -> None:
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes and len(self._items) > 1:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)
