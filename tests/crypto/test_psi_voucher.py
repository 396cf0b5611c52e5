"""Vouchers end to end in memory (`tidings.crypto.voucher`): matches open and others do not,
synthetic vouchers open, a voucher for another list is refused, malformed vouchers give typed
errors, below t the server's opened records look alike and recover nothing, and at t or more
exactly the real matches' inner payloads come back."""

from __future__ import annotations

import io
import os
import random
from collections import Counter

import numpy as np
import pdqhash
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tidings.crypto import primitives, psi, threshold, voucher
from tidings.crypto.identity import RandomSource
from tidings.errors import (
    DetectionListMismatchError,
    InvalidKeyError,
    MalformedVoucherError,
    OversizedError,
    ThresholdParameterError,
    TidingsError,
    TruncatedError,
    UnsupportedVersionError,
    VoucherTamperedError,
)
from tidings.wire.voucher import MAX_VOUCHER_BYTES, VoucherWire

T, D = 3, 4
PARAMS = psi.PsiParameters(
    tables=4, threshold=T, tag_dimension=D, synthetic_rate_ppm=0, synthetic_open_counts=((2, 1),)
)


def _rng(seed: int) -> RandomSource:
    return random.Random(seed).randbytes


def _image(pdq: bytes) -> list[bytes]:
    """An image's class hashes whose identity class is ``pdq`` (others unrelated)."""
    return [pdq] + [os.urandom(32) for _ in range(3)]


class World:
    def __init__(self, params: psi.PsiParameters, listed: int = 12, seed: int = 0) -> None:
        self.params = params
        self.secret = psi.generate_list_secret(_rng(seed))
        self.hashes = [random.Random(seed + i).randbytes(32) for i in range(listed)]
        keys = [k for h in self.hashes for k in psi.list_keys(h, params)]
        self.list = psi.BlindedList.build(keys, self.secret, params, 3, _rng(seed + 1))
        self.opener = voucher.VoucherOpener(self.secret, self.list)

    def builder(self, seed: int, params: psi.PsiParameters | None = None) -> voucher.VoucherBuilder:
        p = params or self.params
        dealer = threshold.WindowDealer(
            random.Random(seed).randbytes(32), p.threshold, p.tag_dimension
        )
        return voucher.VoucherBuilder(self.list, dealer, _rng(seed + 7))


@pytest.fixture(scope="module")
def world() -> World:
    return World(PARAMS)


def _opening_elements(w: World, data: bytes) -> int:
    """How many elements open (what a malicious server could count)."""
    wire = VoucherWire.decode(data)
    count = 0
    for u_q, wrap in wire.elements:
        kv = voucher._xor(wrap, voucher._wrap_key(primitives.x25519(w.secret, u_q), u_q))
        try:
            primitives.aes256_gcm_decrypt(
                voucher._outer_key(kv), voucher._AEAD_NONCE, wire.outer_ct, wire.header()
            )
            count += 1
        except TidingsError:
            pass
    return count


