"""Fuzz target for image hashing (`tidings.media.pdq.hash_image`): untrusted image bytes, as a
reported attachment's plaintext or an image the client is about to send."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

from PIL import Image, ImageDraw

from tidings.media.pdq import hash_image

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]


def _seed(fmt: str) -> bytes:
    """A small image with some structure, so that mutations reach the pixel decoders."""
    image = Image.new("RGB", (48, 32), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, 30, 20), fill="navy")
    draw.ellipse((20, 10, 44, 30), fill="orange")
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def media_targets() -> Iterator[TargetSpec]:
    yield "media.hash_image", hash_image, [_seed("PNG"), _seed("JPEG"), _seed("GIF")]
