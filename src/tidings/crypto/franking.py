"""Message franking (Tidings franking v1): verifiable abuse reports on end-to-end encrypted chat.

Roles and the bytes each one handles (docs/protocol.md is the normative text):

- **Sender** (`frank`): draws a fresh 32-byte franking key per message and computes
  ``commitment = HMAC-SHA256(franking_key, content)`` over the *exact serialized Content bytes*.
  The ratchet / sender-key plaintext is a padded ``FrankedContent`` carrying the key and those
  bytes. The commitment travels in the clear in the Envelope and the session layer binds it into
  the associated data of the encryption, so a ciphertext cannot be re-paired with another one.
- **Server** (`compute_franking_tag`): on accepting an envelope, MACs the commitment together
  with the routing metadata it vouches for (sender, devices, recipient, its own timestamp and
  message id) under its secret franking key. It never sees the content.
- **Receiver** (`open_franked`): decrypts, then refuses any message whose commitment does not
  open (`CommitmentMismatchError`). It must keep the franking key, the exact content bytes, the
  commitment, the tag and the envelope metadata with the message (`ReportItem.from_envelope`):
  without the franking key the message can never be reported. The commitment and the tag are
  public to the server; the franking key and the content are revealed only in a report.
- **Report verifier** (`verify_report_item`, `verify_context_chain`, `verify_report`): checks
  that each reported item opens, that the server's tag vouches for its metadata, and that a run
  of items is an unbroken per-sender excerpt of one conversation (transcript franking).

Why it is binding: HMAC-SHA256 is collision resistant as a function of (key, message), so a
sender cannot find a second (franking key, content) pair for the same commitment — she cannot
send one thing and later have a different thing verify as "what she sent". The reporter cannot
forge either: the tag is over the commitment, and the commitment fixes the content.

Nothing here reads a clock, does I/O or keeps global state. Errors are `tidings.errors` types;
no message or repr contains key material or content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from tidings.crypto.primitives import constant_time_equal, hmac_sha256, random_bytes, sha256
from tidings.errors import (
    CommitmentMismatchError,
    ContextChainError,
    DecodeError,
    InvalidFrankingTagError,
    InvalidKeyError,
    OversizedError,
    UnsupportedVersionError,
)
from tidings.wire import codec, limits
from tidings.wire import tidings_pb2 as pb
from tidings.wire.binary import (
    U32_MAX,
    U64_MAX,
    Reader,
    identifier_bytes,
    require_bytes,
    require_uint,
    u8,
    u32,
    u64,
    var16,
    var32,
)

__all__ = [
    "COMMITMENT_LEN",
    "CONVERSATION_ID_LEN",
    "DIRECT_CONVERSATION_LABEL",
    "FRANKING_KEY_LEN",
    "FRANKING_TAG_LABEL",
    "FRANKING_TAG_LEN",
    "GROUP_CONVERSATION_LABEL",
    "MAX_CONTEXT_ITEMS",
    "PADDING_BUCKET",
    "REPORT_ITEM_FORMAT",
    "SERVER_FRANKING_KEY_LEN",
    "ChainFault",
    "FrankedPlaintext",
    "FrankingTagInput",
    "OpenedContent",
    "ReportItem",
    "TaggedFields",
    "compute_commitment",
    "compute_franking_tag",
    "direct_conversation_id",
    "frank",
    "franking_tag_input_bytes",
    "group_conversation_id",
    "open_franked",
    "padding_length",
    "tagged_fields",
    "verify_context_chain",
    "verify_franking_tag",
    "verify_report",
    "verify_report_item",
]

FRANKING_KEY_LEN = codec.FRANKING_KEY_LEN
"""32: the per-message franking key, fresh random bytes for every message."""

COMMITMENT_LEN = codec.COMMITMENT_LEN
"""32: HMAC-SHA256(franking key, Content bytes)."""

FRANKING_TAG_LEN = codec.MAC_LEN
"""32: the server's tag, a full HMAC-SHA256 output (never truncated)."""

SERVER_FRANKING_KEY_LEN = 32
"""The server's franking key: 32 random bytes, kept secret by the server."""

CONVERSATION_ID_LEN = codec.CONVERSATION_ID_LEN
"""32: SHA-256 output, see `direct_conversation_id` / `group_conversation_id`."""

MESSAGE_ID_LEN = codec.MESSAGE_ID_LEN
"""16: the server-assigned message id."""

