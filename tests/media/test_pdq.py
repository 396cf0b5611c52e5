"""PDQ hashing of image bytes: Meta's reference hashes, the bit order, the dihedral variants,
the typed errors for everything that is not a hashable image, and exact digests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pdqhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tidings.errors import (
    DecodeError,
    ImageDecodeError,
    ImageTooLargeError,
    ImageTruncatedError,
    PdqHashFormatError,
    TidingsError,
)
from tidings.media import pdq
from tidings.media.digests import content_digests, parse_digest
from tidings.media.pdq import PdqHash, dihedral_hashes, hash_image

PHOTO_NAMES = ("chelsea", "coffee", "rocket", "astronaut")
"""Real photographs bundled with scikit-image (a test dependency; nothing is copied into this
repository). Meta's own reference images and hashes are checked by a plain command instead,
`bench/pdq_reference.py`, because they are not ours to commit."""


def _photo_jpeg(name: str) -> bytes:
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    out = io.BytesIO()
    Image.fromarray(pixels[..., :3]).save(out, "JPEG", quality=92)
    return out.getvalue()


ORIGINAL = _photo_jpeg("coffee")
"""A 600 x 400 photograph as a JPEG file."""


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixel data (a bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- Meta's reference hashes and the bit order --------------------------------------------------


def _edits(photo: Image.Image) -> dict[str, Image.Image]:
    """The reference set's kinds of edit, made here: blur, contrast, saturation, sharpening,
    shrinking (all keep the picture; none moves it)."""
    from PIL import ImageEnhance, ImageFilter

    w, h = photo.size
    return {
        "blur-a-little": photo.filter(ImageFilter.GaussianBlur(1)),
        "blur-a-lot": photo.filter(ImageFilter.GaussianBlur(4)),
        "high-contrast": ImageEnhance.Contrast(photo).enhance(1.8),
        "high-saturation": ImageEnhance.Color(photo).enhance(2.0),
        "sharpen-a-lot": photo.filter(ImageFilter.UnsharpMask(4, 250)),
        "shrink-a-little": photo.resize((w * 3 // 4, h * 3 // 4)),
        "shrink-a-lot": photo.resize((w // 5, h // 5)),
    }


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_every_edit_of_a_photograph_matches_it(name: str) -> None:
    data = _photo_jpeg(name)
    original = hash_image(data)
    photo = Image.open(io.BytesIO(data)).convert("RGB")
    distances = {
        edit: hash_image(_encode(image, "JPEG", quality=85)).distance(original)
        for edit, image in _edits(photo).items()
    }
    assert all(d <= pdq.PDQ_MATCH_DISTANCE for d in distances.values()), distances
    assert original.is_usable


def test_different_photographs_do_not_match() -> None:
    hashes = {name: hash_image(_photo_jpeg(name)) for name in PHOTO_NAMES}
    pairs = {
        (a, b): hashes[a].distance(hashes[b])
        for i, a in enumerate(PHOTO_NAMES)
        for b in PHOTO_NAMES[i + 1 :]
    }
    assert min(pairs.values()) > 2 * pdq.PDQ_MATCH_DISTANCE, pairs


def test_bit_order_is_pdqhashs_vector_most_significant_first() -> None:
    """Byte 0's high bit is the first element of pdqhash's bit vector, and the hex is the
    binary string of that vector read as one number (threatexchange's conversion)."""
    pixels = np.asarray(Image.open(io.BytesIO(ORIGINAL)).convert("RGB").resize((512, 341)))
    vector, _ = pdqhash.compute(np.ascontiguousarray(pixels))
    ours = PdqHash(np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes())
    as_threatexchange = f"{int(''.join(str(int(b)) for b in vector), 2):064x}"
    assert ours.hex == as_threatexchange
    assert (ours.bits[0] >> 7) == int(vector[0])
    # A reversed order is a different hash, far from this one (not a few bits off).
    reversed_bits = PdqHash(np.packbits(np.asarray(vector[::-1], dtype=np.uint8)).tobytes())
    assert reversed_bits.distance(ours) > 64


# --- dihedral variants ---------------------------------------------------------------------------

TRANSPOSES = {
    "rotate_90": Image.Transpose.ROTATE_90,
    "rotate_180": Image.Transpose.ROTATE_180,
    "rotate_270": Image.Transpose.ROTATE_270,
    "flip_top_bottom": Image.Transpose.FLIP_TOP_BOTTOM,
    "flip_left_right": Image.Transpose.FLIP_LEFT_RIGHT,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


def test_dihedral_hashes_come_in_the_documented_order() -> None:
    hashes = dihedral_hashes(ORIGINAL)
    assert len(hashes) == len(pdq.DIHEDRAL_TRANSFORMS) == 8
    assert hashes[0] == hash_image(ORIGINAL)
    photo = Image.open(io.BytesIO(ORIGINAL))
    for index, name in enumerate(pdq.DIHEDRAL_TRANSFORMS[1:], start=1):
        turned = hash_image(_encode(photo.transpose(TRANSPOSES[name]), "PNG"))
        distances = [turned.distance(h) for h in hashes]
        # Nearest at its own index, and a match (non-square photo: resampling costs bits).
        assert distances.index(min(distances)) == index, (name, distances)
        assert distances[index] <= pdq.PDQ_MATCH_DISTANCE, (name, distances)
        assert turned.distance(hashes[0]) > pdq.PDQ_MATCH_DISTANCE, (name, distances)


def test_pixel_transforms_are_pillows_transposes() -> None:
    pixels = pdq._prepared_pixels(ORIGINAL)
    image = Image.fromarray(pixels)
    for index, name in enumerate(pdq.DIHEDRAL_TRANSFORMS):
        expected = pixels if index == 0 else np.asarray(image.transpose(TRANSPOSES[name]))
        assert np.array_equal(pdq._PIXEL_TRANSFORMS[index](pixels), expected), name


def test_oriented_hashes_are_the_hashes_of_turned_copies() -> None:
    """Each oriented hash is (within resampling of the re-encoded copy) the hash that a turned
    copy of the image gets, and the identity is `hash_image`."""
    photo = Image.open(io.BytesIO(ORIGINAL))
    order = (0, 2, 4, 5, 1, 6)
    hashes = pdq.oriented_hashes(ORIGINAL, order)
    assert len(hashes) == len(order) and hashes[0] == hash_image(ORIGINAL)
    for index, h in zip(order[1:], hashes[1:], strict=True):
        name = pdq.DIHEDRAL_TRANSFORMS[index]
        turned = hash_image(_encode(photo.transpose(TRANSPOSES[name]), "PNG"))
        assert turned.distance(h) <= 4, name
        assert h.distance(hashes[0]) > pdq.PDQ_MATCH_DISTANCE, name
    with pytest.raises(ValueError):
        pdq.oriented_hashes(ORIGINAL, (8,))
    with pytest.raises(ImageDecodeError):
        pdq.oriented_hashes(b"not an image", (0,))


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("GIF", "P"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
    ],
)
def test_every_supported_format_and_mode_hashes_like_the_jpeg(fmt: str, mode: str) -> None:
    photo = Image.open(io.BytesIO(ORIGINAL)).convert(mode)
    got = hash_image(_encode(photo, fmt))
    assert got.distance(hash_image(ORIGINAL)) <= 16, got.distance(hash_image(ORIGINAL))
    assert got.is_usable


def test_a_flat_image_hashes_with_unusable_quality() -> None:
    flat = hash_image(_encode(Image.new("RGB", (300, 200), "gray"), "PNG"))
    assert flat.quality is not None and flat.quality < pdq.PDQ_MIN_QUALITY
    assert not flat.is_usable


def test_tiny_images_hash_without_crashing() -> None:
    for size in [(1, 1), (1, 7), (3, 1000)]:
        assert hash_image(_encode(Image.new("RGB", size, "red"), "PNG")).quality == 0


# --- typed errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", ImageDecodeError),
        (b"not an image at all", ImageDecodeError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ImageDecodeError),
        (_encode(Image.new("RGB", (20, 20)), "PPM"), ImageDecodeError),  # not a listed format
        (_encode(Image.new("RGB", (20, 20)), "ICO"), ImageDecodeError),
        (ORIGINAL[:1000], ImageTruncatedError),
        (ORIGINAL[: len(ORIGINAL) // 2], ImageTruncatedError),
        (_encode(Image.new("RGB", (300, 200)), "PNG")[:-40], ImageTruncatedError),
        (_png_header(8000, 7000), ImageTooLargeError),  # 56 Mpx: over our limit
        (_png_header(20000, 20000), ImageTooLargeError),  # 400 Mpx: over Pillow's too
        (_png_header(0, 10), ImageDecodeError),
    ],
)
def test_what_is_not_a_hashable_image_gets_a_typed_error(
    data: bytes, error: type[TidingsError]
) -> None:
    with pytest.raises(error):
        hash_image(data)
    with pytest.raises(error):
        dihedral_hashes(data)


def test_oversized_input_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError):
        hash_image(ORIGINAL + bytes(pdq.MAX_IMAGE_BYTES))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_garbage_bytes_give_a_hash_or_a_typed_error(data: bytes) -> None:
    try:
        hash_image(data)
    except (ImageDecodeError, ImageTruncatedError, ImageTooLargeError):
        pass


