"""Prekeys: signing layouts, bundles, the device's prekey state, consumption and rotation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import primitives
from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.device_prekeys import (
    MAX_RETIRED_SIGNED_PREKEYS,
    SIGNED_PREKEY_GRACE_PERIOD_MS,
    SIGNED_PREKEY_ROTATION_INTERVAL_MS,
    DevicePrekeys,
    PrekeyConsumption,
)
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.kem_prekeys import KEM_PREKEY_LABEL, KemPrekey, kem_prekey_signing_payload
from tidings.crypto.prekeys import (
    MAX_PREKEY_ID,
    SIGNED_PREKEY_LABEL,
    SignedPrekey,
    signed_prekey_signing_payload,
)
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    InvalidSignatureError,
    ProtocolError,
    TidingsError,
    TruncatedError,
    UnknownPrekeyError,
    UnsupportedVersionError,
)
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb

T0 = 1_700_000_000_000
BOB = IdentityKeyPair.generate()
MALLORY = IdentityKeyPair.generate()


def fresh(one_time: int = 3, kem: int = 3) -> DevicePrekeys:
    return DevicePrekeys.generate(BOB, now_ms=T0, one_time_count=one_time, kem_count=kem)


# A fixed state and bundle for the decoder property tests (generated once: ML-KEM keys cost).
STATE = fresh(1, 1)
STATE_BYTES = STATE.to_bytes()
BUNDLE_BYTES = STATE.bundle(1, 2, STATE.one_time_prekeys[0].id, STATE.kem_prekeys[0].id).encode()


# --- signing layouts ----------------------------------------------------------------------------


def test_signing_layouts_are_the_documented_fixed_bytes() -> None:
    x = bytes(range(32))
    assert signed_prekey_signing_payload(0x01020304, x) == (
        b"Tidings_SignedPrekey_v1" + b"\x01\x02\x03\x04" + x
    )
    k = bytes(1184)
    assert (
        kem_prekey_signing_payload(7, True, k)
        == b"Tidings_KemPrekey_v1" + bytes((0, 0, 0, 7, 1)) + k
    )
    assert kem_prekey_signing_payload(7, False, k)[len(KEM_PREKEY_LABEL) + 4] == 0
    assert SIGNED_PREKEY_LABEL == b"Tidings_SignedPrekey_v1"
    for bad_id in (0, MAX_PREKEY_ID + 1, -1):
        with pytest.raises(DecodeError):
            signed_prekey_signing_payload(bad_id, x)
    with pytest.raises(DecodeError):
        kem_prekey_signing_payload(1, False, bytes(1183))


def test_published_signatures_cover_the_layouts() -> None:
    state = fresh(0, 1)
    spk = state.signed_prekey
    BOB.public.verify(signed_prekey_signing_payload(spk.id, spk.public), spk.signature)
    for kem in (state.last_resort_kem_prekey, *state.kem_prekeys):
        BOB.public.verify(
            kem_prekey_signing_payload(kem.id, kem.last_resort, kem.public), kem.signature
        )
    assert state.last_resort_kem_prekey.last_resort
    assert not state.kem_prekeys[0].last_resort


# --- generation and ids -------------------------------------------------------------------------


def test_generate_allocates_ids_in_documented_order() -> None:
    state = fresh(3, 2)
    assert state.signed_prekey.id == 1
    assert state.last_resort_kem_prekey.id == 2
    assert [k.id for k in state.one_time_prekeys] == [3, 4, 5]
    assert [k.id for k in state.kem_prekeys] == [6, 7]
    assert state.one_time_prekey_count == 3 and state.kem_prekey_count == 2
    assert state.identity_key == BOB.public


def test_ids_are_never_reused() -> None:
    state = fresh(2, 2)
    seen = {1, 2} | {k.id for k in state.one_time_prekeys} | {k.id for k in state.kem_prekeys}
    state.consume(PrekeyConsumption(state.one_time_prekeys[0].id, state.kem_prekeys[0].id))
    new = [k.id for k in state.generate_one_time_prekeys(2)]
    new += [k.id for k in state.generate_kem_prekeys(BOB, 2)]
    spk, lr = state.rotate_signed_prekeys(BOB, now_ms=T0 + 1)
    new += [spk.id, lr.id]
    assert len(set(new)) == len(new) and not seen & set(new)
    assert min(new) > max(seen)


def test_generation_needs_the_owning_identity() -> None:
    state = fresh(0, 0)
    with pytest.raises(InvalidKeyError):
        state.generate_kem_prekeys(MALLORY, 1)
    with pytest.raises(InvalidKeyError):
        state.rotate_signed_prekeys(MALLORY, now_ms=T0)
    with pytest.raises(ValueError):
        state.generate_one_time_prekeys(-1)


def test_id_space_exhaustion_is_a_typed_error_and_changes_nothing() -> None:
    data = bytearray(fresh(0, 0).to_bytes())
    data[66:70] = struct.pack(">I", MAX_PREKEY_ID - 1)  # the id counter follows the identity
    state = DevicePrekeys.from_bytes(bytes(data))
    before = state.to_bytes()
    with pytest.raises(ProtocolError):
        state.generate_one_time_prekeys(2)
    with pytest.raises(ProtocolError):
        state.rotate_signed_prekeys(BOB, now_ms=T0 + 1)
    assert state.to_bytes() == before
    assert [k.id for k in state.generate_one_time_prekeys(1)] == [MAX_PREKEY_ID]
    with pytest.raises(ProtocolError):
        state.generate_one_time_prekeys(1)


# --- bundles ------------------------------------------------------------------------------------


def test_bundle_round_trips_and_verifies() -> None:
    state = fresh(1, 1)
    bundle = state.bundle(5, 77, state.one_time_prekeys[0].id, state.kem_prekeys[0].id)
    decoded = PrekeyBundle.decode(bundle.encode())
    assert decoded.verified
    assert decoded == bundle
    assert decoded.identity_key == BOB.public
    assert (decoded.device_id, decoded.registration_id) == (5, 77)
    assert decoded.one_time_prekey == state.one_time_prekeys[0]
    assert decoded.kem_prekey == state.kem_prekeys[0]
    assert decoded.signed_prekey == state.signed_prekey


def test_bundle_is_immutable_and_keyword_only() -> None:
    state = fresh(1, 1)
    bundle = state.bundle(5, 77)
    with pytest.raises(AttributeError):
        bundle.device_id = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        PrekeyBundle(BOB.public, 5, 77, state.signed_prekey, state.last_resort_kem_prekey)  # type: ignore[call-arg]
    for bad_id in (-1, 2**32, True):
        with pytest.raises(DecodeError):
            PrekeyBundle(
                identity_key=BOB.public,
                device_id=bad_id,
                registration_id=1,
                signed_prekey=state.signed_prekey,
                kem_prekey=state.last_resort_kem_prekey,
            )


def test_bundle_defaults_to_last_resort_and_no_one_time_prekey() -> None:
    state = fresh(1, 1)
    bundle = PrekeyBundle.decode(state.bundle(1, 1).encode())
    assert bundle.one_time_prekey is None
    assert bundle.kem_prekey == state.last_resort_kem_prekey
    assert not bundle.to_wire().HasField("one_time_prekey")
    assert state.bundle(1, 1, kem_id=state.last_resort_kem_prekey.id) == bundle


def test_bundle_refuses_unknown_ids() -> None:
    state = fresh(1, 1)
    with pytest.raises(UnknownPrekeyError):
        state.bundle(1, 1, one_time_id=999)
    with pytest.raises(UnknownPrekeyError):
        state.bundle(1, 1, kem_id=999)
    with pytest.raises(UnknownPrekeyError):  # a one-time X25519 id is not a KEM id
        state.bundle(1, 1, kem_id=state.one_time_prekeys[0].id)


def _wire_bundle() -> pb.PrekeyBundle:
    return codec.decode(pb.PrekeyBundle, BUNDLE_BYTES)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: setattr(m.signed_prekey, "signature", bytes(64)),
        lambda m: setattr(m.signed_prekey, "id", m.signed_prekey.id + 1),
        lambda m: setattr(m.signed_prekey, "public_key", primitives.x25519_generate()[1]),
        lambda m: setattr(m.kem_prekey, "signature", m.signed_prekey.signature),
        lambda m: setattr(m.kem_prekey, "last_resort", not m.kem_prekey.last_resort),
        lambda m: setattr(m.kem_prekey, "id", m.kem_prekey.id + 100),
        lambda m: setattr(m.kem_prekey, "public_key", primitives.mlkem768_generate()[1]),
        lambda m: setattr(m, "identity_key", MALLORY.public.encode()),
    ],
    ids=[
        "spk-signature",
        "spk-id",
        "spk-key",
        "kem-signature",
        "kem-last-resort-flag",
        "kem-id",
        "kem-key",
        "identity",
    ],
)
def test_tampered_bundle_is_refused(tamper: object) -> None:
    message = _wire_bundle()
    tamper(message)  # type: ignore[operator]
    with pytest.raises(InvalidSignatureError):
        PrekeyBundle.decode(codec.encode(message))
    unverified = PrekeyBundle.from_wire(message, verify=False)
    assert not unverified.verified
    with pytest.raises(InvalidSignatureError):
        unverified.verify()


def test_one_time_prekey_is_not_signed_and_may_be_swapped() -> None:
    # Documented: the one-time X25519 prekey is unsigned (as in PQXDH); a substituted one only
    # costs forward secrecy for that session, never authentication.
    message = _wire_bundle()
    message.one_time_prekey.public_key = primitives.x25519_generate()[1]
    PrekeyBundle.decode(codec.encode(message))


def test_bundle_structure_errors_are_typed() -> None:
    message = _wire_bundle()
    message.version = 2
    with pytest.raises(UnsupportedVersionError):
        PrekeyBundle.from_wire(message)
    message = _wire_bundle()
    message.signed_prekey.id = 0
    with pytest.raises(DecodeError):
        PrekeyBundle.decode(codec.encode(message))
    message = _wire_bundle()
    message.ClearField("kem_prekey")
    with pytest.raises(DecodeError):
        PrekeyBundle.from_wire(message)
    message = _wire_bundle()
    message.identity_key = b"\x02" + message.identity_key[1:]
    with pytest.raises(DecodeError):
        PrekeyBundle.decode(codec.encode(message))


def test_records_hide_key_bytes_in_repr() -> None:
    state = fresh(1, 1)
    bundle = state.bundle(1, 1, state.one_time_prekeys[0].id, state.kem_prekeys[0].id)
    texts = [repr(state), repr(bundle), repr(bundle.signed_prekey), repr(bundle.kem_prekey)]
    texts += [repr(bundle.one_time_prekey), repr(state.find_signed_prekey(1))]
    secret = state.to_bytes()
    for text in texts:
        assert bundle.signed_prekey.public.hex()[:16] not in text
        assert state.find_signed_prekey(1).private.hex()[:16] not in text
        assert secret[70:90].hex() not in text


# --- consumption --------------------------------------------------------------------------------


def test_consume_removes_one_time_keys_exactly_once() -> None:
    state = fresh(2, 2)
    otpk, kem = state.one_time_prekeys[0].id, state.kem_prekeys[0].id
    used = PrekeyConsumption(otpk, kem)
    state.consume(used)
    assert state.one_time_prekey_count == 1 and state.kem_prekey_count == 1
    with pytest.raises(UnknownPrekeyError):
        state.find_one_time_prekey(otpk)
    with pytest.raises(UnknownPrekeyError):
        state.find_kem_prekey(kem)
    with pytest.raises(UnknownPrekeyError):
        state.consume(used)


def test_consume_is_all_or_nothing() -> None:
    state = fresh(1, 1)
    before = state.to_bytes()
    with pytest.raises(UnknownPrekeyError):
        state.consume(PrekeyConsumption(state.one_time_prekeys[0].id, 999))
    with pytest.raises(UnknownPrekeyError):
        state.consume(PrekeyConsumption(999, state.kem_prekeys[0].id))
    assert state.to_bytes() == before


def test_last_resort_key_is_never_consumed() -> None:
    state = fresh(0, 0)
    last_resort = state.last_resort_kem_prekey
    empty = PrekeyConsumption(None, None)
    assert empty.empty
    state.consume(empty)
    state.consume(empty)
    assert state.find_kem_prekey(last_resort.id).last_resort
    with pytest.raises(UnknownPrekeyError):  # and cannot be consumed as a one-time key
        state.consume(PrekeyConsumption(None, last_resort.id))


# --- rotation and grace period ------------------------------------------------------------------


def test_rotation_keeps_previous_keys_for_the_grace_period() -> None:
    state = fresh(0, 0)
    old_spk, old_lr = state.signed_prekey, state.last_resort_kem_prekey
    assert not state.rotation_due(T0 + SIGNED_PREKEY_ROTATION_INTERVAL_MS - 1)
    assert state.rotation_due(T0 + SIGNED_PREKEY_ROTATION_INTERVAL_MS)

    t1 = T0 + SIGNED_PREKEY_ROTATION_INTERVAL_MS
    new_spk, new_lr = state.rotate_signed_prekeys(BOB, now_ms=t1)
    assert state.signed_prekey == new_spk and state.last_resort_kem_prekey == new_lr
    assert new_lr.last_resort and state.signed_prekey_created_ms == t1
    assert state.retired_signed_prekey_ids == (old_spk.id,)
    # Still usable inside the grace period ...
    assert state.find_signed_prekey(old_spk.id).public == old_spk.public
    assert state.find_kem_prekey(old_lr.id).public == old_lr.public
    assert state.prune(t1 + SIGNED_PREKEY_GRACE_PERIOD_MS - 1) == 0
    # ... and gone once it is over.
    assert state.prune(t1 + SIGNED_PREKEY_GRACE_PERIOD_MS) == 2
    with pytest.raises(UnknownPrekeyError):
        state.find_signed_prekey(old_spk.id)
    with pytest.raises(UnknownPrekeyError):
        state.find_kem_prekey(old_lr.id)
    # New bundles carry only the current keys.
    bundle = state.bundle(1, 1)
    assert bundle.signed_prekey == new_spk and bundle.kem_prekey == new_lr


def test_rotation_prunes_expired_and_caps_retired_keys() -> None:
    state = fresh(0, 0)
    first = state.signed_prekey.id
    state.rotate_signed_prekeys(BOB, now_ms=T0)
    state.rotate_signed_prekeys(BOB, now_ms=T0 + SIGNED_PREKEY_GRACE_PERIOD_MS)
    assert first not in state.retired_signed_prekey_ids
    for i in range(MAX_RETIRED_SIGNED_PREKEYS + 3):
        state.rotate_signed_prekeys(BOB, now_ms=T0 + SIGNED_PREKEY_GRACE_PERIOD_MS + i)
    assert len(state.retired_signed_prekey_ids) == MAX_RETIRED_SIGNED_PREKEYS
    ids = state.retired_signed_prekey_ids
    assert list(ids) == sorted(ids, reverse=True)  # newest kept
    assert DevicePrekeys.from_bytes(state.to_bytes()).to_bytes() == state.to_bytes()


# --- serialization ------------------------------------------------------------------------------


def test_state_round_trips_through_bytes() -> None:
    state = fresh(2, 2)
    state.consume(PrekeyConsumption(state.one_time_prekeys[1].id, None))
    state.rotate_signed_prekeys(BOB, now_ms=T0 + 5)
    data = state.to_bytes()
    assert data[0] == 0x01 and data[1:66] == BOB.public.encode()
    restored = DevicePrekeys.from_bytes(data)
    assert restored.to_bytes() == data
    assert restored.one_time_prekeys == state.one_time_prekeys
    assert restored.kem_prekeys == state.kem_prekeys
    assert restored.retired_signed_prekey_ids == state.retired_signed_prekey_ids
    # The counter survives: the next id continues after the last one issued.
    assert restored.generate_one_time_prekeys(1)[0].id == state.generate_one_time_prekeys(1)[0].id


def test_state_decode_errors_are_typed() -> None:
    data = STATE_BYTES
    with pytest.raises(TruncatedError):
        DevicePrekeys.from_bytes(data[:-1])
    with pytest.raises(TruncatedError):
        DevicePrekeys.from_bytes(b"")
    with pytest.raises(DecodeError):
        DevicePrekeys.from_bytes(data + b"\x00")
    with pytest.raises(UnsupportedVersionError):
        DevicePrekeys.from_bytes(b"\x02" + data[1:])
    with pytest.raises(DecodeError):
        DevicePrekeys.from_bytes(b"\x01" + b"\x09" + data[2:])  # identity key type
    low_counter = bytearray(data)
    low_counter[66:70] = struct.pack(">I", 1)
    with pytest.raises(DecodeError, match="counter"):
        DevicePrekeys.from_bytes(bytes(low_counter))
    duplicate = bytearray(data)
    duplicate[70:74] = struct.pack(">I", 2)  # signed prekey takes the last-resort key's id
    with pytest.raises(DecodeError, match="twice"):
        DevicePrekeys.from_bytes(bytes(duplicate))


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    flips = st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)).map(
        lambda t: data[: t[0]] + bytes((data[t[0]] ^ t[1],)) + data[t[0] + 1 :]
    )
    cuts = st.integers(0, len(data)).map(lambda n: data[:n])
    tails = st.binary(min_size=1, max_size=8).map(lambda extra: data + extra)
    inserts = st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=4)).map(
        lambda t: data[: t[0]] + t[1] + data[t[0] :]
    )
    return st.one_of(st.binary(max_size=300), flips, cuts, tails, inserts)


@settings(max_examples=300, deadline=None)
@given(_mutations(STATE_BYTES))
def test_state_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        state = DevicePrekeys.from_bytes(data)
    except TidingsError:
        return
    assert state.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(_mutations(BUNDLE_BYTES))
def test_bundle_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        bundle = PrekeyBundle.decode(data)
    except TidingsError:
        return
    assert bundle.verified
    assert isinstance(bundle.signed_prekey, SignedPrekey)
    assert isinstance(bundle.kem_prekey, KemPrekey)