PADDING_BUCKET = 160
"""The encoded FrankedContent is padded with zero bytes to the next multiple of this many bytes
(as Signal pads to multiples of 160). 160 is a multiple of the AES block, so the CBC ciphertext
length reveals only the bucket. Receivers do not check the bucket (only that padding is zero), so
it can change without a version bump."""

FRANKING_TAG_LABEL = b"Tidings_FrankingTag_v1"
"""Domain label that starts the server tag input."""

DIRECT_CONVERSATION_LABEL = b"Tidings_ConversationId_Direct_v1"
GROUP_CONVERSATION_LABEL = b"Tidings_ConversationId_Group_v1"

REPORT_ITEM_FORMAT = 1
"""First byte of `ReportItem.encode()`."""

MAX_CONTEXT_ITEMS = 256
"""Most items one reported run may hold (a bound on the verifier's work)."""


class ChainFault(StrEnum):
    """Why a reported run fails `verify_context_chain`.

    A `ContextChainError` message always starts with one of these values followed by ``": "``,
    so callers can classify it without parsing prose.
    """

    EMPTY = "empty"
    DUPLICATE = "duplicate"
    TWO_CONVERSATIONS = "two_conversations"
    WRONG_CONVERSATION = "wrong_conversation"
    NOT_CHAINED = "not_chained"
    REORDERED = "reordered"
    BROKEN_LINK = "broken_link"


def _chain_error(fault: ChainFault, detail: str) -> ContextChainError:
    return ContextChainError(f"{fault.value}: {detail}")


# --- sender -------------------------------------------------------------------------------------


def compute_commitment(franking_key: bytes, content: bytes) -> bytes:
    """``HMAC-SHA256(franking_key, content)``, where ``content`` is the exact Content bytes.

    Raises:
        InvalidKeyError: ``franking_key`` is not 32 bytes.
    """
    if len(franking_key) != FRANKING_KEY_LEN:
        raise InvalidKeyError("franking key must be 32 bytes")
    return hmac_sha256(bytes(franking_key), bytes(content))


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def padding_length(unpadded_len: int) -> int:
    """The number of zero padding bytes for a FrankedContent whose encoding without padding is
    ``unpadded_len`` bytes: the smallest ``p >= 0`` that makes the full encoding a multiple of
    `PADDING_BUCKET`.

    With ``p = 0`` the proto3 field is absent; with ``p >= 1`` it adds a tag byte, the varint of
    ``p``, and ``p`` bytes. The encoding length grows strictly with ``p``, so the first reachable
    multiple of the bucket gives the smallest ``p`` (some targets are unreachable, e.g. one byte
    short of a multiple, and then the next multiple is used).
    """
    if unpadded_len % PADDING_BUCKET == 0:
        return 0
    target = unpadded_len - unpadded_len % PADDING_BUCKET + PADDING_BUCKET
    while True:
        extra = target - unpadded_len  # = 1 (tag) + varint_len(p) + p
        for vlen in (1, 2, 3):
            p = extra - 1 - vlen
            if p >= 1 and _varint_len(p) == vlen:
                return p
        target += PADDING_BUCKET


@dataclass(frozen=True, slots=True)
class FrankedPlaintext:
    """What the sender gets from `frank`.

    ``plaintext`` is the encoded, padded FrankedContent to hand to the ratchet / sender key;
    ``commitment`` goes into the Envelope and into the encryption's associated data, and becomes
    the ``previous_commitment`` of the sender's next data message in this conversation.
    """

    plaintext: bytes = field(repr=False)
    commitment: bytes
    franking_key: bytes = field(repr=False)
    content: bytes = field(repr=False)


