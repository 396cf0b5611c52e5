"""PDQ perceptual hashes of image bytes (Meta's PDQ through `pdqhash`, decoding through Pillow).

A PDQ hash is 256 bits; two images match when the Hamming distance of their hashes is at most
`PDQ_MATCH_DISTANCE`, and a hash whose quality is below `PDQ_MIN_QUALITY` (flat or featureless
images) is too unreliable to match on. Both are the industry's conventions (ThreatExchange,
HMA) and have their one home here.

Bit order: the 256 bits are written most significant first, as Meta's reference implementations
print them: byte 0 holds bits 255..248 (the high bits of the reference's 16-bit word 15), so
``PdqHash.hex`` is the 64-hex-digit form found in hash banks and in Meta's reference hashes
(`bench/pdq_reference.py` checks it against Meta's reference table). `pdqhash` returns its
bits in that order already.

Decoding: Pillow, restricted to `IMAGE_FORMATS`, with the byte and pixel limits checked before
any pixel is decoded. The image is first scaled to fit a `PDQ_PRESCALE_SIDE` square (Pillow's
``thumbnail``): Meta's reference hashes then come out within 0-2 bits (hashing at full size gives
0-12 bits on the same files, so the reference evidently prescales the same way), and the memory
and time hashing takes are bounded.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from string import hexdigits
from typing import Final

import numpy as np
import pdqhash
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from tidings.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageTruncatedError,
    PdqHashFormatError,
)
from tidings.wire.pdq import (
    PDQ_BYTES,
    PDQ_HEX_DIGITS,
    PDQ_MATCH_DISTANCE,
    PDQ_MAX_QUALITY,
    PDQ_MIN_QUALITY,
)

MAX_IMAGE_BYTES: Final = 64 * 1024 * 1024
"""Encoded images larger than this are refused before decoding."""
MAX_IMAGE_PIXELS: Final = 50_000_000
"""Decoded width x height above this is refused before decoding (decompression bombs): above a
48-megapixel phone photograph, below Pillow's own 89-megapixel warning."""
PDQ_PRESCALE_SIDE: Final = 512
"""Images are scaled to fit this square before hashing (see the module docstring)."""
_DECODERS: Final = (
    JpegImagePlugin.JpegImageFile,  # also opens the multi-picture (MPO) JPEGs of phone cameras
    PngImagePlugin.PngImageFile,
    GifImagePlugin.GifImageFile,
    WebPImagePlugin.WebPImageFile,
    BmpImagePlugin.BmpImageFile,
    TiffImagePlugin.TiffImageFile,
)
IMAGE_FORMATS: Final = tuple(decoder.format for decoder in _DECODERS)
"""The Pillow decoders tried (importing their plugins registers them); others are never reached
by untrusted bytes."""

DIHEDRAL_TRANSFORMS: Final = (
    "original",
    "rotate_90",
    "rotate_180",
    "rotate_270",
    "flip_top_bottom",
    "flip_left_right",
    "transpose",
    "transverse",
)
"""What `dihedral_hashes` returns at each index, in `pdqhash.compute_dihedral`'s order (the C++
names: original, rotate 90/180/270, flip X, flip Y, flip +1, flip -1): the hash of the image
after the `PIL.Image.Transpose` of that name (rotations counter-clockwise; ``transpose`` mirrors
across the main diagonal, ``transverse`` across the other). tests/media/test_pdq.py checks each
index against Pillow's transform of a photograph."""


@dataclass(frozen=True, slots=True)
class PdqHash:
    """A 256-bit PDQ hash and, when known, its quality (0-100).

    ``bits`` is 32 bytes, most significant bit first (see the module docstring). ``quality`` is
    None for a hash read from a list that does not carry one.

    Raises:
        PdqHashFormatError: ``bits`` is not 32 bytes, or ``quality`` is outside 0-100.
    """

    bits: bytes
    quality: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bits, bytes) or len(self.bits) != PDQ_BYTES:
            raise PdqHashFormatError(f"a PDQ hash is {PDQ_BYTES} bytes")
        if self.quality is not None and not 0 <= self.quality <= PDQ_MAX_QUALITY:
            raise PdqHashFormatError(f"a PDQ quality is 0-{PDQ_MAX_QUALITY}")

    @classmethod
    def from_hex(cls, text: str, quality: int | None = None) -> PdqHash:
        """The hash written as 64 hex digits (either case) in ``text``.

        Raises:
            PdqHashFormatError: not exactly 64 hex digits, or a quality outside 0-100.
        """
        if len(text) != PDQ_HEX_DIGITS or not all(c in hexdigits for c in text):
            raise PdqHashFormatError(f"a PDQ hash is {PDQ_HEX_DIGITS} hex digits")
        return cls(bytes.fromhex(text), quality)

    @property
    def hex(self) -> str:
        """The 64 lower-case hex digits, as hash banks write them."""
        return self.bits.hex()

    def __str__(self) -> str:
        return self.hex

    def distance(self, other: PdqHash) -> int:
        """The Hamming distance (0-256) between this hash and ``other``."""
        return (int.from_bytes(self.bits) ^ int.from_bytes(other.bits)).bit_count()

    def matches(self, other: PdqHash) -> bool:
        """Whether ``other`` is within `PDQ_MATCH_DISTANCE` of this hash."""
        return self.distance(other) <= PDQ_MATCH_DISTANCE

    @property
    def is_usable(self) -> bool:
        """False when the quality is known and below `PDQ_MIN_QUALITY`; such a hash must not be
        matched or listed. An unknown quality is not held against the hash."""
        return self.quality is None or self.quality >= PDQ_MIN_QUALITY


