"""Signed device lists: the value key transparency logs for each account (issue 12).

A device list names every device of an account with its identity key, at a version. Version 1
and an explicit *reset* (account recovery, re-registration: visible to contacts) are signed by a
device in the list itself; every other version N is signed by a device that was in version N-1
and commits to the hash of version N-1. So a device the server adds on its own appears in no list
an existing device signed: `verify_chain` names it. Canonical encoding::

    "tidings-kt-device-list-v1" 0x00 || var16 account (UTF-8) || u64 version || u8 reset
    || previous list hash (32; zeros for version 1) || u32 signer device id
    || u8 count || count x (u32 device id || identity key (65))   -- device ids strictly rising
    || Ed25519 signature (64) over everything before it, by the signer's identity key

The list hash (`SignedDeviceList.hash`) is SHA-256 of the whole encoding, signature included.
Pure and synchronous; signatures through `tidings.crypto.identity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tidings.crypto import primitives as p
from tidings.crypto.identity import IDENTITY_KEY_LEN, IdentityKey, IdentityKeyPair
from tidings.errors import (
    DecodeError,
    DeviceListChainError,
    InvalidSignatureError,
    OversizedError,
)
from tidings.wire.binary import U32_MAX, U64_MAX, Reader, identifier_bytes, u8, u32, u64, var16
from tidings.wire.limits import MAX_IDENTIFIER_CHARS

DEVICE_LIST_PREFIX = b"tidings-kt-device-list-v1\x00"
MAX_DEVICES = 16
"""Devices per account (one primary and its linked devices)."""
SIGNATURE_LEN = p.ED25519_SIGNATURE_LEN
HASH_LEN = 32
NO_PREVIOUS = bytes(HASH_LEN)
MAX_DEVICE_LIST_LEN = (
    len(DEVICE_LIST_PREFIX)
    + 2
    + 4 * MAX_IDENTIFIER_CHARS
    + 8
    + 1
    + HASH_LEN
    + 4
    + 1
    + MAX_DEVICES * (4 + IDENTITY_KEY_LEN)
    + SIGNATURE_LEN
)
"""Upper bound on an encoded list (an account id is at most `MAX_IDENTIFIER_CHARS` characters
of at most 4 UTF-8 bytes each)."""
_DEVICE_LEN = 4 + IDENTITY_KEY_LEN


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    """One version of an account's device list with its signature. Build with `sign_device_list`,
    parse with `decode_device_list`; `verify_chain` says whether it follows its predecessor."""

    account: str
    version: int
    reset: bool
    previous: bytes
    signer: int
    devices: tuple[tuple[int, IdentityKey], ...]
    signature: bytes

    def body(self) -> bytes:
        """The signed bytes: the encoding without the signature."""
        return _body(
            self.account, self.version, self.reset, self.previous, self.signer, self.devices
        )

    def encode(self) -> bytes:
        return self.body() + self.signature

    def hash(self) -> bytes:
        """SHA-256 of the encoding: what the next version and the directory entry commit to."""
        return p.sha256(self.encode())

    def device(self, device_id: int) -> IdentityKey | None:
        for candidate, key in self.devices:
            if candidate == device_id:
                return key
        return None


def _body(
    account: str,
    version: int,
    reset: bool,
    previous: bytes,
    signer: int,
    devices: Sequence[tuple[int, IdentityKey]],
) -> bytes:
    parts = [
        DEVICE_LIST_PREFIX,
        var16(identifier_bytes(account, "account id")),
        u64(version),
        u8(1 if reset else 0),
        previous,
        u32(signer),
        u8(len(devices)),
    ]
    parts.extend(u32(device_id) + key.encode() for device_id, key in devices)
    return b"".join(parts)


def _check_fields(
    version: int,
    reset: bool,
    previous: bytes,
    signer: int,
    devices: Sequence[tuple[int, IdentityKey]],
) -> None:
    if not 1 <= version <= U64_MAX:
        raise DecodeError("a device list's version is 1 or more")
    if version == 1 and (reset or previous != NO_PREVIOUS):
        raise DecodeError("version 1 of a device list has no predecessor and is no reset")
    if version > 1 and previous == NO_PREVIOUS:
        raise DecodeError("a device list after version 1 commits to its predecessor")
    if not 1 <= len(devices) <= MAX_DEVICES:
        raise DecodeError(f"a device list holds 1 to {MAX_DEVICES} devices")
    ids = [device_id for device_id, _ in devices]
    if any(not 0 <= i <= U32_MAX for i in ids) or ids != sorted(set(ids)):
        raise DecodeError("device ids are u32 values in strictly rising order")
    if not 0 <= signer <= U32_MAX:
        raise DecodeError("the signer is a u32 device id")


def sign_device_list(
    account: str,
    version: int,
    devices: Sequence[tuple[int, IdentityKey]],
    *,
    signer: int,
    signer_key: IdentityKeyPair,
    previous: SignedDeviceList | None = None,
    reset: bool = False,
) -> SignedDeviceList:
    """A device list signed by device ``signer`` (whose identity is ``signer_key``), committing
    to ``previous`` (required after version 1). Devices are sorted by id.

    Raises:
        DecodeError: a field is out of range (see the module docstring), or the account id is
            not a valid identifier.
    """
    ordered = tuple(sorted(devices, key=lambda device: device[0]))
    previous_hash = NO_PREVIOUS if previous is None else previous.hash()
    _check_fields(version, reset, previous_hash, signer, ordered)
    body = _body(account, version, reset, previous_hash, signer, ordered)
    return SignedDeviceList(
        account, version, reset, previous_hash, signer, ordered, signer_key.sign(body)
    )


def _read_device(reader: Reader) -> tuple[int, IdentityKey]:
    device_id = reader.u32()
    return device_id, IdentityKey.decode(reader.take(IDENTITY_KEY_LEN))


def decode_device_list(data: bytes) -> SignedDeviceList:
    """Parse an untrusted encoded device list. Does not check the signature (`verify_chain`).

    Raises:
        OversizedError: longer than `MAX_DEVICE_LIST_LEN`.
        TruncatedError: the input ends early.
        DecodeError: a wrong prefix, an invalid account id, a field out of range, devices out
            of order or too many, trailing bytes.
    """
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > MAX_DEVICE_LIST_LEN:
        raise OversizedError("a device list is too long")
    reader = Reader(data, "device list")
    if reader.take(len(DEVICE_LIST_PREFIX)) != DEVICE_LIST_PREFIX:
        raise DecodeError("not a Tidings device list")
    try:
        account = reader.var16().decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("the account id is not UTF-8") from None
    identifier_bytes(account, "account id")
    version = reader.u64()
    reset = reader.flag()
    previous = reader.take(HASH_LEN)
    signer = reader.u32()
    count = reader.u8()
    devices = tuple(reader.records(count, _DEVICE_LEN, _read_device, limit=MAX_DEVICES))
    signature = reader.take(SIGNATURE_LEN)
    reader.finish()
    _check_fields(version, reset, previous, signer, devices)
    return SignedDeviceList(account, version, reset, previous, signer, devices, signature)


LINK_PREFIX = b"tidings-kt-link-v1\x00"
LINK_SECRET_LEN = 16
"""The local secret a link code carries beside the server's code (never sent to the server)."""
LINK_BINDING_LEN = 32


