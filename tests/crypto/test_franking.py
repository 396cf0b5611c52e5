"""Franking: commitments, the server tag, report items and transcript (context) chains."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tidings.crypto import franking
from tidings.crypto.franking import (
    FRANKING_TAG_LABEL,
    MAX_CONTEXT_ITEMS,
    PADDING_BUCKET,
    ChainFault,
    FrankingTagInput,
    ReportItem,
    compute_commitment,
    compute_franking_tag,
    direct_conversation_id,
    frank,
    franking_tag_input_bytes,
    group_conversation_id,
    open_franked,
    padding_length,
    verify_context_chain,
    verify_franking_tag,
    verify_report,
    verify_report_item,
)
from tidings.errors import (
    CommitmentMismatchError,
    ContextChainError,
    DecodeError,
    InvalidFrankingTagError,
    InvalidKeyError,
    OversizedError,
    TidingsError,
    UnsupportedVersionError,
)
from tidings.wire import codec, limits
from tidings.wire import tidings_pb2 as pb

KAT = json.loads((Path(__file__).parents[1] / "vectors" / "franking_kat.json").read_text())
SERVER_KEY = hashlib.sha256(b"test server franking key").digest()
OTHER_SERVER_KEY = hashlib.sha256(b"another server").digest()
T0 = 1_700_000_000_000
ALICE_BOB = direct_conversation_id("alice", "bob")
ALICE_CAROL = direct_conversation_id("alice", "carol")


def content(
    body: str = "hi",
    *,
    conversation: bytes = ALICE_BOB,
    previous: bytes = b"",
    sent_at: int = T0,
) -> pb.Content:
    return pb.Content(
        version=1,
        sent_at_ms=sent_at,
        previous_commitment=previous,
        conversation_id=conversation,
        data=pb.DataMessage(body=body),
    )


class Conversation:
    """Plays sender, server and receiver for one conversation; yields what a receiver keeps."""

    def __init__(self, conversation_id: bytes = ALICE_BOB, t0: int = T0) -> None:
        self.conversation_id = conversation_id
        self.heads: dict[tuple[str, int], bytes] = {}
        self.clock = t0

    def send(
        self,
        sender: str,
        recipient: str,
        body: str = "msg",
        *,
        sender_device: int = 1,
        recipient_device: int = 1,
        message: pb.Content | None = None,
    ) -> ReportItem:
        previous = self.heads.get((sender, sender_device), b"")
        self.clock += 1000
        if message is None:
            message = content(
                body, conversation=self.conversation_id, previous=previous, sent_at=self.clock
            )
        franked = frank(message)
        if message.WhichOneof("body") == "data":  # only data messages advance the chain
            self.heads[(sender, sender_device)] = franked.commitment
        envelope = pb.Envelope(
            version=1,
            type=pb.Envelope.RATCHET,
            sender=sender,
            sender_device=sender_device,
            recipient=recipient,
            recipient_device=recipient_device,
            server_timestamp_ms=self.clock,
            message_id=os.urandom(16),
            commitment=franked.commitment,
            body=b"ciphertext",
        )
        envelope.franking_tag = compute_franking_tag(
            SERVER_KEY, FrankingTagInput.from_envelope(envelope)
        )
        opened = open_franked(franked.plaintext, envelope.commitment)
        return ReportItem.from_envelope(envelope, opened)


def chat(n: int = 6) -> list[ReportItem]:
    """alice and bob alternate irregularly: a a b a b b ..."""
    convo = Conversation()
    pattern = ["alice", "alice", "bob", "alice", "bob", "bob", "alice", "bob"]
    out = []
    for i in range(n):
        sender = pattern[i % len(pattern)]
        recipient = "bob" if sender == "alice" else "alice"
        out.append(convo.send(sender, recipient, f"message {i}"))
    return out


def reason(exc: pytest.ExceptionInfo[ContextChainError]) -> str:
    return str(exc.value).split(":", 1)[0]


# --- known answers ------------------------------------------------------------------------------


def test_kat_commitments_plaintexts_and_tags() -> None:
    server_key = bytes.fromhex(KAT["server_key"])
    for m in KAT["messages"]:
        key, body = bytes.fromhex(m["franking_key"]), bytes.fromhex(m["content"])
        assert compute_commitment(key, body).hex() == m["commitment"]
        franked = frank(body, franking_key=key)
        assert franked.plaintext.hex() == m["franked_plaintext"]
        assert franked.commitment.hex() == m["commitment"]
        opened = open_franked(bytes.fromhex(m["franked_plaintext"]), bytes.fromhex(m["commitment"]))
        assert opened.content_bytes == body
        tag_input = FrankingTagInput(
            commitment=bytes.fromhex(m["commitment"]),
            sender=m["sender"],
            sender_device=m["sender_device"],
            recipient=m["recipient"],
            recipient_device=m["recipient_device"],
            server_timestamp_ms=m["server_timestamp_ms"],
            message_id=bytes.fromhex(m["message_id"]),
        )
        assert franking_tag_input_bytes(tag_input).hex() == m["tag_input"]
        assert compute_franking_tag(server_key, tag_input).hex() == m["franking_tag"]
        item = ReportItem.decode(bytes.fromhex(m["report_item"]))
        assert item.encode().hex() == m["report_item"]
        assert item.franking_tag.hex() == m["franking_tag"]
        verify_report_item(server_key, item)


def test_kat_run_is_a_valid_context_chain() -> None:
    server_key = bytes.fromhex(KAT["server_key"])
    items = [ReportItem.decode(bytes.fromhex(m["report_item"])) for m in KAT["messages"]]
    contents = verify_report(server_key, items, expected_conversation_id=ALICE_BOB)
    assert [c.data.body for c in contents][:2] == ["hello bob", "hi alice"]


def test_kat_conversation_ids() -> None:
    for case in KAT["conversation_ids"]:
        if case["kind"] == "direct":
            assert direct_conversation_id(case["a"], case["b"]).hex() == case["id"]
        else:
            assert group_conversation_id(bytes.fromhex(case["group_id"])).hex() == case["id"]


def test_constants_match_the_kat() -> None:
    assert KAT["constants"]["franking_tag_label"].encode() == FRANKING_TAG_LABEL
    assert KAT["constants"]["padding_bucket"] == PADDING_BUCKET


# --- sender and receiver ------------------------------------------------------------------------


def test_commitment_covers_exactly_the_content_bytes() -> None:
    franked = frank(content("hello"))
    assert franked.commitment == hmac.new(franked.franking_key, franked.content, "sha256").digest()
    assert franked.franking_key not in franked.content
    decoded = codec.decode(pb.FrankedContent, franked.plaintext)
    assert decoded.content == franked.content and decoded.franking_key == franked.franking_key


def test_each_message_gets_a_fresh_franking_key() -> None:
    keys = {frank(content("same")).franking_key for _ in range(20)}
    assert len(keys) == 20


@settings(max_examples=60, deadline=None)
@given(body=st.text(max_size=3000))
def test_padding_fills_buckets_and_round_trips(body: str) -> None:
    franked = frank(content(body))
    assert len(franked.plaintext) % PADDING_BUCKET == 0
    opened = open_franked(franked.plaintext, franked.commitment)
    assert opened.content.data.body == body
    assert opened.content_bytes == franked.content


def test_padding_length_rule_is_minimal() -> None:
    # Field length of `padding = p zero bytes`, as protobuf itself encodes it (0 when absent).
    field_len = [len(codec.encode(pb.FrankedContent(padding=bytes(q)))) for q in range(500)]
    for n in range(1, 5000):
        p = padding_length(n)
        assert (n + field_len[p]) % PADDING_BUCKET == 0
        assert all((n + field_len[q]) % PADDING_BUCKET for q in range(p))


def test_largest_content_still_fits_after_padding() -> None:
    body = "x" * limits.MAX_TEXT_CHARS
    franked = frank(content(body))
    assert len(franked.plaintext) <= limits.MAX_FRANKED_CONTENT_BYTES
    open_franked(franked.plaintext, franked.commitment)


def test_frank_refuses_invalid_content_and_bad_keys() -> None:
    with pytest.raises(DecodeError):
        frank(b"\xff\xff")
    with pytest.raises(DecodeError):
        frank(pb.Content(version=1, conversation_id=bytes(32)))  # no body
    with pytest.raises(UnsupportedVersionError):
        frank(content().SerializeToString().replace(b"\x08\x01", b"\x08\x02", 1))
    with pytest.raises(InvalidKeyError):
        frank(content(), franking_key=bytes(31))


def _refranked(plaintext: bytes, **changes: Any) -> bytes:
    message = codec.decode(pb.FrankedContent, plaintext)
    for name, value in changes.items():
        setattr(message, name, value)
    return codec.encode(message)


def test_receiver_refuses_altered_content() -> None:
    franked = frank(content("pay alice 10"))
    altered = codec.encode(content("pay alice 99"))
    with pytest.raises(CommitmentMismatchError):
        open_franked(_refranked(franked.plaintext, content=altered), franked.commitment)


def test_receiver_refuses_swapped_franking_key() -> None:
    franked = frank(content("hello"))
    with pytest.raises(CommitmentMismatchError):
        open_franked(_refranked(franked.plaintext, franking_key=os.urandom(32)), franked.commitment)


def test_receiver_refuses_another_messages_commitment() -> None:
    one, two = frank(content("one")), frank(content("two"))
    with pytest.raises(CommitmentMismatchError):
        open_franked(one.plaintext, two.commitment)
    for bad in (b"", one.commitment[:31], one.commitment + b"\x00"):
        with pytest.raises(CommitmentMismatchError):
            open_franked(one.plaintext, bad)


def test_commitment_is_checked_before_content_is_parsed() -> None:
    key = os.urandom(32)
    garbage = b"\x52\x03\xff\xff\xff"  # not a valid Content
    plaintext = codec.encode(pb.FrankedContent(version=1, franking_key=key, content=garbage))
    with pytest.raises(CommitmentMismatchError):
        open_franked(plaintext, bytes(32))
    with pytest.raises(DecodeError):
        open_franked(plaintext, compute_commitment(key, garbage))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), commitment=st.binary(max_size=40))
def test_open_franked_raises_only_typed_errors(data: bytes, commitment: bytes) -> None:
    try:
        open_franked(data, commitment)
    except TidingsError:
        pass


def test_open_franked_on_every_truncation_and_bit_flip() -> None:
    franked = frank(content("truncate me"))
    for end in range(len(franked.plaintext)):
        try:
            opened = open_franked(franked.plaintext[:end], franked.commitment)
        except TidingsError:
            continue
        # Cutting exactly before the padding field leaves a valid, unpadded FrankedContent
        # (the encryption layer authenticates the whole plaintext; the commitment covers only
        # the content, which is then intact).
        assert opened.content_bytes == franked.content
    for i in range(len(franked.plaintext)):
        flipped = bytearray(franked.plaintext)
        flipped[i] ^= 0x01
        try:
            opened = open_franked(bytes(flipped), franked.commitment)
        except TidingsError:
            continue
        # A flip may only land in a part protobuf ignores; the content must then be unchanged.
        assert opened.content_bytes == franked.content


# --- server tag ---------------------------------------------------------------------------------


def tag_input(**changes: Any) -> FrankingTagInput:
    base = FrankingTagInput(
        commitment=bytes(range(32)),
        sender="alice",
        sender_device=1,
        recipient="bob",
        recipient_device=2,
        server_timestamp_ms=T0,
        message_id=bytes(range(16)),
    )
    return dataclasses.replace(base, **changes)


def test_tag_input_layout_is_the_documented_bytes() -> None:
    expected = (
        b"Tidings_FrankingTag_v1"
        + b"\x00\x20"
        + bytes(range(32))
        + b"\x00\x05alice"
        + b"\x00\x00\x00\x01"
        + b"\x00\x03bob"
        + b"\x00\x00\x00\x02"
        + T0.to_bytes(8, "big")
        + b"\x00\x10"
        + bytes(range(16))
    )
    assert franking_tag_input_bytes(tag_input()) == expected
    assert (
        compute_franking_tag(SERVER_KEY, tag_input())
        == hmac.new(SERVER_KEY, expected, "sha256").digest()
    )


@pytest.mark.parametrize(
    "change",
    [
        {"commitment": bytes(32)},
        {"sender": "mallory"},
        {"sender_device": 2},
        {"recipient": "carol"},
        {"recipient_device": 3},
        {"server_timestamp_ms": T0 + 1},
        {"message_id": bytes(16)},
    ],
)
def test_tag_does_not_verify_for_other_metadata(change: dict[str, Any]) -> None:
    tag = compute_franking_tag(SERVER_KEY, tag_input())
    verify_franking_tag(SERVER_KEY, tag_input(), tag)
    with pytest.raises(InvalidFrankingTagError):
        verify_franking_tag(SERVER_KEY, tag_input(**change), tag)


def test_tag_rejects_other_key_and_bad_shapes() -> None:
    tag = compute_franking_tag(SERVER_KEY, tag_input())
    with pytest.raises(InvalidFrankingTagError):
        verify_franking_tag(OTHER_SERVER_KEY, tag_input(), tag)
    for bad in (b"", tag[:16], tag + b"\x00", bytes(32)):
        with pytest.raises(InvalidFrankingTagError):
            verify_franking_tag(SERVER_KEY, tag_input(), bad)
    with pytest.raises(InvalidKeyError):
        compute_franking_tag(SERVER_KEY[:16], tag_input())


def test_tag_encoding_is_unambiguous_for_shifted_field_boundaries() -> None:
    one = tag_input(sender="ab", recipient="cd")
    two = tag_input(sender="abc", recipient="d")
    assert franking_tag_input_bytes(one) != franking_tag_input_bytes(two)
    assert compute_franking_tag(SERVER_KEY, one) != compute_franking_tag(SERVER_KEY, two)
    # Devices and timestamps are fixed width: moving value between them changes the bytes.
    three = tag_input(sender_device=1 << 8, recipient_device=0)
    four = tag_input(sender_device=0, recipient_device=1 << 8)
    assert franking_tag_input_bytes(three) != franking_tag_input_bytes(four)


names = st.text(min_size=1, max_size=limits.MAX_IDENTIFIER_CHARS).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
)
tag_inputs = st.builds(
    FrankingTagInput,
    commitment=st.binary(min_size=32, max_size=32),
    sender=names,
    sender_device=st.integers(0, 2**32 - 1),
    recipient=names,
    recipient_device=st.integers(0, 2**32 - 1),
    server_timestamp_ms=st.integers(0, 2**64 - 1),
    message_id=st.binary(min_size=16, max_size=16),
)


@settings(max_examples=300, deadline=None)
@given(a=tag_inputs, b=tag_inputs)
def test_tag_encoding_is_injective(a: FrankingTagInput, b: FrankingTagInput) -> None:
    assume(a != b)
    assert franking_tag_input_bytes(a) != franking_tag_input_bytes(b)


@pytest.mark.parametrize(
    "change",
    [
        {"commitment": bytes(31)},
        {"commitment": "x" * 32},
        {"sender": ""},
        {"sender": "x" * (limits.MAX_IDENTIFIER_CHARS + 1)},
        {"sender": "\ud800"},
        {"recipient": 5},
        {"sender_device": -1},
        {"sender_device": 2**32},
        {"recipient_device": True},
        {"server_timestamp_ms": 2**64},
        {"message_id": bytes(15)},
    ],
)
def test_tag_input_refuses_malformed_fields(change: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        tag_input(**change)


# --- report items -------------------------------------------------------------------------------


def test_report_item_verifies_and_round_trips() -> None:
    item = chat(1)[0]
    assert verify_report_item(SERVER_KEY, item).data.body == "message 0"
    assert ReportItem.decode(item.encode()) == item


def test_report_item_forgeries() -> None:
    one, two = chat(2)
    forged_content = dataclasses.replace(one, content=codec.encode(content("I never said this")))
    with pytest.raises(CommitmentMismatchError):
        verify_report_item(SERVER_KEY, forged_content)
    with pytest.raises(CommitmentMismatchError):
        verify_report_item(SERVER_KEY, dataclasses.replace(one, franking_key=two.franking_key))
    # Another message's content, key and commitment under this message's tag and metadata.
    transplanted = dataclasses.replace(
        one, content=two.content, franking_key=two.franking_key, commitment=two.commitment
    )
    with pytest.raises(InvalidFrankingTagError):
        verify_report_item(SERVER_KEY, transplanted)
    with pytest.raises(InvalidFrankingTagError):
        verify_report_item(SERVER_KEY, dataclasses.replace(one, franking_tag=two.franking_tag))
    for change in (
        {"recipient": "carol"},
        {"recipient_device": 9},
        {"sender": "bob"},
        {"sender_device": 3},
        {"server_timestamp_ms": one.server_timestamp_ms + 1},
        {"message_id": two.message_id},
    ):
        with pytest.raises(InvalidFrankingTagError):
            verify_report_item(SERVER_KEY, dataclasses.replace(one, **change))
    with pytest.raises(InvalidFrankingTagError):
        verify_report_item(OTHER_SERVER_KEY, one)


def test_report_item_from_envelope_refuses_another_commitment() -> None:
    franked = frank(content())
    opened = open_franked(franked.plaintext, franked.commitment)
    envelope = pb.Envelope(
        sender="a",
        recipient="b",
        message_id=bytes(16),
        commitment=bytes(32),
        franking_tag=bytes(32),
    )
    with pytest.raises(CommitmentMismatchError):
        ReportItem.from_envelope(envelope, opened)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_report_item_decode_raises_only_typed_errors(data: bytes) -> None:
    try:
        ReportItem.decode(data)
    except TidingsError:
        pass


def test_report_item_decode_on_every_truncation() -> None:
    encoded = chat(1)[0].encode()
    for end in range(len(encoded)):
        with pytest.raises(DecodeError):
            ReportItem.decode(encoded[:end])
    with pytest.raises(DecodeError):
        ReportItem.decode(encoded + b"\x00")
    with pytest.raises(UnsupportedVersionError):
        ReportItem.decode(b"\x02" + encoded[1:])


def test_nothing_secret_in_reprs_or_errors() -> None:
    item = chat(1)[0]
    franked = frank(content("secret words"))
    opened = open_franked(franked.plaintext, franked.commitment)
    for obj in (item, franked, opened):
        text = repr(obj)
        assert "secret" not in text and "message 0" not in text
        assert repr(item.franking_key) not in text and repr(franked.franking_key) not in text
    try:
        verify_report_item(SERVER_KEY, dataclasses.replace(item, franking_tag=bytes(32)))
    except InvalidFrankingTagError as exc:
        assert item.franking_key.hex() not in str(exc) and "message 0" not in str(exc)


# --- conversation ids ---------------------------------------------------------------------------


def test_conversation_ids() -> None:
    assert direct_conversation_id("alice", "bob") == direct_conversation_id("bob", "alice")
    assert direct_conversation_id("alice", "bob") != direct_conversation_id("alice", "bobb")
    assert direct_conversation_id("ab", "c") != direct_conversation_id("a", "bc")
    assert len(group_conversation_id(bytes(16))) == 32
    assert group_conversation_id(bytes(16)) != group_conversation_id(b"\x01" + bytes(15))
    with pytest.raises(DecodeError):
        group_conversation_id(bytes(32))
    with pytest.raises(DecodeError):
        direct_conversation_id("", "bob")


# --- transcript franking: context chains --------------------------------------------------------


def test_interleaved_run_verifies() -> None:
    items = chat(8)
    contents = verify_report(SERVER_KEY, items, expected_conversation_id=ALICE_BOB)
    assert [c.data.body for c in contents] == [f"message {i}" for i in range(8)]


def test_window_may_start_and_end_mid_conversation() -> None:
    items = chat(8)
    for start in range(8):
        for end in range(start + 1, 9):
            verify_context_chain(items[start:end])


def test_separate_devices_keep_separate_chains() -> None:
    convo = Conversation()
    items = [
        convo.send("alice", "bob", "from phone", sender_device=1),
        convo.send("alice", "bob", "from laptop", sender_device=2),
        convo.send("alice", "bob", "phone again", sender_device=1),
        convo.send("alice", "bob", "laptop again", sender_device=2),
    ]
    verify_context_chain(items)
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain([items[0], items[1], items[3], items[2]])
    assert reason(exc) == ChainFault.REORDERED


def test_gap_in_a_senders_chain_is_detected() -> None:
    items = chat(8)  # senders: a a b a b b a b
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain(items[:1] + items[2:])  # drops alice's second message
    assert reason(exc) == ChainFault.BROKEN_LINK
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain(items[:4] + items[5:])  # drops one of bob's
    assert reason(exc) == ChainFault.BROKEN_LINK


def test_reordered_context_is_detected() -> None:
    items = chat(6)
    swapped = [items[1], items[0], *items[2:]]
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain(swapped)
    assert reason(exc) == ChainFault.REORDERED
    # Same sender, reordered while timestamps are made to look sorted is impossible: the
    # timestamps are under the server tag, so forging them breaks verify_report instead.
    forged = [dataclasses.replace(items[1], server_timestamp_ms=items[0].server_timestamp_ms)]
    with pytest.raises(InvalidFrankingTagError):
        verify_report(SERVER_KEY, [*forged, items[0]])
    # Without a tag check, the chain still refuses a link that points forward.
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain([*forged, items[0]])
    assert reason(exc) == ChainFault.REORDERED


def test_context_stitched_from_two_conversations_is_detected() -> None:
    with_bob = chat(4)
    other = Conversation(ALICE_CAROL, t0=T0 + 10_000_000)
    with_carol = [other.send("alice", "carol", f"c{i}") for i in range(2)]
    with pytest.raises(ContextChainError) as exc:
        verify_report(SERVER_KEY, with_bob + with_carol)
    assert reason(exc) == ChainFault.TWO_CONVERSATIONS
    with pytest.raises(ContextChainError) as exc:
        verify_report(SERVER_KEY, with_carol, expected_conversation_id=ALICE_BOB)
    assert reason(exc) == ChainFault.WRONG_CONVERSATION


def test_stitched_run_with_a_forged_link_fails_the_commitment() -> None:
    items = chat(3)
    # Re-point bob's message at a different predecessor: the content changes, so the
    # commitment no longer opens (and a fresh commitment would not match the server's tag).
    bob = items[2]
    parsed = codec.decode(pb.Content, bob.content)
    parsed.previous_commitment = items[0].commitment
    forged = dataclasses.replace(bob, content=codec.encode(parsed))
    with pytest.raises(CommitmentMismatchError):
        verify_context_chain([items[0], forged])
    recommitted = dataclasses.replace(
        forged, commitment=compute_commitment(bob.franking_key, forged.content)
    )
    with pytest.raises(InvalidFrankingTagError):
        verify_report(SERVER_KEY, [items[0], recommitted])


def test_duplicates_are_refused() -> None:
    items = chat(3)
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain([items[0], items[0], items[1]])
    assert reason(exc) == ChainFault.DUPLICATE
    # The same message delivered to two of the reporter's devices: same commitment.
    twin = dataclasses.replace(items[1], recipient_device=7, message_id=os.urandom(16))
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain([items[0], items[1], twin])
    assert reason(exc) == ChainFault.DUPLICATE


def test_only_data_messages_are_links() -> None:
    convo = Conversation()
    first = convo.send("alice", "bob", "hi")
    receipt = pb.Content(
        version=1,
        conversation_id=ALICE_BOB,
        previous_commitment=first.commitment,
        receipt=pb.ReceiptMessage(timestamps=[T0]),
    )
    receipt_item = convo.send("alice", "bob", message=receipt)
    second = convo.send("alice", "bob", "again")
    verify_context_chain([first, second])  # the receipt did not advance alice's chain
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain([first, receipt_item, second])
    assert reason(exc) == ChainFault.NOT_CHAINED


def test_empty_and_oversized_runs() -> None:
    with pytest.raises(ContextChainError) as exc:
        verify_context_chain([])
    assert reason(exc) == ChainFault.EMPTY
    item = chat(1)[0]
    with pytest.raises(OversizedError):
        verify_context_chain([item] * (MAX_CONTEXT_ITEMS + 1))
    with pytest.raises(OversizedError):
        verify_report(SERVER_KEY, [item] * (MAX_CONTEXT_ITEMS + 1))


def test_a_bad_tag_anywhere_fails_the_report() -> None:
    items = chat(5)
    bad = dataclasses.replace(items[3], franking_tag=items[2].franking_tag)
    with pytest.raises(InvalidFrankingTagError):
        verify_report(SERVER_KEY, [*items[:3], bad, items[4]])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_dropped_inner_item_of_a_sender_is_detected(data: st.DataObject) -> None:
    items = chat(8)
    senders = [i.sender for i in items]
    # Pick an item that has an earlier and a later item from the same sender in the window.
    candidates = [k for k, s in enumerate(senders) if s in senders[:k] and s in senders[k + 1 :]]
    k = data.draw(st.sampled_from(candidates))
    with pytest.raises(ContextChainError):
        verify_context_chain(items[:k] + items[k + 1 :])


def test_module_has_no_mutable_globals() -> None:
    for name, value in vars(franking).items():
        if name.isupper():
            assert isinstance(value, int | bytes | str), name