def frank(content: pb.Content | bytes, *, franking_key: bytes | None = None) -> FrankedPlaintext:
    """Wrap one Content for encryption: fresh franking key, commitment, padded FrankedContent.

    ``content`` is a Content message (serialized here, deterministically) or its exact bytes. It
    is checked with the same decoder the receiver uses, so a sender never emits a message every
    receiver would refuse. ``franking_key`` is for known-answer tests only; production callers
    omit it and get 32 fresh CSPRNG bytes (a reused franking key would let two messages'
    commitments be linked and weakens nothing else, but there is no reason to allow it).

    Raises:
        DecodeError (or a subclass): ``content`` is not a valid Content.
        InvalidKeyError: ``franking_key`` is given and is not 32 bytes.
    """
    content_bytes = codec.encode(content) if isinstance(content, pb.Content) else bytes(content)
    codec.decode(pb.Content, content_bytes)
    key = random_bytes(FRANKING_KEY_LEN) if franking_key is None else bytes(franking_key)
    commitment = compute_commitment(key, content_bytes)
    message = pb.FrankedContent(
        version=limits.PROTOCOL_VERSION, franking_key=key, content=content_bytes
    )
    unpadded = codec.encode(message)
    message.padding = bytes(padding_length(len(unpadded)))
    plaintext = codec.encode(message)
    return FrankedPlaintext(
        plaintext=plaintext, commitment=commitment, franking_key=key, content=content_bytes
    )


# --- receiver -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenedContent:
    """A franked plaintext whose commitment opened.

    Keep ``content_bytes`` (the exact committed bytes — never re-encode ``content`` for a report)
    and ``franking_key`` with the message for as long as it may be reported.
    """

    content: pb.Content = field(repr=False)
    content_bytes: bytes = field(repr=False)
    franking_key: bytes = field(repr=False)
    commitment: bytes


def open_franked(plaintext: bytes, commitment: bytes) -> OpenedContent:
    """Decode a decrypted FrankedContent and check that ``commitment`` opens to its content.

    The commitment is recomputed over the exact ``content`` bytes and compared in constant time
    *before* the Content is parsed, so a message that does not open is never interpreted.

    Raises:
        DecodeError (or a subclass): ``plaintext`` is not a valid FrankedContent, or its content
            is not a valid Content.
        CommitmentMismatchError: ``commitment`` does not open to the content under the carried
            franking key (including a commitment of the wrong length).
    """
    franked = codec.decode(pb.FrankedContent, plaintext)
    expected = compute_commitment(franked.franking_key, franked.content)
    if not isinstance(commitment, bytes | bytearray | memoryview) or not constant_time_equal(
        expected, bytes(commitment)
    ):
        raise CommitmentMismatchError()
    content = codec.decode(pb.Content, franked.content)
    return OpenedContent(
        content=content,
        content_bytes=franked.content,
        franking_key=franked.franking_key,
        commitment=expected,
    )


# --- server tag ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaggedFields:
    """The fields the server's franking tag vouches for, shared by `FrankingTagInput`,
    `ReportItem` and the safety side's stored report item, and their checks.

    Raises (on construction):
        DecodeError: a field has the wrong type, length or range (account names: non-empty, at
            most 64 characters, UTF-8 encodable; devices u32; timestamp u64; commitment 32
            bytes; message id 16 bytes).
    """

    commitment: bytes
    sender: str
    sender_device: int
    recipient: str
    recipient_device: int
    server_timestamp_ms: int
    message_id: bytes

    def __post_init__(self) -> None:
        require_bytes(self.commitment, COMMITMENT_LEN, "commitment")
        identifier_bytes(self.sender, "sender")
        require_uint(self.sender_device, U32_MAX, "sender device")
        identifier_bytes(self.recipient, "recipient")
        require_uint(self.recipient_device, U32_MAX, "recipient device")
        require_uint(self.server_timestamp_ms, U64_MAX, "server timestamp")
        require_bytes(self.message_id, MESSAGE_ID_LEN, "message id")


@dataclass(frozen=True, slots=True)
class FrankingTagInput(TaggedFields):
    """Everything the server's franking tag vouches for. Always well formed once constructed.

    Raises (on construction):
        DecodeError: a field is malformed (see `TaggedFields`).
    """

    @classmethod
    def from_envelope(cls, envelope: pb.Envelope) -> FrankingTagInput:
        """The tag input for an Envelope (its ``commitment`` and routing fields).

        Raises:
            DecodeError: a field is malformed (see the class).
        """
        # The Envelope's fields have the same names (docs/protocol.md, "Server tag").
        return cls(**tagged_fields(envelope))


def tagged_fields(source: TaggedFields | pb.Envelope) -> dict[str, Any]:
    """The `TaggedFields` attributes of ``source`` by name, to build one kind of
    `TaggedFields` (`FrankingTagInput`, `ReportItem`, ...) from an Envelope or another kind."""
    return {f.name: getattr(source, f.name) for f in fields(TaggedFields)}