def link_binding(secret: bytes, account: str, identity_key: IdentityKey) -> bytes:
    """HMAC-SHA256(secret, "tidings-kt-link-v1" 0x00 || account || identity key): what a new
    device hands over when it links with a code carrying ``secret``. The existing device that
    made the code recomputes it before it signs a list naming the new device; the server,
    which never sees ``secret``, cannot make one for a device of its own (the identity key is
    fixed-length and last, so the input is unambiguous)."""
    return p.hmac_sha256(secret, LINK_PREFIX + account.encode("utf-8") + identity_key.encode())


def check_link_binding(
    secret: bytes, account: str, identity_key: IdentityKey, binding: bytes
) -> bool:
    """Whether ``binding`` is `link_binding` of these values (constant time)."""
    return p.constant_time_equal(link_binding(secret, account, identity_key), binding)


def _self_signed(new: SignedDeviceList) -> None:
    key = new.device(new.signer)
    if key is not None:
        try:
            key.verify(new.body(), new.signature)
            return
        except InvalidSignatureError:
            pass
    ids = tuple(device_id for device_id, _ in new.devices)
    raise DeviceListChainError(
        f"device list version {new.version} is not signed by a device in it "
        f"(devices {', '.join(map(str, ids))} have no valid chain)",
        ids,
    )


def added_devices(
    previous: SignedDeviceList | None, new: SignedDeviceList
) -> tuple[tuple[int, IdentityKey], ...]:
    """The (device id, identity key) pairs of ``new`` not in ``previous``: what a contact's
    banner names. A device id whose key changed counts as added."""
    before = set() if previous is None else set(previous.devices)
    return tuple(device for device in new.devices if device not in before)


def verify_chain(previous: SignedDeviceList | None, new: SignedDeviceList) -> None:
    """Check that ``new`` validly follows ``previous`` (None: ``new`` must be version 1).

    Version 1 and a reset must be signed by a device in ``new``; any other version N must be
    version N-1 + 1 of the same account, commit to ``previous``'s hash and be signed by a device
    of ``previous`` under the identity key ``previous`` lists for it.

    Raises:
        DeviceListChainError: the chain breaks; ``device_ids`` names the devices of ``new``
            it does not vouch for (all of them for a bad self-signature, else the added ones).
    """
    if previous is None:
        if new.version != 1:
            raise DeviceListChainError(
                f"device list version {new.version} has no predecessor",
                tuple(device_id for device_id, _ in new.devices),
            )
        _self_signed(new)
        return
    added = tuple(device_id for device_id, _ in added_devices(previous, new))
    if new.account != previous.account:
        raise DeviceListChainError("the device list belongs to another account", added)
    if new.version != previous.version + 1 or new.previous != previous.hash():
        raise DeviceListChainError(
            f"device list version {new.version} does not follow version {previous.version}",
            added,
        )
    if new.reset:
        _self_signed(new)
        return
    key = previous.device(new.signer)
    try:
        if key is None:
            raise InvalidSignatureError("the signer is not in the previous list")
        key.verify(new.body(), new.signature)
    except InvalidSignatureError:
        names = ", ".join(map(str, added)) or "none added"
        raise DeviceListChainError(
            f"device list version {new.version} is not signed by a device of version "
            f"{previous.version}; devices without a valid chain: {names}",
            added,
        ) from None
