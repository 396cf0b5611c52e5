"""The protocol core end to end, as the client and server will compose it: franked content,
1:1 sessions to several devices, the server's franking tags, group messages over sender keys
distributed through the 1:1 sessions, and a report that verifies -- or is refused when forged."""

from __future__ import annotations

import os

import pytest

from tidings.crypto import franking
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.sender_keys import GroupSenderKeys
from tidings.crypto.session import Session, SessionRecord
from tidings.errors import (
    CommitmentMismatchError,
    ContextChainError,
    DecryptionError,
    InvalidFrankingTagError,
    InvalidSignatureError,
)
from tidings.wire import decode, encode, pb

SERVER_KEY = os.urandom(32)


class Device:
    def __init__(self, account: str, device_id: int) -> None:
        self.account, self.device_id = account, device_id
        self.identity = IdentityKeyPair.generate()
        self.prekeys = DevicePrekeys.generate(
            self.identity, now_ms=0, one_time_count=3, kem_count=3
        )
        self.records: dict[tuple[str, int], SessionRecord] = {}
        self.previous: dict[bytes, bytes] = {}  # conversation id -> my last commitment
        self.received: list[franking.ReportItem] = []

    def bundle(self):  # type: ignore[no-untyped-def]
        return self.prekeys.bundle(
            self.device_id,
            self.device_id + 100,
            self.prekeys.one_time_prekeys[0].id,
            self.prekeys.kem_prekeys[0].id,
        )

    def content(self, conversation: bytes, body: pb.DataMessage | None = None, **kw) -> pb.Content:  # type: ignore[no-untyped-def]
        content = pb.Content(
            version=1,
            sent_at_ms=1_700_000_000_000,
            conversation_id=conversation,
            previous_commitment=self.previous.get(conversation, b""),
            **kw,
        )
        if body is not None:
            content.data.CopyFrom(body)
        return content

    def send_direct(self, to: list[Device], content: pb.Content) -> list[pb.Envelope]:
        franked = franking.frank(content)
        if content.HasField("data"):
            self.previous[content.conversation_id] = franked.commitment
        envelopes = []
        for device in to:
            record = self.records.setdefault((device.account, device.device_id), SessionRecord())
            if record.current is None:
                record.promote(
                    Session.initiate(self.identity, device.bundle(), local_registration_id=1)
                )
            out = record.encrypt(franked.plaintext, franked.commitment)
            envelopes.append(server_accept(self, device, out.type, out.body, franked.commitment))
        return envelopes

    def receive_direct(self, envelope: pb.Envelope) -> pb.Content:
        record = self.records.setdefault((envelope.sender, envelope.sender_device), SessionRecord())
        result = record.decrypt(
            envelope.type,
            envelope.body,
            envelope.commitment,
            identity=self.identity,
            prekeys=self.prekeys,
        )
        opened = franking.open_franked(result.plaintext, envelope.commitment)
        self.received.append(franking.ReportItem.from_envelope(envelope, opened))
        return opened.content


_clock = [1_700_000_000_000]


def server_accept(
    sender: Device, recipient: Device, kind: int, body: bytes, commitment: bytes
) -> pb.Envelope:
    """What the server does per envelope: timestamp, message id, franking tag."""
    _clock[0] += 1
    envelope = pb.Envelope(
        version=1,
        type=kind,  # type: ignore[arg-type]
        sender=sender.account,
        sender_device=sender.device_id,
        recipient=recipient.account,
        recipient_device=recipient.device_id,
        server_timestamp_ms=_clock[0],
        message_id=os.urandom(16),
        commitment=commitment,
        body=body,
    )
    envelope.franking_tag = franking.compute_franking_tag(
        SERVER_KEY, franking.FrankingTagInput.from_envelope(envelope)
    )
    return decode(pb.Envelope, encode(envelope))  # it survives the wire


def test_direct_conversation_to_several_devices_is_reportable() -> None:
    alice = Device("alice", 1)
    bob_phone, bob_laptop = Device("bob", 1), Device("bob", 2)
    conversation = franking.direct_conversation_id("alice", "bob")
    for text in ["hi bob", "are you there?", "this is abusive"]:
        content = alice.content(conversation, pb.DataMessage(body=text))
        for envelope, device in zip(
            alice.send_direct([bob_phone, bob_laptop], content),
            [bob_phone, bob_laptop],
            strict=True,
        ):
            assert device.receive_direct(envelope).data.body == text

    # Bob reports the last message with its context; the server verifies tags and the chain.
    contents = franking.verify_report(
        SERVER_KEY, bob_phone.received, expected_conversation_id=conversation
    )
    assert [c.data.body for c in contents] == ["hi bob", "are you there?", "this is abusive"]

    # The laptop's copy verifies too, but is addressed to device 2, not device 1.
    laptop_item = bob_laptop.received[-1]
    franking.verify_report_item(SERVER_KEY, laptop_item)
    assert laptop_item.recipient_device == 2