SMALL_PNG = _encode(Image.open(io.BytesIO(ORIGINAL)).resize((64, 40)), "PNG")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_images_give_a_hash_or_a_typed_error(data: st.DataObject) -> None:
    seed = bytearray(data.draw(st.sampled_from([SMALL_PNG, ORIGINAL[:20000] + ORIGINAL[-2:]])))
    for at in data.draw(st.lists(st.integers(0, len(seed) - 1), max_size=4)):
        seed[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(seed)))
    try:
        hash_image(bytes(seed[:cut]))
    except (ImageDecodeError, ImageTruncatedError, ImageTooLargeError):
        pass


# --- the PdqHash value ---------------------------------------------------------------------------


def test_hex_round_trip_and_parse_errors() -> None:
    text = hash_image(ORIGINAL).hex
    assert PdqHash.from_hex(text).hex == text
    assert PdqHash.from_hex(text.upper()) == PdqHash.from_hex(text)
    assert str(PdqHash.from_hex(text)) == text
    for bad in [
        "",
        text[:-1],
        text + "0",
        "g" + text[1:],
        " " + text[1:],
        text[:10] + " " + text[11:],
    ]:
        with pytest.raises(PdqHashFormatError):
            PdqHash.from_hex(bad)
    for quality in (-1, 101):
        with pytest.raises(PdqHashFormatError):
            PdqHash.from_hex(text, quality)
    with pytest.raises(PdqHashFormatError):
        PdqHash(bytes(31))
    assert PdqHash(bytes(32), None).is_usable  # unknown quality is not refused
    assert not PdqHash(bytes(32), pdq.PDQ_MIN_QUALITY - 1).is_usable


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_distance_is_the_popcount_of_the_xor(a: bytes, b: bytes) -> None:
    x, y = PdqHash(a), PdqHash(b)
    expected = sum(bin(p ^ q).count("1") for p, q in zip(a, b, strict=True))
    assert x.distance(y) == y.distance(x) == expected
    assert x.distance(x) == 0
    assert x.matches(y) == (expected <= pdq.PDQ_MATCH_DISTANCE)


# --- exact digests -------------------------------------------------------------------------------


def test_content_digests_known_answers() -> None:
    empty = content_digests(b"")
    assert empty.md5.hex() == "d41d8cd98f00b204e9800998ecf8427e"
    abc = content_digests(b"abc")
    assert abc.sha256.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert abc.of_kind("md5").hex() == "900150983cd24fb0d6963f7d28e17f72"
    assert parse_digest("md5", "900150983CD24FB0D6963F7D28E17F72") == abc.md5


@pytest.mark.parametrize(
    ("kind", "text"),
    [("md5", "00"), ("md5", "z" * 32), ("sha256", "0" * 32), ("md5", "00 " + "0" * 29)],
)
def test_parse_digest_refuses_what_is_not_one(kind: str, text: str) -> None:
    with pytest.raises(DecodeError):
        parse_digest(kind, text)  # type: ignore[arg-type]