def hash_image(data: bytes) -> PdqHash:
    """The PDQ hash and quality of the image encoded in ``data``.

    Animated images are hashed by their first frame; EXIF orientation is not applied (as in the
    reference implementation; `dihedral_hashes` covers rotated copies).

    Raises:
        ImageTooLargeError: more than `MAX_IMAGE_BYTES`, or more than `MAX_IMAGE_PIXELS` pixels.
        ImageTruncatedError: the data ends before the image is complete.
        ImageDecodeError: not an image in one of `IMAGE_FORMATS`, or corrupt.
    """
    vector, quality = pdqhash.compute(_prepared_pixels(data))
    return _from_vector(vector, quality)


def dihedral_hashes(data: bytes) -> tuple[PdqHash, ...]:
    """The 8 PDQ hashes of the image in ``data`` under the dihedral transforms (rotations by
    0/90/180/270 degrees and the four mirrorings), in the order of `DIHEDRAL_TRANSFORMS`; index
    0 is `hash_image`'s hash. Querying a list with all 8 finds rotated and mirrored copies.

    Raises:
        The errors of `hash_image`.
    """
    vectors, quality = pdqhash.compute_dihedral(_prepared_pixels(data))
    return tuple(_from_vector(vector, quality) for vector in vectors)


_PIXEL_TRANSFORMS: Final[tuple[Callable[[np.ndarray], np.ndarray], ...]] = (
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3),
    lambda a: a[::-1],
    lambda a: a[:, ::-1],
    lambda a: a.transpose(1, 0, 2),
    lambda a: np.rot90(a, 2).transpose(1, 0, 2),
)
"""Each of `DIHEDRAL_TRANSFORMS` on a (height x width x 3) pixel array, as Pillow's
``Image.transpose`` does it (tests/media/test_pdq.py compares them pixel for pixel)."""


def oriented_hashes(data: bytes, transforms: Sequence[int]) -> tuple[PdqHash, ...]:
    """The PDQ hashes of the image in ``data`` turned in pixel space by each transform in
    ``transforms`` (indices into `DIHEDRAL_TRANSFORMS`), in that order.

    Unlike `dihedral_hashes`, whose seven other hashes are transforms of the image's own DCT,
    each hash here is PDQ computed afresh on the turned pixels, so it is exactly the hash a
    turned copy of the image gets (docs/detection.md, "Orientation hashes: pixel space"). The
    image is decoded once; each extra orientation costs one more PDQ computation.

    Raises:
        ValueError: an index outside 0..7 (a programming error, never input).
        The errors of `hash_image`.
    """
    if not all(0 <= t < len(_PIXEL_TRANSFORMS) for t in transforms):
        raise ValueError("dihedral transform indices are 0..7")
    pixels = _prepared_pixels(data)
    out = []
    for t in transforms:
        vector, quality = pdqhash.compute(np.ascontiguousarray(_PIXEL_TRANSFORMS[t](pixels)))
        out.append(_from_vector(vector, quality))
    return tuple(out)


def _from_vector(vector: np.ndarray, quality: int) -> PdqHash:
    # pdqhash yields 256 ints (0/1) most significant first; packbits keeps that order.
    return PdqHash(np.packbits(vector.astype(np.uint8)).tobytes(), int(quality))


def _prepared_pixels(data: bytes) -> np.ndarray:
    """The image in ``data`` decoded, scaled to fit `PDQ_PRESCALE_SIDE` and as an RGB array
    (height x width x 3, uint8), which is what `pdqhash` takes."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(f"images over {MAX_IMAGE_BYTES} bytes are not hashed")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise ImageTooLargeError(f"images over {MAX_IMAGE_PIXELS} pixels are not hashed") from None
    except Exception as exc:  # every decoder failure: see _decode_failure
        raise _decode_failure(exc) from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeError(f"images over {MAX_IMAGE_PIXELS} pixels are not hashed")
        if width < 1 or height < 1:
            raise ImageDecodeError("the image has no pixels")
        try:
            # JPEG only: decode at a reduced DCT scale that still covers twice the target, as
            # thumbnail() itself would; a no-op for other formats.
            image.draft("RGB", (2 * PDQ_PRESCALE_SIDE, 2 * PDQ_PRESCALE_SIDE))
            # Convert first: thumbnail() resamples palette and 1-bit images with NEAREST.
            rgb = image.convert("RGB")
            rgb.thumbnail((PDQ_PRESCALE_SIDE, PDQ_PRESCALE_SIDE))
            return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        except Exception as exc:  # every decoder failure: see _decode_failure
            raise _decode_failure(exc) from None


def _decode_failure(exc: Exception) -> ImageDecodeError | ImageTruncatedError:
    """The typed error for an exception Pillow raised while decoding untrusted bytes.

    Pillow's decoders answer corrupt input with a wide range of built-in exceptions (OSError,
    ValueError, SyntaxError, EOFError, struct.error, IndexError, ...), and which one is not part
    of its contract, so every one of them means "not a decodable image". Pillow reports a short
    read as an OSError whose message says "truncated".
    """
    if isinstance(exc, MemoryError):
        raise exc
    if isinstance(exc, OSError | EOFError) and "truncated" in str(exc).lower():
        return ImageTruncatedError("the image data is truncated")
    return ImageDecodeError("not a decodable image in a supported format")