def test_forged_reports_are_refused() -> None:
    alice, bob = Device("alice", 1), Device("bob", 1)
    conversation = franking.direct_conversation_id("alice", "bob")
    for text in ["one", "two", "three"]:
        (envelope,) = alice.send_direct(
            [bob], alice.content(conversation, pb.DataMessage(body=text))
        )
        bob.receive_direct(envelope)
    item = bob.received[-1]

    altered = pb.Content()
    altered.ParseFromString(item.content)
    altered.data.body = "something alice never said"
    with pytest.raises(CommitmentMismatchError):
        franking.verify_report_item(SERVER_KEY, _replace(item, content=encode(altered)))
    with pytest.raises(InvalidFrankingTagError):  # blame someone else
        franking.verify_report_item(SERVER_KEY, _replace(item, sender="carol"))
    with pytest.raises(InvalidFrankingTagError):  # a tag from another message
        franking.verify_report_item(
            SERVER_KEY, _replace(item, franking_tag=bob.received[0].franking_tag)
        )
    with pytest.raises(ContextChainError):  # drop the middle message: broken chain
        franking.verify_report(SERVER_KEY, [bob.received[0], bob.received[2]])


def _replace(item: franking.ReportItem, **changes: object) -> franking.ReportItem:
    import dataclasses

    return dataclasses.replace(item, **changes)  # type: ignore[arg-type]


def test_server_cannot_repair_ciphertext_with_another_commitment() -> None:
    alice, bob = Device("alice", 1), Device("bob", 1)
    conversation = franking.direct_conversation_id("alice", "bob")
    (envelope,) = alice.send_direct([bob], alice.content(conversation, pb.DataMessage(body="x")))
    forged = pb.Envelope()
    forged.CopyFrom(envelope)
    other = franking.frank(alice.content(conversation, pb.DataMessage(body="y")))
    forged.commitment = other.commitment
    with pytest.raises(DecryptionError):
        bob.receive_direct(forged)
    assert bob.receive_direct(envelope).data.body == "x"


def test_group_messages_over_sender_keys_are_franked_and_leave_rotates() -> None:
    alice, bob, carol = Device("alice", 1), Device("bob", 1), Device("carol", 1)
    group_id = os.urandom(16)
    conversation = franking.group_conversation_id(group_id)
    groups = {d.account: GroupSenderKeys.create() for d in (alice, bob, carol)}

    def distribute(sender: Device, to: list[Device]) -> None:
        content = sender.content(
            conversation, sender_key_distribution=groups[sender.account].distribution()
        )
        for envelope, device in zip(sender.send_direct(to, content), to, strict=True):
            got = device.receive_direct(envelope)
            groups[device.account].add_distribution(
                sender.account, sender.device_id, got.sender_key_distribution
            )

    distribute(alice, [bob, carol])

    def group_send(text: str) -> tuple[bytes, bytes]:
        content = alice.content(
            conversation, pb.DataMessage(body=text, group=pb.GroupContext(group_id=group_id))
        )
        franked = franking.frank(content)
        return groups["alice"].encrypt(franked.plaintext, franked.commitment), franked.commitment

    message, commitment = group_send("hello group")
    for member in ("bob", "carol"):
        plaintext = groups[member].decrypt("alice", 1, message, commitment)
        assert franking.open_franked(plaintext, commitment).content.data.body == "hello group"
    with pytest.raises((InvalidSignatureError, DecryptionError)):
        groups["bob"].decrypt("alice", 1, message, os.urandom(32))

    # Carol leaves: Alice rotates and redistributes to Bob only.
    groups["alice"].remove_member("carol")
    distribute(alice, [bob])
    message, commitment = group_send("after carol left")
    plaintext = groups["bob"].decrypt("alice", 1, message, commitment)
    assert franking.open_franked(plaintext, commitment).content.data.body == "after carol left"
    with pytest.raises(Exception) as caught:
        groups["carol"].decrypt("alice", 1, message, commitment)
    assert caught.type.__module__ == "tidings.errors"