def test_a_listed_hash_opens_and_others_do_not(world: World) -> None:
    builder = world.builder(1)
    matched = world.opener.open(builder.build(_image(world.hashes[0]), b"attachment 1"))
    assert matched is not None and matched.share.dimension == D
    # Any orientation class may carry the match.
    flipped = [os.urandom(32), os.urandom(32), world.hashes[1], os.urandom(32)]
    assert world.opener.open(builder.build(flipped, b"x")) is not None
    assert world.opener.open(builder.build(_image(os.urandom(32)), b"x")) is None
    # A near copy (a few bits off, outside every table's sample) still opens.
    near = bytearray(world.hashes[2])
    sampled = {
        p
        for t in range(PARAMS.tables)
        for p in psi.table_positions(PARAMS.lsh_seed, t, PARAMS.bits_per_key)[0]
    }
    unsampled = [p for p in range(256) if p not in sampled][:5]
    for p in unsampled:
        near[p // 8] ^= 1 << (7 - p % 8)
    assert world.opener.open(builder.build(_image(bytes(near)), b"x")) is not None


def test_every_voucher_has_the_same_size_and_shape(world: World) -> None:
    builder = world.builder(2)
    sizes = {len(builder.build(_image(h), b"p" * 40)) for h in (world.hashes[0], os.urandom(32))}
    assert len(sizes) == 1
    wire = VoucherWire.decode(builder.build(_image(world.hashes[0]), b"p"))
    assert len(wire.elements) == PARAMS.elements_per_voucher


def test_synthetic_vouchers_open_with_the_published_count(world: World) -> None:
    params = psi.PsiParameters(
        tables=4,
        threshold=T,
        tag_dimension=D,
        synthetic_rate_ppm=psi.PPM,
        synthetic_open_counts=((3, 1),),
    )
    w = World(params, seed=40)
    builder = w.builder(3)
    for pdq in (w.hashes[0], os.urandom(32)):
        data = builder.build(_image(pdq), b"payload")
        opened = w.opener.open(data)
        assert opened is not None
        assert len(opened.inner_ct) == voucher.inner_ct_len(len(b"payload"))
        assert _opening_elements(w, data) == 3
    # Synthetic shares recover nothing, however many.
    opened_all = [w.opener.open(builder.build(_image(os.urandom(32)), b"p")) for _ in range(D)]
    assert voucher.recover_inner([o for o in opened_all if o], T) == []


def test_real_match_open_counts_follow_the_keys(world: World) -> None:
    data = world.builder(4).build([world.hashes[0]] * 4, b"p")
    assert _opening_elements(world, data) == 4 * PARAMS.tables


def test_a_voucher_for_another_list_does_not_match(world: World) -> None:
    other = World(PARAMS, seed=99)
    # The other list has the same hashes listed under another secret.
    data = other.builder(5).build(_image(other.hashes[0]), b"p")
    with pytest.raises(DetectionListMismatchError):
        world.opener.open(data)
    # Relabelled as if for this list: it still opens nothing here.
    wire = VoucherWire.decode(data)
    forged = VoucherWire(world.list.version, world.list.digest(), wire.elements, wire.outer_ct)
    assert world.opener.open(forged.encode()) is None


def test_the_opener_and_builder_check_their_keys(world: World) -> None:
    with pytest.raises(InvalidKeyError):
        voucher.VoucherOpener(psi.generate_list_secret(_rng(11)), world.list)
    dealer = threshold.WindowDealer(bytes(32), T + 1, D)
    with pytest.raises(ThresholdParameterError):
        voucher.VoucherBuilder(world.list, dealer)
    with pytest.raises(OversizedError):
        world.builder(6).build(_image(os.urandom(32)), bytes(2000))


def test_malformed_vouchers_raise_typed_errors(world: World) -> None:
    data = world.builder(7).build(_image(world.hashes[0]), b"p")
    with pytest.raises(TruncatedError):
        world.opener.open(data[:-1])
    with pytest.raises(MalformedVoucherError):
        world.opener.open(data + b"\x00")
    with pytest.raises(UnsupportedVersionError):
        world.opener.open(b"\x09" + data[1:])
    with pytest.raises(OversizedError):
        world.opener.open(bytes(MAX_VOUCHER_BYTES + 1))
    wire = VoucherWire.decode(data)
    fewer = VoucherWire(wire.list_version, wire.list_digest, wire.elements[:-1], wire.outer_ct)
    with pytest.raises(MalformedVoucherError):
        world.opener.open(fewer.encode())
    short = VoucherWire(wire.list_version, wire.list_digest, wire.elements, wire.outer_ct[:40])
    with pytest.raises(MalformedVoucherError):
        world.opener.open(short.encode())
    # A low-order u and a flipped outer bit open nothing; they are not errors.
    zeros = tuple((bytes(32), w) for _, w in wire.elements)
    assert (
        world.opener.open(
            VoucherWire(wire.list_version, wire.list_digest, zeros, wire.outer_ct).encode()
        )
        is None
    )
    flipped = bytearray(data)
    flipped[-1] ^= 1
    assert world.opener.open(bytes(flipped)) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_open_or_raise_typed_errors(data: bytes) -> None:
    opener = _OPENER_FOR_PROPERTY
    try:
        opener.open(data)
    except TidingsError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_vouchers_open_or_raise_typed_errors(data: st.DataObject) -> None:
    raw = bytearray(_VOUCHER_FOR_PROPERTY)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    try:
        _OPENER_FOR_PROPERTY.open(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    except TidingsError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 0xFFFF_FFFF),
    st.binary(min_size=32, max_size=32),
    st.lists(
        st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16)),
        min_size=1,
        max_size=256,
    ),
    st.binary(min_size=16, max_size=4096),
)
def test_the_wire_format_round_trips(
    version: int, digest: bytes, elements: list[tuple[bytes, bytes]], outer: bytes
) -> None:
    wire = VoucherWire(version, digest, tuple(elements), outer)
    data = wire.encode()
    assert len(data) == 41 + 48 * len(elements) + len(outer)
    assert VoucherWire.decode(data) == wire


