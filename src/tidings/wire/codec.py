"""Decoding and encoding of the protobuf wire formats, with typed errors.

`decode(kind, data)` is the single entry point for untrusted bytes: it checks the size limit,
parses, checks the version and the structural invariants of that message kind (field lengths,
required sub-messages), and raises a `tidings.errors.DecodeError` subclass naming the problem.
It never raises anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message

from tidings.errors import DecodeError, OversizedError, UnsupportedVersionError
from tidings.wire import limits
from tidings.wire import tidings_pb2 as pb

M = TypeVar("M", bound=Message)

X25519_KEY_LEN = 32
ED25519_KEY_LEN = 32
ED25519_SIGNATURE_LEN = 64
MLKEM768_PUBLIC_KEY_LEN = 1184
MLKEM768_CIPHERTEXT_LEN = 1088
IDENTITY_KEY_LEN = 65
HEADER_LEN = 40
MAC_LEN = 32
COMMITMENT_LEN = 32
FRANKING_KEY_LEN = 32
DISTRIBUTION_ID_LEN = 16
MESSAGE_ID_LEN = 16
GROUP_ID_LEN = 16
CONVERSATION_ID_LEN = 32
AES_BLOCK = 16


def _require_len(value: bytes, length: int, what: str) -> None:
    if len(value) != length:
        raise DecodeError(f"{what} must be {length} bytes, got {len(value)}")


def _require_ciphertext(value: bytes, what: str) -> None:
    # CBC ciphertext (>= one block, whole blocks) followed by the 32-byte MAC.
    body = len(value) - MAC_LEN
    if body < AES_BLOCK or body % AES_BLOCK:
        raise DecodeError(f"{what} has an impossible length {len(value)}")


def _check_signed_prekey(spk: pb.SignedPrekey) -> None:
    _require_len(spk.public_key, X25519_KEY_LEN, "signed prekey")
    _require_len(spk.signature, ED25519_SIGNATURE_LEN, "signed prekey signature")


def _check_kem_prekey(kem: pb.KemPrekey) -> None:
    _require_len(kem.public_key, MLKEM768_PUBLIC_KEY_LEN, "ML-KEM prekey")
    _require_len(kem.signature, ED25519_SIGNATURE_LEN, "ML-KEM prekey signature")


def _check_bundle(m: pb.PrekeyBundle) -> None:
    _require_len(m.identity_key, IDENTITY_KEY_LEN, "identity key")
    if not m.HasField("signed_prekey"):
        raise DecodeError("bundle has no signed prekey")
    if not m.HasField("kem_prekey"):
        raise DecodeError("bundle has no ML-KEM prekey")
    _check_signed_prekey(m.signed_prekey)
    _check_kem_prekey(m.kem_prekey)
    if m.HasField("one_time_prekey"):
        _require_len(m.one_time_prekey.public_key, X25519_KEY_LEN, "one-time prekey")


def _check_ratchet_message(m: pb.RatchetMessage) -> None:
    _require_len(m.header, HEADER_LEN, "ratchet header")
    _require_ciphertext(m.ciphertext, "ratchet ciphertext")


def _check_prekey_message(m: pb.PrekeyMessage) -> None:
    _require_len(m.identity_key, IDENTITY_KEY_LEN, "identity key")
    _require_len(m.base_key, X25519_KEY_LEN, "base key")
    _require_len(m.kem_ciphertext, MLKEM768_CIPHERTEXT_LEN, "ML-KEM ciphertext")
    if not m.HasField("message"):
        raise DecodeError("prekey message carries no ratchet message")
    _require_version(m.message)
    _check_ratchet_message(m.message)


def _check_sender_key_message(m: pb.SenderKeyMessage) -> None:
    _require_len(m.distribution_id, DISTRIBUTION_ID_LEN, "distribution id")
    _require_ciphertext(m.ciphertext, "sender-key ciphertext")
    _require_len(m.signature, ED25519_SIGNATURE_LEN, "sender-key signature")


def _check_sender_key_distribution(m: pb.SenderKeyDistribution) -> None:
    _require_len(m.distribution_id, DISTRIBUTION_ID_LEN, "distribution id")
    _require_len(m.chain_key, 32, "chain key")
    _require_len(m.signing_key, ED25519_KEY_LEN, "signing key")


def _check_data(m: pb.DataMessage) -> None:
    if len(m.body) > limits.MAX_TEXT_CHARS:
        raise OversizedError(f"text longer than {limits.MAX_TEXT_CHARS} characters")
    if len(m.attachments) > limits.MAX_ATTACHMENTS:
        raise OversizedError(f"more than {limits.MAX_ATTACHMENTS} attachments")
    for a in m.attachments:
        _require_len(a.key, 32, "attachment key")
        _require_len(a.digest, 32, "attachment digest")
        if not a.id or len(a.id) > limits.MAX_IDENTIFIER_CHARS:
            raise DecodeError("attachment id is empty or too long")
        if a.chunk_size == 0:
            raise DecodeError("attachment chunk size is zero")
    if m.HasField("group"):
        _require_len(m.group.group_id, GROUP_ID_LEN, "group id")
        if len(m.group.members) > limits.MAX_GROUP_MEMBERS:
            raise OversizedError(f"more than {limits.MAX_GROUP_MEMBERS} group members")


def _check_content(m: pb.Content) -> None:
    if m.previous_commitment:
        _require_len(m.previous_commitment, COMMITMENT_LEN, "previous commitment")
    _require_len(m.conversation_id, CONVERSATION_ID_LEN, "conversation id")
    kind = m.WhichOneof("body")
    if kind is None:
        raise DecodeError("content has no body")
    if kind == "data":
        _check_data(m.data)
    elif kind == "sent":
        _check_data(m.sent.message)
    elif kind == "sender_key_distribution":
        _require_version(m.sender_key_distribution)
        _check_sender_key_distribution(m.sender_key_distribution)


def _check_franked_content(m: pb.FrankedContent) -> None:
    _require_len(m.franking_key, FRANKING_KEY_LEN, "franking key")
    if not m.content:
        raise DecodeError("franked content is empty")
    if any(m.padding):
        raise DecodeError("padding is not all zero")


def _check_envelope(m: pb.Envelope) -> None:
    if m.type == pb.Envelope.UNKNOWN or m.type not in pb.Envelope.Type.values():
        raise DecodeError("envelope type is unknown")
    if not m.sender or not m.recipient:
        raise DecodeError("envelope lacks sender or recipient")
    if max(len(m.sender), len(m.recipient)) > limits.MAX_IDENTIFIER_CHARS:
        raise DecodeError("envelope account name too long")
    _require_len(m.message_id, MESSAGE_ID_LEN, "message id")
    _require_len(m.commitment, COMMITMENT_LEN, "commitment")
    _require_len(m.franking_tag, MAC_LEN, "franking tag")
    if not m.body:
        raise DecodeError("envelope body is empty")


_SPECS: dict[type[Message], tuple[int, Callable[[object], None]]] = {}


def _spec(cls: type[M], limit: int, check: Callable[[M], None]) -> None:
    _SPECS[cls] = (limit, check)  # type: ignore[assignment]


_spec(pb.PrekeyBundle, limits.MAX_BUNDLE_BYTES, _check_bundle)
_spec(pb.PrekeyMessage, limits.MAX_PREKEY_MESSAGE_BYTES, _check_prekey_message)
_spec(pb.RatchetMessage, limits.MAX_RATCHET_MESSAGE_BYTES, _check_ratchet_message)
_spec(pb.SenderKeyMessage, limits.MAX_SENDER_KEY_MESSAGE_BYTES, _check_sender_key_message)
_spec(
    pb.SenderKeyDistribution,
    limits.MAX_SENDER_KEY_DISTRIBUTION_BYTES,
    _check_sender_key_distribution,
)
_spec(pb.Content, limits.MAX_CONTENT_BYTES, _check_content)
_spec(pb.FrankedContent, limits.MAX_FRANKED_CONTENT_BYTES, _check_franked_content)
_spec(pb.Envelope, limits.MAX_ENVELOPE_BYTES, _check_envelope)

DECODABLE: tuple[type[Message], ...] = tuple(_SPECS)
"""Every message kind `decode` accepts (the fuzz targets iterate over this)."""


def _require_version(m: Message) -> None:
    version: int = getattr(m, "version")  # noqa: B009 - every top-level kind has it
    if version != limits.PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"{m.DESCRIPTOR.name} version {version} is not supported "
            f"(this implementation speaks {limits.PROTOCOL_VERSION})"
        )


def decode(kind: type[M], data: bytes) -> M:
    """Parse untrusted ``data`` as a ``kind`` message and check its invariants.

    Raises:
        OversizedError: ``data`` exceeds the limit for ``kind``.
        UnsupportedVersionError: the version field is not `limits.PROTOCOL_VERSION`.
        DecodeError: the bytes are not a valid encoding, or a field breaks an invariant.
    """
    try:
        limit, check = _SPECS[kind]
    except KeyError:
        raise TypeError(f"{kind.__name__} is not a decodable wire message") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("input is not bytes")
    if len(data) > limit:
        raise OversizedError(f"{kind.DESCRIPTOR.name} of {len(data)} bytes exceeds {limit}")
    message = kind()
    try:
        message.ParseFromString(bytes(data))
    except (_ProtobufDecodeError, ValueError, RuntimeError) as exc:
        raise DecodeError(f"{kind.DESCRIPTOR.name} is not a valid encoding") from exc
    _require_version(message)
    check(message)
    return message


def encode(message: Message) -> bytes:
    """Serialize ``message`` deterministically (stable bytes for the same message)."""
    return message.SerializeToString(deterministic=True)
