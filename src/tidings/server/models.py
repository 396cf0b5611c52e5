"""Request and response bodies of the messaging API (docs/api.md), and their conversion to
storage records with every cryptographic check the server can make on public keys."""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message
from pydantic import BaseModel, Field

from tidings.crypto.identity import IdentityKey
from tidings.crypto.kem_prekeys import KemPrekey
from tidings.crypto.kt_device_list import LINK_BINDING_LEN
from tidings.crypto.prekeys import OneTimePrekey, SignedPrekey
from tidings.errors import DecodeError
from tidings.server.auth import SECRET_LEN, credential_hash
from tidings.server.ids import (
    ClaimedRegistrationIdJson,
    DeviceIdJson,
    JsonInt,
    RegistrationIdJson,
)
from tidings.storage.messaging import NewDevice
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import B64URL_PATTERN, b64d
from tidings.wire.codec import COMMITMENT_LEN, IDENTITY_KEY_LEN
from tidings.wire.limits import MAX_ENVELOPE_BYTES

M = TypeVar("M", bound=Message)

USERNAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{2,31}$")
"""Usernames: 3-32 characters, lower-case letters, digits, '_', '.', '-', starting with a
letter (so they cannot be confused with device ids or look like another script's letters)."""

def b64url_of(size: int) -> str:
    """The pattern of exactly ``size`` bytes in unpadded base64url."""
    return f"^[A-Za-z0-9_-]{{{(size * 4 + 2) // 3}}}$"


def b64url_max(size: int) -> int:
    """The longest unpadded base64url text of at most ``size`` bytes."""
    return (size * 4 + 2) // 3


MAX_PREKEYS_PER_UPLOAD = 200
_MAX_KEY_B64 = 2048  # an encoded KEM prekey is ~1.26 KB


def check_username(username: str) -> str:
    if not USERNAME_PATTERN.match(username):
        raise DecodeError(
            "usernames are 3-32 characters: lower-case letters, digits, '_', '.', '-', "
            "starting with a letter"
        )
    return username


def _part(kind: type[M], text: str, what: str) -> M:
    message = kind()
    try:
        message.ParseFromString(b64d(text, what=what, max_len=_MAX_KEY_B64))
    except (_ProtobufDecodeError, ValueError, RuntimeError):
        raise DecodeError(f"{what} is not a valid encoding") from None
    return message


EncodedKey = Annotated[str, Field(pattern=B64URL_PATTERN, max_length=b64url_max(_MAX_KEY_B64))]
"""A prekey record (protobuf) in base64url."""


class PrekeyUpload(BaseModel):
    signed_prekey: EncodedKey | None = None
    last_resort_kem_prekey: EncodedKey | None = None
    one_time_prekeys: list[EncodedKey] = Field(
        default_factory=list, max_length=MAX_PREKEYS_PER_UPLOAD
    )
    kem_prekeys: list[EncodedKey] = Field(default_factory=list, max_length=MAX_PREKEYS_PER_UPLOAD)


class CheckedPrekeys:
    """Prekeys whose signatures verified against the device's identity key, re-encoded."""

    def __init__(self, upload: PrekeyUpload, identity: IdentityKey) -> None:
        self.signed: bytes | None = None
        self.last_resort: bytes | None = None
        if upload.signed_prekey is not None:
            signed = SignedPrekey.from_wire(
                _part(pb.SignedPrekey, upload.signed_prekey, "signed prekey")
            )
            signed.verify(identity)
            self.signed = codec.encode(signed.to_wire())
        if upload.last_resort_kem_prekey is not None:
            self.last_resort = self._kem(upload.last_resort_kem_prekey, identity, last_resort=True)
        self.one_time = []
        for text in upload.one_time_prekeys:
            key = OneTimePrekey.from_wire(_part(pb.OneTimePrekey, text, "one-time prekey"))
            self.one_time.append((key.id, codec.encode(key.to_wire())))
        self.kem = []
        for text in upload.kem_prekeys:
            encoded = self._kem(text, identity, last_resort=False)
            self.kem.append((pb.KemPrekey.FromString(encoded).id, encoded))
        for keys in (self.one_time, self.kem):
            # Ids are unique per device in storage: a repeated id in one request is a client
            # bug, answered as such rather than as a constraint violation.
            if len({key_id for key_id, _ in keys}) != len(keys):
                raise DecodeError("a prekey id appears twice in one upload")

    @staticmethod
    def _kem(text: str, identity: IdentityKey, *, last_resort: bool) -> bytes:
        key = KemPrekey.from_wire(_part(pb.KemPrekey, text, "ML-KEM prekey"))
        if key.last_resort != last_resort:
            raise DecodeError("ML-KEM prekey has the wrong last-resort flag")
        key.verify(identity)
        return codec.encode(key.to_wire())


