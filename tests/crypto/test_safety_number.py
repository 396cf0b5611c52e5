"""Safety numbers: known answers, symmetry, sensitivity to every device key of both sides
(the vouched device lists), QR payload matching."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto.safety_number import (
    ITERATIONS,
    QR_PAYLOAD_LEN,
    SAFETY_NUMBER_VERSION,
    SafetyNumber,
    ScanResult,
    displayable_digits,
    fingerprint,
)
from tidings.errors import DecodeError, InvalidKeyError, TidingsError, UnsupportedVersionError

KAT = json.loads((Path(__file__).parents[1] / "vectors" / "safety_number_kat.json").read_text())


def key(label: str) -> bytes:
    return b"\x01" + hashlib.sha512(label.encode()).digest()


ALICE, BOB, BOB_NEW, ALICE_NEW = key("alice"), key("bob"), key("bob 2"), key("alice 2")
# Computed once: each costs 2 x 5200 SHA-512.
A_VIEW = SafetyNumber.compute(ALICE, "alice", BOB, "bob")
B_VIEW = SafetyNumber.compute(BOB, "bob", ALICE, "alice")


def test_constants() -> None:
    assert ITERATIONS == KAT["constants"]["iterations"] == 5200
    assert KAT["constants"]["version"] == SAFETY_NUMBER_VERSION
    assert QR_PAYLOAD_LEN == 65


def test_known_answers() -> None:
    for case in KAT["cases"]:
        a, b = case["a"], case["b"]
        ka = [bytes.fromhex(k) for k in a["identity_keys"]]
        kb = [bytes.fromhex(k) for k in b["identity_keys"]]
        assert fingerprint(ka, a["account"]).hex() == a["fingerprint"]
        from_a = SafetyNumber.compute(ka, a["account"], kb, b["account"])
        from_b = SafetyNumber.compute(kb, b["account"], ka, a["account"])
        assert from_a.digits == from_b.digits == case["digits"]
        assert from_a.display() == case["display"]
        assert from_a.qr_payload().hex() == case["qr_payload_a"]
        assert from_b.qr_payload().hex() == case["qr_payload_b"]
        assert from_a.matches_scanned(bytes.fromhex(case["qr_payload_b"])) is ScanResult.MATCH


def test_both_sides_see_the_same_number() -> None:
    assert A_VIEW.digits == B_VIEW.digits
    assert len(A_VIEW.digits) == 60 and A_VIEW.digits.isdigit()
    assert len(A_VIEW.groups) == 12 and all(len(g) == 5 for g in A_VIEW.groups)
    assert A_VIEW.display() == " ".join(A_VIEW.groups)
    halves = {
        displayable_digits(A_VIEW.local_fingerprint),
        displayable_digits(B_VIEW.local_fingerprint),
    }
    assert {A_VIEW.digits[:30], A_VIEW.digits[30:]} == halves
    assert A_VIEW.digits[:30] <= A_VIEW.digits[30:]


def test_number_changes_when_either_key_or_name_changes() -> None:
    variants = [
        SafetyNumber.compute(ALICE, "alice", BOB_NEW, "bob"),
        SafetyNumber.compute(ALICE_NEW, "alice", BOB, "bob"),
        SafetyNumber.compute(ALICE, "alice", BOB, "bobby"),
        SafetyNumber.compute(ALICE, "alicia", BOB, "bob"),
    ]
    digits = {v.digits for v in variants} | {A_VIEW.digits}
    assert len(digits) == 5
    for v in variants:
        assert A_VIEW.matches_scanned(v.qr_payload()) is ScanResult.MISMATCH


def test_the_number_covers_every_device_of_a_side() -> None:
    two = SafetyNumber.compute(ALICE, "alice", [BOB, BOB_NEW], "bob")
    assert two.digits != A_VIEW.digits  # a device added to bob's list changes the number
    # The order the devices are given in does not matter; the other side sees the same.
    assert SafetyNumber.compute(ALICE, "alice", [BOB_NEW, BOB], "bob").digits == two.digits
    assert SafetyNumber.compute([BOB_NEW, BOB], "bob", [ALICE], "alice").digits == two.digits
    assert SafetyNumber.compute(ALICE, "alice", [BOB], "bob").digits == A_VIEW.digits
    assert A_VIEW.matches_scanned(two.qr_payload()) is ScanResult.MISMATCH
    for bad in ([], [BOB, BOB], [key(str(i)) for i in range(17)], [BOB, BOB[:64]]):
        with pytest.raises(InvalidKeyError):
            fingerprint(bad, "bob")


def test_only_one_half_of_the_identity_key_changing_is_noticed() -> None:
    # A substituted X25519 half with the same Ed25519 half is a different identity.
    substituted = BOB[:33] + bytes(32)
    assert SafetyNumber.compute(ALICE, "alice", substituted, "bob").digits != A_VIEW.digits


def test_qr_payload_round_trip_and_mismatch() -> None:
    assert A_VIEW.matches_scanned(B_VIEW.qr_payload()) is ScanResult.MATCH
    assert B_VIEW.matches_scanned(A_VIEW.qr_payload()) is ScanResult.MATCH
    # Scanning one's own code (halves in the wrong order) is not a match.
    assert A_VIEW.matches_scanned(A_VIEW.qr_payload()) is ScanResult.MISMATCH
    payload = B_VIEW.qr_payload()
    for i in (1, 32, 33, 64):
        flipped = bytearray(payload)
        flipped[i] ^= 0x01
        assert A_VIEW.matches_scanned(bytes(flipped)) is ScanResult.MISMATCH
    assert len(payload) == QR_PAYLOAD_LEN and payload[0] == SAFETY_NUMBER_VERSION


def test_malformed_payloads() -> None:
    payload = B_VIEW.qr_payload()
    for n in (0, 1, 33, 64, 66, 130):
        with pytest.raises(DecodeError):
            A_VIEW.matches_scanned((payload * 3)[:n])
    with pytest.raises(UnsupportedVersionError):
        A_VIEW.matches_scanned(b"\x01" + payload[1:])  # version 1: one key per side
    with pytest.raises(DecodeError):
        A_VIEW.matches_scanned("not bytes")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=100))
def test_matches_scanned_raises_only_typed_errors(data: bytes) -> None:
    try:
        result = A_VIEW.matches_scanned(data)
    except TidingsError:
        return
    assert result is ScanResult.MISMATCH


def test_input_validation() -> None:
    for bad_key in (b"", ALICE[:64], ALICE + b"\x00"):
        with pytest.raises(InvalidKeyError):
            fingerprint(bad_key, "alice")
    for bad_name in ("", "x" * 65, "\ud800"):
        with pytest.raises(DecodeError):
            fingerprint(ALICE, bad_name)


def test_repr_is_not_the_number() -> None:
    assert A_VIEW.digits not in repr(A_VIEW)


def test_cost_is_a_few_milliseconds() -> None:
    start = time.perf_counter()
    SafetyNumber.compute(ALICE, "alice", BOB, "bob")
    assert time.perf_counter() - start < 0.5
