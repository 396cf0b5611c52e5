"""Signed device lists (`tidings.crypto.kt_device_list`): round trips, the signature chain (a
device the server adds has no valid chain and is named), resets, and decoder refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import kt_device_list as dl
from tidings.crypto.identity import IdentityKeyPair
from tidings.errors import (
    CryptoError,
    DecodeError,
    DeviceListChainError,
    OversizedError,
    TidingsError,
)


def _key(n: int) -> IdentityKeyPair:
    return IdentityKeyPair(bytes([n]) * 32, bytes([n + 100]) * 32)


PHONE, LAPTOP, GHOST = _key(1), _key(2), _key(3)
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "kt_kat.json").read_text())


def _genesis() -> dl.SignedDeviceList:
    return dl.sign_device_list("alice", 1, [(1, PHONE.public)], signer=1, signer_key=PHONE)


def _linked(first: dl.SignedDeviceList) -> dl.SignedDeviceList:
    return dl.sign_device_list(
        "alice",
        2,
        [(2, LAPTOP.public), (1, PHONE.public)],
        signer=1,
        signer_key=PHONE,
        previous=first,
    )


def test_errors_are_typed() -> None:
    assert issubclass(DeviceListChainError, CryptoError)
    assert DeviceListChainError.code == "device_list_chain_broken"


def test_known_answers() -> None:
    """Lists from the independent transcription in tests/vectors/gen_kt_kat.py (device i has
    identity i): version 1, a linked device, then a reset by a new device 5."""
    first = _genesis()
    second = _linked(first)
    reset = dl.sign_device_list(
        "alice", 3, [(5, _key(5).public)], signer=5, signer_key=_key(5), previous=second, reset=True
    )
    assert [x.encode().hex() for x in (first, second, reset)] == VECTORS["device_lists"]
    decoded = [dl.decode_device_list(bytes.fromhex(x)) for x in VECTORS["device_lists"]]
    dl.verify_chain(None, decoded[0])
    dl.verify_chain(decoded[0], decoded[1])
    dl.verify_chain(decoded[1], decoded[2])


def test_round_trip_and_a_valid_chain() -> None:
    first = _genesis()
    second = _linked(first)
    for signed in (first, second):
        assert dl.decode_device_list(signed.encode()) == signed
        assert len(signed.encode()) <= dl.MAX_DEVICE_LIST_LEN
    assert [device_id for device_id, _ in second.devices] == [1, 2]  # sorted canonically
    dl.verify_chain(None, first)
    dl.verify_chain(first, second)
    assert dl.added_devices(first, second) == ((2, LAPTOP.public),)


def test_a_device_the_server_adds_has_no_chain_and_is_named() -> None:
    first = _genesis()
    # The server holds no device key of alice's, so it signs with the ghost's own key.
    ghost = dl.sign_device_list(
        "alice",
        2,
        [(1, PHONE.public), (9, GHOST.public)],
        signer=9,
        signer_key=GHOST,
        previous=first,
    )
    with pytest.raises(DeviceListChainError, match="9") as caught:
        dl.verify_chain(first, ghost)
    assert caught.value.device_ids == (9,)
    # Claiming the phone signed it does not help: the signature is not the phone's.
    forged = dl.SignedDeviceList(
        ghost.account, 2, False, ghost.previous, 1, ghost.devices, ghost.signature
    )
    with pytest.raises(DeviceListChainError) as caught:
        dl.verify_chain(first, forged)
    assert caught.value.device_ids == (9,)


def test_chain_breaks_are_refused() -> None:
    first = _genesis()
    second = _linked(first)
    with pytest.raises(DeviceListChainError):
        dl.verify_chain(None, second)  # no predecessor for version 2
    with pytest.raises(DeviceListChainError):
        dl.verify_chain(second, second)  # not the next version
    other = dl.sign_device_list("bob", 1, [(1, PHONE.public)], signer=1, signer_key=PHONE)
    with pytest.raises(DeviceListChainError):
        dl.verify_chain(other, _linked(first))  # commits to another list
    self_signed_wrong = dl.sign_device_list(
        "alice", 1, [(1, PHONE.public)], signer=1, signer_key=GHOST
    )
    with pytest.raises(DeviceListChainError):
        dl.verify_chain(None, self_signed_wrong)


def test_a_reset_is_self_signed_and_visible() -> None:
    first = _genesis()
    reset = dl.sign_device_list(
        "alice", 2, [(5, GHOST.public)], signer=5, signer_key=GHOST, previous=first, reset=True
    )
    dl.verify_chain(first, reset)
    assert dl.decode_device_list(reset.encode()).reset
    with pytest.raises(DecodeError):
        dl.sign_device_list("alice", 1, [(1, PHONE.public)], signer=1, signer_key=PHONE, reset=True)


def test_field_limits() -> None:
    with pytest.raises(DecodeError):
        dl.sign_device_list("alice", 1, [], signer=1, signer_key=PHONE)
    too_many = [(i, PHONE.public) for i in range(dl.MAX_DEVICES + 1)]
    with pytest.raises(DecodeError):
        dl.sign_device_list("alice", 1, too_many, signer=1, signer_key=PHONE)
    with pytest.raises(DecodeError):
        dl.sign_device_list(
            "alice", 1, [(1, PHONE.public), (1, LAPTOP.public)], signer=1, signer_key=PHONE
        )
    with pytest.raises(OversizedError):
        dl.decode_device_list(bytes(dl.MAX_DEVICE_LIST_LEN + 1))


def test_every_bit_flip_is_refused() -> None:
    first = _genesis()
    second = _linked(first)
    data = second.encode()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            decoded = dl.decode_device_list(bytes(flipped))
        except DecodeError:
            continue
        with pytest.raises(TidingsError):
            dl.verify_chain(first, decoded)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=600))
def test_decoder_gives_only_typed_errors(data: bytes) -> None:
    try:
        dl.decode_device_list(data)
    except TidingsError:
        pass
