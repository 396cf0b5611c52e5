"""The LSH key functions of `tidings.crypto.psi`: the PDQ bit layout they assume (checked on
real photographs), the transposition-closed positions, key equality, and known answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pdqhash
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import psi
from tidings.errors import DecodeError, DetectionListError
from tidings.wire.binary import Reader

KAT = json.loads((Path(__file__).parents[1] / "vectors" / "psi_kat.json").read_text())
PARAMS = psi.DEFAULT_PSI_PARAMETERS


def _photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _packed(bits: np.ndarray) -> bytes:
    """threatexchange's PDQ hex is numpy.packbits of the 256 vector: our 32 bytes."""
    return bytes(np.packbits(bits.astype(np.uint8)))


def _transpose(pdq: bytes) -> bytes:
    bits = np.unpackbits(np.frombuffer(pdq, dtype=np.uint8)).reshape(16, 16)
    return bytes(np.packbits(bits.T.ravel()))


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "camera"])
def test_pdq_layout_on_real_photographs(name: str) -> None:
    """Bit i is (row i // 16, col i % 16): the hash of the transposed image is exactly the
    transposed matrix, and compute_dihedral's order is the one `psi` names."""
    image = _photo(name)
    dihedral, _ = pdqhash.compute_dihedral(image)
    transposed, _ = pdqhash.compute(np.ascontiguousarray(image.transpose(1, 0, 2)))
    hashes = [_packed(h) for h in dihedral]
    assert _packed(transposed) == _transpose(hashes[psi.DIHEDRAL_IDENTITY])
    assert hashes[psi.DIHEDRAL_TRANSPOSE] == _transpose(hashes[psi.DIHEDRAL_IDENTITY])
    # Each class representative's transpose is another dihedral hash, so the 4 classes and
    # their transposes cover all 8.
    covered = {
        hashes.index(h) for c in psi.ORIENTATION_CLASSES for h in (hashes[c], _transpose(hashes[c]))
    }
    assert covered == set(range(psi.DIHEDRAL_COUNT))
    # A pixel-space flip is nearest (among all 8) to the dihedral hash psi names for it; not
    # equal to it (PDQ's DCT-domain flips differ after resampling).
    for index, flipped in (
        (psi.DIHEDRAL_ROT180, image[::-1, ::-1]),
        (psi.DIHEDRAL_FLIP_VERTICAL, image[::-1]),
        (psi.DIHEDRAL_FLIP_HORIZONTAL, image[:, ::-1]),
    ):
        direct, _ = pdqhash.compute(np.ascontiguousarray(flipped))
        distances = [int((direct != h).sum()) for h in dihedral]
        assert distances.index(min(distances)) == index
        assert min(distances) <= 32 < sorted(distances)[1]


def test_positions_are_closed_under_transposition_and_deterministic() -> None:
    for table in range(PARAMS.tables):
        direct, transposed = psi.table_positions(PARAMS.lsh_seed, table, PARAMS.bits_per_key)
        assert len(set(direct)) == PARAMS.bits_per_key == len(direct)
        assert set(transposed) == set(direct)
        assert list(direct) == sorted(direct)
    assert psi.table_positions(PARAMS.lsh_seed, 0, 42) == psi.table_positions(
        PARAMS.lsh_seed, 0, 42
    )
    assert psi.table_positions(PARAMS.lsh_seed, 0, 42) != psi.table_positions(
        PARAMS.lsh_seed, 1, 42
    )


def test_known_answers_for_positions_and_keys() -> None:
    params = psi.PsiParameters(
        bits_per_key=KAT["bits_per_key"], lsh_seed=bytes.fromhex(KAT["seed"])
    )
    for table, expected in KAT["positions"].items():
        assert (
            list(psi.table_positions(params.lsh_seed, int(table), params.bits_per_key)[0])
            == expected
        )
    for case in KAT["keys"]:
        keys = psi.list_keys(bytes.fromhex(case["pdq"]), params)
        for table, expected in case["tables"].items():
            assert keys[int(table)].hex() == expected


def test_known_answers_for_hash_to_group() -> None:
    for case in KAT["hash_to_group"]:
        assert psi.hash_to_group(bytes.fromhex(case["key"])).hex() == case["point"]


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_a_hash_and_its_transpose_share_every_key(pdq: bytes) -> None:
    assert psi.list_keys(pdq, PARAMS) == psi.list_keys(_transpose(pdq), PARAMS)
    keys = psi.list_keys(pdq, PARAMS)
    assert len(keys) == PARAMS.tables and len(set(keys)) == PARAMS.tables
    assert all(len(k) == PARAMS.key_len for k in keys)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 255))
def test_flipping_one_bit_changes_exactly_the_tables_that_sample_it(pdq: bytes, bit: int) -> None:
    flipped = bytearray(pdq)
    flipped[bit // 8] ^= 1 << (7 - bit % 8)
    before, after = psi.list_keys(pdq, PARAMS), psi.list_keys(bytes(flipped), PARAMS)
    for table in range(PARAMS.tables):
        direct, _ = psi.table_positions(PARAMS.lsh_seed, table, PARAMS.bits_per_key)
        if bit not in direct:
            assert before[table] == after[table]


def test_query_keys_take_eight_dihedral_or_four_class_hashes() -> None:
    hashes = [os.urandom(32) for _ in range(8)]
    classes = [hashes[c] for c in psi.ORIENTATION_CLASSES]
    keys = psi.query_keys(hashes, PARAMS)
    assert keys == psi.query_keys(classes, PARAMS)
    assert len(keys) == PARAMS.elements_per_voucher
    assert keys[: PARAMS.tables] == psi.list_keys(hashes[0], PARAMS)
    for bad in ([], hashes[:3], hashes + hashes[:1]):
        with pytest.raises(DecodeError):
            psi.query_keys(bad, PARAMS)
    with pytest.raises(DecodeError):
        psi.query_keys([b"short"] * 4, PARAMS)
    with pytest.raises(DecodeError):
        psi.list_keys(bytes(31), PARAMS)


@pytest.mark.parametrize(
    "change",
    [
        {"tables": 0},
        {"tables": psi.MAX_TABLES + 1},
        {"bits_per_key": 15},
        {"bits_per_key": 65},
        {"lsh_seed": bytes(31)},
        {"orientation_classes": ()},
        {"orientation_classes": (0, 0)},
        {"orientation_classes": (8,)},
        {"threshold": 1},
        {"tag_dimension": 0},
        {"synthetic_rate_ppm": psi.PPM + 1},
        {"window_size": 0},
        {"synthetic_open_counts": ()},
        {"synthetic_open_counts": ((0, 1),)},
        {"synthetic_open_counts": ((1, 0),)},
        {"synthetic_open_counts": ((161, 1),)},
    ],
)
def test_parameters_out_of_range_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(DetectionListError):
        psi.PsiParameters(**change)  # type: ignore[arg-type]


def test_parameters_encoding_round_trips() -> None:
    params = psi.PsiParameters(
        tables=9,
        bits_per_key=33,
        threshold=4,
        tag_dimension=7,
        synthetic_rate_ppm=123,
        window_size=99,
        synthetic_open_counts=((1, 5), (3, 2)),
    )
    reader = Reader(params.encode(), "parameters")
    assert psi.PsiParameters.read(reader) == params
    reader.finish()
    assert psi.PsiParameters.read(Reader(PARAMS.encode(), "p")) == PARAMS
