"""PQXDH: known answers, agreement, refusal before computation, consumption, hostile input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import pqxdh, primitives
from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.device_prekeys import SIGNED_PREKEY_GRACE_PERIOD_MS, DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.pqxdh import (
    PQXDH_INFO,
    associated_data,
    derive_shared_secret,
    initiate,
    respond,
)
from tidings.crypto.symmetric import DR_MESSAGE_KEYS_INFO, open_sealed, seal
from tidings.errors import (
    DecodeError,
    DecryptionError,
    InvalidKeyError,
    InvalidSignatureError,
    TidingsError,
    UnknownPrekeyError,
    UnsupportedVersionError,
    UntrustedIdentityError,
)
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb

KAT = json.loads((Path(__file__).parents[1] / "vectors" / "pqxdh_kat.json").read_text())
T0 = 1_700_000_000_000

ALICE = IdentityKeyPair.generate()
BOB = IdentityKeyPair.generate()
MALLORY = IdentityKeyPair.generate()
RATCHET = pb.RatchetMessage(version=1, header=bytes(40), ciphertext=bytes(48))


def h(key: str, section: str = "inputs") -> bytes:
    return bytes.fromhex(KAT[section][key])


def scripted(*chunks: bytes) -> Callable[[int], bytes]:
    queue = list(chunks)

    def rng(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return rng


def bob_state(one_time: int = 2, kem: int = 2) -> DevicePrekeys:
    return DevicePrekeys.generate(BOB, now_ms=T0, one_time_count=one_time, kem_count=kem)


def wire_bundle(state: DevicePrekeys, *, one_time: bool = True, kem: bool = True) -> PrekeyBundle:
    """What Alice gets from the server: the bundle, over the wire, decoded and verified."""
    bundle = state.bundle(
        1,
        99,
        state.one_time_prekeys[0].id if one_time else None,
        state.kem_prekeys[0].id if kem else None,
    )
    return PrekeyBundle.decode(bundle.encode())


def over_the_wire(result: pqxdh.InitiatorResult) -> pb.PrekeyMessage:
    message = result.prekey_message(registration_id=4242, message=RATCHET)
    return codec.decode(pb.PrekeyMessage, codec.encode(message))


# --- known answers ------------------------------------------------------------------------------


def kat_identities() -> tuple[IdentityKeyPair, IdentityKeyPair]:
    alice = IdentityKeyPair(h("alice_identity_ed25519_seed"), h("alice_identity_x25519_private"))
    bob = IdentityKeyPair(h("bob_identity_ed25519_seed"), h("bob_identity_x25519_private"))
    return alice, bob


def kat_bob_state(bob: IdentityKeyPair) -> DevicePrekeys:
    # DevicePrekeys.generate draws: signed prekey, last-resort seed, one-time prekeys, KEM seeds.
    rng = scripted(
        h("bob_signed_prekey_private"),
        h("bob_last_resort_kem_seed"),
        h("bob_one_time_prekey_private"),
        h("bob_one_time_kem_seed"),
    )
    return DevicePrekeys.generate(
        bob, now_ms=KAT["inputs"]["now_ms"], one_time_count=1, kem_count=1, rng=rng
    )


def test_kat_keys_signatures_and_ids() -> None:
    alice, bob = kat_identities()
    assert KAT["info"].encode() == PQXDH_INFO
    assert alice.public.encode() == h("alice_identity_key", "expected")
    assert bob.public.encode() == h("bob_identity_key", "expected")
    state = kat_bob_state(bob)
    inputs, expected = KAT["inputs"], KAT["expected"]
    spk, last_resort = state.signed_prekey, state.last_resort_kem_prekey
    otpk, kem = state.one_time_prekeys[0], state.kem_prekeys[0]
    assert (spk.id, last_resort.id, otpk.id, kem.id) == (
        inputs["signed_prekey_id"],
        inputs["last_resort_kem_prekey_id"],
        inputs["one_time_prekey_id"],
        inputs["one_time_kem_prekey_id"],
    )
    assert spk.public == h("signed_prekey_public", "expected")
    assert otpk.public == h("one_time_prekey_public", "expected")
    assert (
        hashlib.sha256(last_resort.public).hexdigest() == expected["last_resort_kem_public_sha256"]
    )
    assert hashlib.sha256(kem.public).hexdigest() == expected["one_time_kem_public_sha256"]
    # Ed25519 is deterministic: equal signatures prove equal signing layouts.
    assert spk.signature == h("signed_prekey_signature", "expected")
    assert last_resort.signature == h("last_resort_kem_signature", "expected")
    assert kem.signature == h("one_time_kem_signature", "expected")


@pytest.mark.parametrize("case", KAT["cases"], ids=lambda c: c["name"])
def test_kat_derivation_function(case: dict[str, Any]) -> None:
    dh4 = h("dh4", "expected") if case["one_time_prekey_id"] is not None else None
    sk = derive_shared_secret(
        h("dh1", "expected"),
        h("dh2", "expected"),
        h("dh3", "expected"),
        dh4,
        bytes.fromhex(case["kem_shared_secret"]),
    )
    assert sk == bytes.fromhex(case["shared_secret"])
    alice, bob = kat_identities()
    assert associated_data(alice.public, bob.public) == h("associated_data", "expected")


@pytest.mark.parametrize("case", KAT["cases"], ids=lambda c: c["name"])
def test_kat_responder(case: dict[str, Any]) -> None:
    alice, bob = kat_identities()
    state = kat_bob_state(bob)
    message = pb.PrekeyMessage(
        version=1,
        identity_key=alice.public.encode(),
        registration_id=KAT["inputs"]["alice_registration_id"],
        base_key=h("alice_base_key", "expected"),
        signed_prekey_id=KAT["inputs"]["signed_prekey_id"],
        kem_prekey_id=case["kem_prekey_id"],
        kem_ciphertext=bytes.fromhex(case["kem_ciphertext"]),
        message=RATCHET,
    )
    if case["one_time_prekey_id"] is not None:
        message.one_time_prekey_id = case["one_time_prekey_id"]
    result = respond(bob, state, codec.decode(pb.PrekeyMessage, codec.encode(message)))
    assert result.shared_secret == bytes.fromhex(case["shared_secret"])
    assert result.associated_data == h("associated_data", "expected")
    assert result.initiator_identity == alice.public
    assert result.signed_prekey_public == h("signed_prekey_public", "expected")
    assert result.signed_prekey_private == h("bob_signed_prekey_private")
    last_resort = case["kem_prekey_id"] == KAT["inputs"]["last_resort_kem_prekey_id"]
    assert result.consumption.kem_prekey_id == (None if last_resort else case["kem_prekey_id"])
    assert result.consumption.one_time_prekey_id == case["one_time_prekey_id"]


@pytest.mark.parametrize("case", KAT["cases"], ids=lambda c: c["name"])
def test_kat_initiator(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = kat_identities()
    state = kat_bob_state(bob)
    bundle = PrekeyBundle.decode(
        state.bundle(1, 1, case["one_time_prekey_id"], case["kem_prekey_id"]).encode()
    )
    stored = bytes.fromhex(case["kem_shared_secret"]), bytes.fromhex(case["kem_ciphertext"])
    # ML-KEM encapsulation randomness cannot be injected into `cryptography`: substitute the
    # stored encapsulation (checking it is asked for the right key).
    expected_public = bundle.kem_prekey.public

    def encapsulate(public: bytes) -> tuple[bytes, bytes]:
        assert public == expected_public
        return stored

    monkeypatch.setattr(primitives, "mlkem768_encapsulate", encapsulate)
    result = initiate(alice, bundle, rng=scripted(h("alice_ephemeral_private")))
    assert result.shared_secret == bytes.fromhex(case["shared_secret"])
    assert result.associated_data == h("associated_data", "expected")
    assert result.base_key == h("alice_base_key", "expected")
    assert result.kem_ciphertext == stored[1]
    assert result.remote_ratchet_key == h("signed_prekey_public", "expected")
    assert result.one_time_prekey_id == case["one_time_prekey_id"]
    assert result.kem_prekey_id == case["kem_prekey_id"]


# --- agreement ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one_time", "kem"),
    [(True, True), (False, True), (True, False), (False, False)],
    ids=["all-one-time", "no-one-time-x25519", "last-resort-kem", "signed-and-last-resort-only"],
)
def test_initiator_and_responder_agree(one_time: bool, kem: bool) -> None:
    state = bob_state()
    bundle = wire_bundle(state, one_time=one_time, kem=kem)
    sent = initiate(ALICE, bundle, expected_identity=BOB.public)
    message = over_the_wire(sent)
    assert message.HasField("one_time_prekey_id") == one_time
    got = respond(BOB, state, message, expected_initiator=ALICE.public)
    assert got.shared_secret == sent.shared_secret and len(sent.shared_secret) == 32
    assert (
        got.associated_data == sent.associated_data == ALICE.public.encode() + BOB.public.encode()
    )
    assert got.initiator_identity == ALICE.public and sent.remote_identity == BOB.public
    assert got.initiator_registration_id == 4242
    assert got.base_key == sent.base_key
    # Bob's signed prekey is his first ratchet key; Alice ratchets towards it.
    assert got.signed_prekey_public == sent.remote_ratchet_key == bundle.signed_prekey.public
    assert primitives.x25519_public(got.signed_prekey_private) == got.signed_prekey_public
    assert got.consumption.one_time_prekey_id == (sent.one_time_prekey_id if one_time else None)
    assert got.consumption.kem_prekey_id == (sent.kem_prekey_id if kem else None)


def test_fresh_ephemeral_and_encapsulation_each_time() -> None:
    bundle = wire_bundle(bob_state())
    a, b = initiate(ALICE, bundle), initiate(ALICE, bundle)
    assert a.base_key != b.base_key and a.shared_secret != b.shared_secret
    assert a.kem_ciphertext != b.kem_ciphertext


def test_respond_does_not_mutate_and_consumption_is_exactly_once() -> None:
    state = bob_state()
    message = over_the_wire(initiate(ALICE, wire_bundle(state)))
    before = state.to_bytes()
    first = respond(BOB, state, message)
    again = respond(BOB, state, message)  # e.g. a forged copy: still nothing burned
    assert state.to_bytes() == before
    assert again.shared_secret == first.shared_secret
    # The session layer consumes only once the first ratchet message decrypted.
    state.consume(first.consumption)
    assert state.one_time_prekey_count == 1 and state.kem_prekey_count == 1
    with pytest.raises(UnknownPrekeyError):
        respond(BOB, state, message)  # replay after consumption
    with pytest.raises(UnknownPrekeyError):
        state.consume(first.consumption)


def test_two_sessions_claiming_one_prekey_only_one_consumes() -> None:
    state = bob_state()
    bundle = wire_bundle(state)
    first = respond(BOB, state, over_the_wire(initiate(ALICE, bundle)))
    second = respond(BOB, state, over_the_wire(initiate(MALLORY, bundle)))
    state.consume(first.consumption)
    with pytest.raises(UnknownPrekeyError):
        state.consume(second.consumption)


def test_last_resort_only_handshake_can_be_replayed_to_respond() -> None:
    # Documented (PQXDH 4.2): without one-time keys nothing is consumed; the session layer
    # recognises the replay by its base key.
    state = bob_state(0, 0)
    message = over_the_wire(initiate(ALICE, wire_bundle(state, one_time=False, kem=False)))
    first = respond(BOB, state, message)
    assert first.consumption.empty
    state.consume(first.consumption)
    second = respond(BOB, state, message)
    assert second.shared_secret == first.shared_secret and second.base_key == first.base_key


# --- refusal before any computation ------------------------------------------------------------


@pytest.fixture
def no_key_agreement(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> object:
        raise AssertionError("key agreement computed before the bundle was checked")

    for name in (
        "x25519",
        "x25519_public",
        "mlkem768_encapsulate",
        "mlkem768_decapsulate",
        "random_bytes",
    ):
        monkeypatch.setattr(primitives, name, forbidden)


@pytest.mark.parametrize("which", ["signed_prekey", "kem_prekey"])
def test_bad_signature_is_refused_before_any_dh(which: str, no_key_agreement: None) -> None:
    message = wire_bundle(STATE).to_wire()
    sub = getattr(message, which)
    sub.signature = bytes([sub.signature[0] ^ 1]) + sub.signature[1:]
    bundle = PrekeyBundle.from_wire(message, verify=False)
    with pytest.raises(InvalidSignatureError):
        initiate(ALICE, bundle)


def test_unexpected_identity_is_refused_before_any_dh(no_key_agreement: None) -> None:
    bundle = wire_bundle(STATE)  # correctly signed -- by Bob, not by whom Alice expects
    with pytest.raises(UntrustedIdentityError):
        initiate(ALICE, bundle, expected_identity=MALLORY.public)


STATE = bob_state()


def test_server_substituted_bundle_is_refused() -> None:
    # A server swaps in its own prekeys, signed by its own identity but claiming Bob's.
    forged = DevicePrekeys.generate(MALLORY, now_ms=T0, one_time_count=1, kem_count=1)
    message = forged.bundle(1, 1).to_wire()
    message.identity_key = BOB.public.encode()
    with pytest.raises(InvalidSignatureError):
        PrekeyBundle.decode(codec.encode(message))
    # Signed under Mallory's identity instead: valid, but not the identity Alice pinned.
    with pytest.raises(UntrustedIdentityError):
        initiate(ALICE, forged.bundle(1, 1), expected_identity=BOB.public)


def test_unknown_prekey_ids_are_refused_before_any_dh(monkeypatch: pytest.MonkeyPatch) -> None:
    state = bob_state()
    good = over_the_wire(initiate(ALICE, wire_bundle(state)))

    def forbidden(*args: object) -> object:
        raise AssertionError("DH computed for a message naming unknown prekeys")

    monkeypatch.setattr(primitives, "x25519", forbidden)
    monkeypatch.setattr(primitives, "mlkem768_decapsulate", forbidden)
    for field in ("signed_prekey_id", "one_time_prekey_id", "kem_prekey_id"):
        message = pb.PrekeyMessage()
        message.CopyFrom(good)
        setattr(message, field, 999_999)
        with pytest.raises(UnknownPrekeyError):
            respond(BOB, state, message)
    message = pb.PrekeyMessage()
    message.CopyFrom(good)
    message.kem_prekey_id = good.one_time_prekey_id  # an X25519 id is not a KEM id
    with pytest.raises(UnknownPrekeyError):
        respond(BOB, state, message)


# --- identities --------------------------------------------------------------------------------


def test_responder_checks_its_own_identity_and_the_expected_initiator() -> None:
    state = bob_state()
    message = over_the_wire(initiate(ALICE, wire_bundle(state)))
    with pytest.raises(InvalidKeyError):
        respond(MALLORY, state, message)  # prekeys were made by Bob
    with pytest.raises(UntrustedIdentityError):
        respond(BOB, state, message, expected_initiator=MALLORY.public)


def test_swapped_initiator_identity_changes_key_and_ad() -> None:
    # Mallory relabels Alice's prekey message as coming from her: DH1 and AD both change, so
    # the first ratchet message (bound to SK and AD) cannot authenticate.
    state = bob_state()
    sent = initiate(ALICE, wire_bundle(state))
    message = over_the_wire(sent)
    message.identity_key = MALLORY.public.encode()
    got = respond(BOB, state, message)
    assert got.initiator_identity == MALLORY.public
    assert got.shared_secret != sent.shared_secret
    assert got.associated_data != sent.associated_data


def _first_message_opens(
    sender_key: bytes, sender_ad: bytes, receiver_key: bytes, ad: bytes
) -> bool:
    # Stand-in for the first ratchet message: sealed under a key derived from SK, MACed with AD.
    sealed = seal(sender_key, b"hello", sender_ad, DR_MESSAGE_KEYS_INFO)
    try:
        open_sealed(receiver_key, sealed, ad, DR_MESSAGE_KEYS_INFO)
    except DecryptionError:
        return False
    return True


def test_tampered_kem_ciphertext_gives_another_key_and_the_first_mac_fails() -> None:
    state = bob_state()
    sent = initiate(ALICE, wire_bundle(state))
    message = over_the_wire(sent)
    ct = bytearray(message.kem_ciphertext)
    ct[100] ^= 0x01
    message.kem_ciphertext = bytes(ct)
    got = respond(BOB, state, message)  # implicit rejection: no error here ...
    assert got.shared_secret != sent.shared_secret
    assert got.associated_data == sent.associated_data
    # ... the first ratchet message's MAC fails instead, and nothing was consumed.
    assert not _first_message_opens(
        sent.shared_secret, sent.associated_data, got.shared_secret, got.associated_data
    )
    assert _first_message_opens(
        sent.shared_secret, sent.associated_data, sent.shared_secret, sent.associated_data
    )


def test_tampered_base_key_gives_another_key() -> None:
    state = bob_state()
    sent = initiate(ALICE, wire_bundle(state))
    message = over_the_wire(sent)
    message.base_key = primitives.x25519_generate()[1]
    assert respond(BOB, state, message).shared_secret != sent.shared_secret
    message.base_key = bytes(32)  # low-order point
    with pytest.raises(InvalidKeyError):
        respond(BOB, state, message)


def test_malformed_message_fields_are_typed_errors() -> None:
    state = bob_state()
    good = over_the_wire(initiate(ALICE, wire_bundle(state)))
    for field, value, error in (
        ("identity_key", b"\x01" * 64, DecodeError),
        ("base_key", bytes(31), DecodeError),
        ("kem_ciphertext", bytes(1087), DecodeError),
        ("version", 2, UnsupportedVersionError),
    ):
        message = pb.PrekeyMessage()
        message.CopyFrom(good)
        setattr(message, field, value)
        with pytest.raises(error):
            respond(BOB, state, message)


# --- rotation -----------------------------------------------------------------------------------


def test_message_built_before_rotation_opens_within_grace_period() -> None:
    state = bob_state()
    old_bundle = wire_bundle(state, kem=False)  # old signed prekey and old last-resort key
    sent = initiate(ALICE, old_bundle)
    rotated_at = T0 + 1_000
    state.rotate_signed_prekeys(BOB, now_ms=rotated_at)
    got = respond(BOB, state, over_the_wire(sent))
    assert got.shared_secret == sent.shared_secret
    assert got.signed_prekey_id == old_bundle.signed_prekey.id
    # New sessions use the new keys.
    fresh = initiate(ALICE, wire_bundle(state))
    assert respond(BOB, state, over_the_wire(fresh)).shared_secret == fresh.shared_secret
    # After the grace period the old keys are gone.
    state.prune(rotated_at + SIGNED_PREKEY_GRACE_PERIOD_MS)
    with pytest.raises(UnknownPrekeyError):
        respond(BOB, state, over_the_wire(sent))


# --- hostile input ------------------------------------------------------------------------------

_GOOD = codec.encode(over_the_wire(initiate(ALICE, wire_bundle(STATE))))


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(1, 255)).map(
            lambda t: _GOOD[: t[0]] + bytes((_GOOD[t[0]] ^ t[1],)) + _GOOD[t[0] + 1 :]
        ),
        st.integers(0, len(_GOOD)).map(lambda n: _GOOD[:n]),
    )
)
def test_respond_to_hostile_bytes_raises_only_typed_errors(data: bytes) -> None:
    before = STATE.to_bytes()
    try:
        respond(BOB, STATE, codec.decode(pb.PrekeyMessage, data))
    except TidingsError:
        pass
    assert STATE.to_bytes() == before


def test_results_hide_key_material_in_repr() -> None:
    state = bob_state()
    sent = initiate(ALICE, wire_bundle(state))
    got = respond(BOB, state, over_the_wire(sent))
    for text in (repr(sent), repr(got)):
        assert sent.shared_secret.hex()[:16] not in text
        assert got.signed_prekey_private.hex()[:16] not in text
        assert sent.base_key.hex()[:16] not in text
