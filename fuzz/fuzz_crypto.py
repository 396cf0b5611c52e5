"""Fuzz targets for the protocol core's decoders of untrusted bytes: ratchet headers, key
encodings, stored state, session messages, sender-key messages, franked plaintexts, report
items, attachment ciphertexts, safety-number QR payloads and threshold shares."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from tidings.crypto import attachment, franking
from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKey, IdentityKeyPair
from tidings.crypto.ratchet import DoubleRatchet, Header
from tidings.crypto.safety_number import SafetyNumber
from tidings.crypto.sender_keys import GroupSenderKeys, RemoteSenderKey
from tidings.crypto.session import PREKEY, RATCHET, SessionRecord
from tidings.crypto.threshold import ShareEnvelope, WindowDealer, draw_share_x
from tidings.wire import pb

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]


def crypto_targets() -> Iterator[TargetSpec]:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    bob_prekeys = DevicePrekeys.generate(bob, now_ms=0, one_time_count=2, kem_count=2)
    bundle = bob_prekeys.bundle(
        1, 7, bob_prekeys.one_time_prekeys[0].id, bob_prekeys.kem_prekeys[0].id
    )
    alice_record = SessionRecord()
    alice_record.start(alice, bundle, local_registration_id=3)
    content = pb.Content(version=1, conversation_id=bytes(32), data=pb.DataMessage(body="hi"))
    franked = franking.frank(content)
    first = alice_record.encrypt(franked.plaintext, franked.commitment)
    bob_record = SessionRecord()

    def session_decrypt(data: bytes) -> object:
        # First byte picks the envelope type; the rest is the body.
        kind = PREKEY if data[:1] == b"\x01" else RATCHET
        return bob_record.decrypt(
            kind, data[1:], franked.commitment, identity=bob, prekeys=bob_prekeys
        )

    ratchet = DoubleRatchet.init_alice(os.urandom(32), os.urandom(32))
    header, _ = ratchet.encrypt(b"x", b"")
    yield "crypto.Header", Header.decode, [header.encode()]
    yield "crypto.DoubleRatchet", DoubleRatchet.from_bytes, [ratchet.to_bytes()]
    yield "crypto.IdentityKey", IdentityKey.decode, [alice.public.encode()]
    yield "crypto.IdentityKeyPair", IdentityKeyPair.from_bytes, [alice.to_bytes()]
    yield "crypto.PrekeyBundle", PrekeyBundle.decode, [bundle.encode()]
    yield "crypto.DevicePrekeys", DevicePrekeys.from_bytes, [bob_prekeys.to_bytes()]
    yield "crypto.SessionRecord", SessionRecord.from_bytes, [alice_record.to_bytes()]
    yield "crypto.session_decrypt", session_decrypt, [b"\x01" + first.body]

    group = GroupSenderKeys.create()
    remote = RemoteSenderKey.from_distribution(group.distribution())
    message = group.encrypt(b"group", franked.commitment)
    yield "crypto.GroupSenderKeys", GroupSenderKeys.from_bytes, [group.to_bytes()]
    yield "crypto.RemoteSenderKey", RemoteSenderKey.from_bytes, [remote.to_bytes()]
    yield (
        "crypto.sender_key_decrypt",
        lambda data: remote.decrypt(data, franked.commitment),
        [message],
    )
    yield (
        "crypto.open_franked",
        lambda data: franking.open_franked(data, franked.commitment),
        [franked.plaintext],
    )
    envelope = pb.Envelope(
        version=1,
        type=pb.Envelope.RATCHET,
        sender="alice",
        sender_device=1,
        recipient="bob",
        recipient_device=1,
        server_timestamp_ms=1,
        message_id=bytes(16),
        commitment=franked.commitment,
        franking_tag=bytes(32),
        body=b"x",
    )
    item = franking.ReportItem.from_envelope(
        envelope, franking.open_franked(franked.plaintext, franked.commitment)
    )
    yield "crypto.ReportItem", franking.ReportItem.decode, [item.encode()]

    key = attachment.generate_key()
    ciphertext, digest = attachment.encrypt_bytes(key, os.urandom(700), chunk_size=256)

    def attachment_decrypt(data: bytes) -> object:
        decryptor = attachment.AttachmentDecryptor(key, digest)
        return decryptor.update(data) + decryptor.finalize()

    yield "crypto.attachment_decrypt", attachment_decrypt, [ciphertext]
    number = SafetyNumber.compute(alice.public.encode(), "alice", bob.public.encode(), "bob")
    yield "crypto.safety_number_scan", number.matches_scanned, [number.qr_payload()]
    window = WindowDealer(os.urandom(32), threshold=10, dimension=32)
    share = window.share(draw_share_x(os.urandom))
    yield (
        "crypto.ShareEnvelope",
        lambda data: ShareEnvelope.from_bytes(data, window.dimension),
        [share.to_bytes()],
    )