_PROPERTY_WORLD = World(PARAMS, seed=77)
_OPENER_FOR_PROPERTY = _PROPERTY_WORLD.opener
_VOUCHER_FOR_PROPERTY = _PROPERTY_WORLD.builder(8).build(_image(_PROPERTY_WORLD.hashes[0]), b"p")


def _window(
    w: World, seed: int, real: int, synthetic: int, payload: bytes = b"p" * 24
) -> list[voucher.OpenedVoucher]:
    """The server's opened records of one window: ``real`` matching images, ``synthetic``
    synthetic vouchers, and two unmatched images (which open nothing), in a shuffled order."""
    params = psi.PsiParameters(
        tables=4,
        threshold=T,
        tag_dimension=D,
        synthetic_rate_ppm=0,
        synthetic_open_counts=((2, 1),),
    )
    synth_params = psi.PsiParameters(
        tables=4,
        threshold=T,
        tag_dimension=D,
        synthetic_rate_ppm=psi.PPM,
        synthetic_open_counts=((2, 1),),
    )
    seed_bytes = random.Random(seed).randbytes(32)
    dealer = threshold.WindowDealer(seed_bytes, T, D)
    real_builder = voucher.VoucherBuilder(w.list, dealer, _rng(seed))
    synth_list = psi.BlindedList(
        synth_params, w.list.version, w.list.okvs_seed, w.list.public, w.list.slots
    )
    synth_opener = voucher.VoucherOpener(w.secret, synth_list)
    synth_builder = voucher.VoucherBuilder(synth_list, dealer, _rng(seed + 1))
    assert params == w.params
    records = [w.opener.open(real_builder.build(_image(w.hashes[i]), payload)) for i in range(real)]
    records += [
        synth_opener.open(synth_builder.build(_image(os.urandom(32)), payload))
        for _ in range(synthetic)
    ]
    assert w.opener.open(real_builder.build(_image(os.urandom(32)), payload)) is None
    opened = [r for r in records if r is not None]
    assert len(opened) == real + synthetic
    random.Random(seed).shuffle(opened)
    return opened


def test_below_threshold_the_server_state_looks_the_same(world: World) -> None:
    """0 vs t-1 real matches, the same number of opened records: the records have the same
    shape, their field values are uniform in both cases (chi-square on a byte of every value),
    and recovery finds nothing in either."""
    per_case: dict[int, Counter[int]] = {}
    for real in (0, T - 1):
        buckets: Counter[int] = Counter()
        for window in range(40):
            opened = _window(world, 1000 * real + window, real, D - real)
            assert voucher.recover_inner(opened, T) == []
            assert {len(o.inner_ct) for o in opened} == {voucher.inner_ct_len(24)}
            for o in opened:
                for value in (o.share.x, o.share.y, *o.share.tag):
                    buckets[value & 0x0F] += 1
        per_case[real] = buckets
    for buckets in per_case.values():
        total = sum(buckets.values())
        chi2 = sum((buckets[b] - total / 16) ** 2 / (total / 16) for b in range(16))
        assert chi2 < 37.7  # chi-square, 15 degrees of freedom, p = 0.001