def franking_tag_input_bytes(tag_input: FrankingTagInput) -> bytes:
    """The exact bytes the server MACs (docs/protocol.md, "Server tag")::

        "Tidings_FrankingTag_v1"
        || u16(32) || commitment
        || u16(len) || UTF-8(sender)    || u32(sender_device)
        || u16(len) || UTF-8(recipient) || u32(recipient_device)
        || u64(server_timestamp_ms)
        || u16(16) || message_id

    Every variable-length field is length-prefixed and every integer is fixed width, so no two
    different inputs share an encoding (the label is a fixed prefix).
    """
    return b"".join(
        (
            FRANKING_TAG_LABEL,
            var16(tag_input.commitment),
            var16(identifier_bytes(tag_input.sender, "sender")),
            u32(tag_input.sender_device),
            var16(identifier_bytes(tag_input.recipient, "recipient")),
            u32(tag_input.recipient_device),
            u64(tag_input.server_timestamp_ms),
            var16(tag_input.message_id),
        )
    )


def _check_server_key(server_key: bytes) -> bytes:
    if not isinstance(server_key, bytes | bytearray) or len(server_key) != SERVER_FRANKING_KEY_LEN:
        raise InvalidKeyError("server franking key must be 32 bytes")
    return bytes(server_key)


def compute_franking_tag(server_key: bytes, tag_input: FrankingTagInput) -> bytes:
    """``HMAC-SHA256(server_key, franking_tag_input_bytes(tag_input))``, 32 bytes.

    Raises:
        InvalidKeyError: ``server_key`` is not 32 bytes.
    """
    return hmac_sha256(_check_server_key(server_key), franking_tag_input_bytes(tag_input))


def verify_franking_tag(server_key: bytes, tag_input: FrankingTagInput, tag: bytes) -> None:
    """Check a server franking tag in constant time.

    Raises:
        InvalidFrankingTagError: ``tag`` is not the tag of ``tag_input`` (or has a wrong length).
        InvalidKeyError: ``server_key`` is not 32 bytes.
    """
    expected = compute_franking_tag(server_key, tag_input)
    if not isinstance(tag, bytes | bytearray) or not constant_time_equal(expected, bytes(tag)):
        raise InvalidFrankingTagError()