class DeviceKeys(PrekeyUpload):
    name: str = Field(min_length=1, max_length=64)
    registration_id: RegistrationIdJson
    identity_key: str = Field(pattern=b64url_of(IDENTITY_KEY_LEN))
    secret: str = Field(pattern=b64url_of(SECRET_LEN))

    def to_new_device(self) -> NewDevice:
        """Check every key and signature.

        Raises:
            DecodeError: a malformed field or key; InvalidSignatureError: a prekey signature
            does not verify under the identity key.
        """
        identity = IdentityKey.decode(b64d(self.identity_key, what="identity key", max_len=65))
        secret = b64d(self.secret, what="secret", max_len=SECRET_LEN)
        if len(secret) != SECRET_LEN:
            raise DecodeError(f"the device secret must be {SECRET_LEN} bytes")
        if self.signed_prekey is None or self.last_resort_kem_prekey is None:
            raise DecodeError("a device needs a signed prekey and a last-resort ML-KEM prekey")
        keys = CheckedPrekeys(self, identity)
        assert keys.signed is not None and keys.last_resort is not None
        return NewDevice(
            name=self.name,
            registration_id=self.registration_id,
            identity_key=identity.encode(),
            credential_hash=credential_hash(secret),
            signed_prekey=keys.signed,
            last_resort_kem_prekey=keys.last_resort,
            one_time_prekeys=keys.one_time,
            kem_prekeys=keys.kem,
        )


class Registration(BaseModel):
    username: str = Field(max_length=32, pattern=USERNAME_PATTERN.pattern)
    device: DeviceKeys


class LinkRequest(BaseModel):
    username: str = Field(max_length=32, pattern=USERNAME_PATTERN.pattern)
    code: str = Field(min_length=4, max_length=32)
    device: DeviceKeys
    link_binding: str | None = Field(
        default=None,
        pattern=b64url_of(LINK_BINDING_LEN),
        description="base64url of HMAC-SHA256(link secret, \"tidings-kt-link-v1\" 0x00 || "
        "account || identity key): kept with the device, shown to the account's devices "
        "(docs/key-transparency.md \"Clients\"). The server never sees the secret.",
    )


class Registered(BaseModel):
    username: str
    device_id: int


class ProvisioningCode(BaseModel):
    code: str
    expires_at_ms: int


class OwnDevice(BaseModel):
    device_id: int
    name: str
    created_at_ms: int
    last_seen_ms: int
    identity_key: str = Field(description="base64url of the device's identity key (65 bytes).")
    link_binding: str | None = Field(
        default=None, description="base64url of the link binding it was linked with, if any."
    )


class OwnDevices(BaseModel):
    devices: list[OwnDevice]


class Rename(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class PublicDevice(BaseModel):
    device_id: int
    registration_id: int
    identity_key: str


class PublicDevices(BaseModel):
    devices: list[PublicDevice]


class PrekeyCount(BaseModel):
    one_time: int
    kem: int


class DeviceBundle(BaseModel):
    device_id: int
    bundle: str


class Bundles(BaseModel):
    username: str
    bundles: list[DeviceBundle]


MAX_MESSAGES_PER_SEND = 1000
"""Devices one send may address (a send to 1000 devices fits `tidings.app.MAX_JSON_BODY`)."""
MESSAGE_TYPE_MIN, MESSAGE_TYPE_MAX = 1, 3
"""``Envelope.Type``: PREKEY, RATCHET, SENDER_KEY."""


class OutgoingMessage(BaseModel):
    """One device's message of a send. `tidings.server.frames` checks the same fields by hand
    for WebSocket ``send`` frames: a change here goes there too (tests/server/test_frames.py
    compares the two)."""

    device_id: DeviceIdJson
    registration_id: ClaimedRegistrationIdJson
    type: JsonInt = Field(ge=MESSAGE_TYPE_MIN, le=MESSAGE_TYPE_MAX)
    body: str = Field(pattern=B64URL_PATTERN, max_length=b64url_max(MAX_ENVELOPE_BYTES))
    commitment: str = Field(pattern=b64url_of(COMMITMENT_LEN))


class SendRequest(BaseModel):
    messages: list[OutgoingMessage] = Field(max_length=MAX_MESSAGES_PER_SEND)


class SendResult(BaseModel):
    server_timestamp_ms: int
    message_ids: list[str]


class Pending(BaseModel):
    envelopes: list[str]
    more: bool


class AttachmentCreated(BaseModel):
    id: str
    expires_at_ms: int