def test_at_threshold_exactly_the_real_matches_are_recovered(world: World) -> None:
    for real in (T, T + 2):
        opened = _window(world, 5000 + real, real, D, payload=b"q" * 24)
        recovered = voucher.recover_inner(opened, T)
        assert len(recovered) == real
        assert {p for _, p in recovered} == {b"q" * 24}
        # The indices point at real records: dropping them leaves nothing to recover.
        rest = [o for i, o in enumerate(opened) if i not in {i for i, _ in recovered}]
        assert voucher.recover_inner(rest, T) == []


def test_distinct_payloads_come_back_to_their_vouchers(world: World) -> None:
    dealer = threshold.WindowDealer(os.urandom(32), T, D)
    builder = voucher.VoucherBuilder(world.list, dealer, _rng(21))
    payloads = [b"attachment %d" % i for i in range(T + 1)]
    opened = [
        world.opener.open(builder.build(_image(world.hashes[i]), p)) for i, p in enumerate(payloads)
    ]
    assert voucher.recover_inner([o for o in opened if o], T) == list(enumerate(payloads))


def test_a_tampered_inner_layer_is_reported(world: World) -> None:
    dealer = threshold.WindowDealer(os.urandom(32), T, D)
    builder = voucher.VoucherBuilder(world.list, dealer, _rng(22))
    opened = [
        world.opener.open(builder.build(_image(world.hashes[i]), b"x" * 10)) for i in range(T + 1)
    ]
    good = [o for o in opened if o]
    bad = voucher.OpenedVoucher(good[0].share, good[0].inner_ct[:-1] + b"\x00")
    with pytest.raises(VoucherTamperedError):
        voucher.recover_inner([bad, *good[1:]], T)


def test_an_invalid_point_in_the_list_makes_no_error_on_the_device(world: World) -> None:
    slots = bytearray(world.list.slots)
    slots[0:32] = bytes(32)  # not a valid point
    broken = psi.BlindedList(
        world.params, world.list.version, world.list.okvs_seed, world.list.public, bytes(slots)
    )
    dealer = threshold.WindowDealer(os.urandom(32), T, D)
    builder = voucher.VoucherBuilder(broken, dealer, _rng(23))
    for h in world.hashes:
        builder.build(_image(h), b"x")


def _photo_hashes(image: Image.Image) -> list[bytes]:
    t = Image.Transpose
    out = []
    for tr in (None, t.ROTATE_180, t.FLIP_TOP_BOTTOM, t.FLIP_LEFT_RIGHT):
        x = image if tr is None else image.transpose(tr)
        bits, _ = pdqhash.compute(np.ascontiguousarray(np.asarray(x)))
        out.append(bytes(np.packbits(bits.astype(np.uint8))))
    return out


def test_default_parameters_match_edited_real_photographs() -> None:
    """With the defaults: a recompressed and a mirrored copy of a listed photograph open; an
    unlisted photograph does not."""
    params = psi.PsiParameters(synthetic_rate_ppm=0)
    original = Image.fromarray(skimage.data.chelsea())
    listed = _photo_hashes(original)[0]
    secret = psi.generate_list_secret(_rng(31))
    blinded = psi.BlindedList.build(psi.list_keys(listed, params), secret, params, 1, _rng(32))
    opener = voucher.VoucherOpener(secret, blinded)
    dealer = threshold.WindowDealer(os.urandom(32), params.threshold, params.tag_dimension)
    builder = voucher.VoucherBuilder(blinded, dealer, _rng(33))
    buf = io.BytesIO()
    original.save(buf, "JPEG", quality=50)
    recompressed = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    mirrored = original.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for copy in (recompressed, mirrored, original.transpose(Image.Transpose.ROTATE_90)):
        assert opener.open(builder.build(_photo_hashes(copy), b"x")) is not None
    other = Image.fromarray(skimage.data.coffee())
    assert opener.open(builder.build(_photo_hashes(other), b"x")) is None