# --- report items -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportItem(TaggedFields):
    """One franked message as the receiver keeps it and a reporter submits it: the fields the
    server's tag vouches for (those of `FrankingTagInput`), the opening of the commitment
    (``content``, ``franking_key``) and the tag. Constructed with keyword arguments.

    ``content`` is the exact committed Content bytes. Construction checks shapes only (lengths,
    ranges); `verify_report_item` checks the cryptography.

    Raises (on construction):
        DecodeError: a field has the wrong type, length or range.
        OversizedError: ``content`` is longer than `limits.MAX_CONTENT_BYTES`.
    """

    content: bytes = field(repr=False)
    franking_key: bytes = field(repr=False)
    franking_tag: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.content, bytes) or not self.content:
            raise DecodeError("reported content must be non-empty bytes")
        if len(self.content) > limits.MAX_CONTENT_BYTES:
            raise OversizedError(f"reported content exceeds {limits.MAX_CONTENT_BYTES} bytes")
        require_bytes(self.franking_key, FRANKING_KEY_LEN, "franking key")
        require_bytes(self.franking_tag, FRANKING_TAG_LEN, "franking tag")
        # Zero-argument super() does not work in slotted dataclasses (Python 3.11).
        TaggedFields.__post_init__(self)

    @property
    def tag_input(self) -> FrankingTagInput:
        """What the server's tag covers."""
        return FrankingTagInput(**tagged_fields(self))

    @property
    def sender_address(self) -> tuple[str, int]:
        """(account, device): the unit a transcript chain belongs to."""
        return (self.sender, self.sender_device)

    @classmethod
    def from_envelope(cls, envelope: pb.Envelope, opened: OpenedContent) -> ReportItem:
        """What the receiver stores beside a message it opened from ``envelope``.

        Raises:
            CommitmentMismatchError: the envelope's commitment is not the one that opened.
            DecodeError: an envelope field is malformed.
        """
        if not constant_time_equal(envelope.commitment, opened.commitment):
            raise CommitmentMismatchError()
        return cls(
            content=opened.content_bytes,
            franking_key=opened.franking_key,
            franking_tag=envelope.franking_tag,
            **tagged_fields(envelope),
        )

    def encode(self) -> bytes:
        """Fixed-layout serialization (docs/protocol.md, "Report item encoding")."""
        return b"".join(
            (
                u8(REPORT_ITEM_FORMAT),
                var32(self.content),
                self.franking_key,
                self.commitment,
                self.franking_tag,
                var16(self.sender.encode("utf-8")),
                u32(self.sender_device),
                var16(self.recipient.encode("utf-8")),
                u32(self.recipient_device),
                u64(self.server_timestamp_ms),
                self.message_id,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> ReportItem:
        """Parse `encode` output from untrusted bytes.

        Raises:
            TruncatedError, OversizedError, UnsupportedVersionError, DecodeError: malformed input.
        """
        reader = Reader(data, "report item")
        version = reader.u8()
        if version != REPORT_ITEM_FORMAT:
            raise UnsupportedVersionError(f"report item format {version} is not supported")
        content = reader.var32(limits.MAX_CONTENT_BYTES)
        franking_key = reader.take(FRANKING_KEY_LEN)
        commitment = reader.take(COMMITMENT_LEN)
        tag = reader.take(FRANKING_TAG_LEN)
        sender = _utf8(reader.var16(), "sender")
        sender_device = reader.u32()
        recipient = _utf8(reader.var16(), "recipient")
        recipient_device = reader.u32()
        timestamp = reader.u64()
        message_id = reader.take(MESSAGE_ID_LEN)
        reader.finish()
        return cls(
            content=content,
            franking_key=franking_key,
            commitment=commitment,
            franking_tag=tag,
            sender=sender,
            sender_device=sender_device,
            recipient=recipient,
            recipient_device=recipient_device,
            server_timestamp_ms=timestamp,
            message_id=message_id,
        )


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not valid UTF-8") from None


def _check_opens(item: ReportItem) -> None:
    expected = compute_commitment(item.franking_key, item.content)
    if not constant_time_equal(expected, item.commitment):
        raise CommitmentMismatchError()


def _open_item(item: ReportItem) -> pb.Content:
    _check_opens(item)
    return codec.decode(pb.Content, item.content)


def verify_report_item(server_key: bytes, item: ReportItem) -> pb.Content:
    """Verify one reported message and return its parsed Content.

    Checks, in order: the commitment opens to the content under the franking key; the server's
    tag vouches for (commitment, sender, devices, recipient, timestamp, message id); the content
    is a valid Content.

    Raises:
        CommitmentMismatchError: the content or franking key is not the committed one.
        InvalidFrankingTagError: the tag is not the server's tag for this item's metadata.
        DecodeError (or a subclass): the committed content is not a valid Content.
        InvalidKeyError: ``server_key`` is not 32 bytes.
    """
    _check_opens(item)
    verify_franking_tag(server_key, item.tag_input, item.franking_tag)
    return codec.decode(pb.Content, item.content)


# --- transcript franking (context chains) -------------------------------------------------------


def direct_conversation_id(account_a: str, account_b: str) -> bytes:
    """The conversation id of the 1:1 chat between two accounts (order does not matter)::

        SHA-256("Tidings_ConversationId_Direct_v1" || u16(len) || lo || u16(len) || hi)

    where ``lo``/``hi`` are the two UTF-8 account names sorted bytewise. A note-to-self chat
    (``a == b``) is allowed.

    Raises:
        DecodeError: a name is empty, longer than 64 characters or not UTF-8 encodable.
    """
    a = identifier_bytes(account_a, "account")
    b = identifier_bytes(account_b, "account")
    lo, hi = sorted((a, b))
    return sha256(DIRECT_CONVERSATION_LABEL + var16(lo) + var16(hi))


def group_conversation_id(group_id: bytes) -> bytes:
    """The conversation id of a group: ``SHA-256("Tidings_ConversationId_Group_v1" || u16(16) ||
    group_id)``.

    Raises:
        DecodeError: ``group_id`` is not 16 bytes.
    """
    require_bytes(group_id, codec.GROUP_ID_LEN, "group id")
    return sha256(GROUP_CONVERSATION_LABEL + var16(group_id))


def verify_context_chain(
    items: Sequence[ReportItem], *, expected_conversation_id: bytes | None = None
) -> list[pb.Content]:
    """Check that ``items`` is an authentic, in-order excerpt of one conversation.

    This checks the commitments and the chain, not the server tags (see `verify_report`).
    ``items`` are in the order the reporter presents them, which must be server-timestamp order
    (ties in any order). The run is valid when all of these hold:

    1. it is non-empty and has at most `MAX_CONTEXT_ITEMS` items;
    2. every item's commitment opens and its content is a valid Content with a ``data`` body
       (only data messages are links: receipts, sync transcripts and sender-key distributions
       are not delivered identically to every member, so they never advance a chain);
    3. no commitment and no message id occurs twice;
    4. every item has the same ``conversation_id`` (equal to ``expected_conversation_id`` when
       given, e.g. `direct_conversation_id` of the reported 1:1 chat);
    5. server timestamps never decrease;
    6. per sender (account, device), taking that sender's items in list order: every item after
       the first has ``previous_commitment`` equal to the commitment of the sender's item just
       before it in the list. The sender's first item may point anywhere (its predecessor may lie
       outside the window, or it may be the first message, with an empty previous commitment).
       A link that points to a *later* item of the same sender is reported as reordering.

    Consequence: inside the window, no message of a sender who appears in it twice can be
    dropped, inserted or moved without detection. Not covered: messages a sender sent *before*
    their first or *after* their last item in the window.

    Returns the parsed Contents, in the order of ``items``.

    Raises:
        ContextChainError: rules 1 (empty), 3-6; the message starts with a `ChainFault` value.
        OversizedError: more than `MAX_CONTEXT_ITEMS` items.
        CommitmentMismatchError: an item's commitment does not open.
        DecodeError (or a subclass): an item's content is not a valid Content.
    """
    if not items:
        raise _chain_error(ChainFault.EMPTY, "no items")
    if len(items) > MAX_CONTEXT_ITEMS:
        raise OversizedError(f"more than {MAX_CONTEXT_ITEMS} context items")
    contents = [_open_item(item) for item in items]

    seen_commitments: set[bytes] = set()
    seen_ids: set[bytes] = set()
    for index, item in enumerate(items):
        if item.commitment in seen_commitments or item.message_id in seen_ids:
            raise _chain_error(ChainFault.DUPLICATE, f"item {index} repeats an earlier message")
        seen_commitments.add(item.commitment)
        seen_ids.add(item.message_id)

    conversation = contents[0].conversation_id
    for index, content in enumerate(contents):
        if content.conversation_id != conversation:
            raise _chain_error(
                ChainFault.TWO_CONVERSATIONS, f"item {index} belongs to another conversation"
            )
        if content.WhichOneof("body") != "data":
            raise _chain_error(ChainFault.NOT_CHAINED, f"item {index} is not a data message")
    if expected_conversation_id is not None and conversation != expected_conversation_id:
        raise _chain_error(ChainFault.WRONG_CONVERSATION, "items belong to another conversation")

    for index in range(1, len(items)):
        if items[index].server_timestamp_ms < items[index - 1].server_timestamp_ms:
            raise _chain_error(ChainFault.REORDERED, f"item {index} is older than item {index - 1}")

    by_sender: dict[tuple[str, int], list[int]] = {}
    for index, item in enumerate(items):
        by_sender.setdefault(item.sender_address, []).append(index)
    for indices in by_sender.values():
        position = {items[i].commitment: k for k, i in enumerate(indices)}
        for k, i in enumerate(indices):
            previous = contents[i].previous_commitment
            target = position.get(previous)
            if target is not None and target >= k:
                raise _chain_error(
                    ChainFault.REORDERED, f"item {i} follows a message placed after it"
                )
            if k > 0 and previous != items[indices[k - 1]].commitment:
                raise _chain_error(
                    ChainFault.BROKEN_LINK,
                    f"item {i} does not follow item {indices[k - 1]} of the same sender",
                )
    return contents


def verify_report(
    server_key: bytes,
    items: Sequence[ReportItem],
    *,
    expected_conversation_id: bytes | None = None,
) -> list[pb.Content]:
    """Verify a reported run: every item as `verify_report_item`, then `verify_context_chain`.

    Raises:
        InvalidFrankingTagError, CommitmentMismatchError, ContextChainError, DecodeError,
        OversizedError, InvalidKeyError: as the two functions above.
    """
    if len(items) > MAX_CONTEXT_ITEMS:
        raise OversizedError(f"more than {MAX_CONTEXT_ITEMS} context items")
    for item in items:
        verify_report_item(server_key, item)
    return verify_context_chain(items, expected_conversation_id=expected_conversation_id)
