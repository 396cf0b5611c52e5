"""End-to-end tests: real SDK clients against a server on a free port (see conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import PASS, link, register, run
from tidings.client.errors import SafetyNumberMismatchError, ServerError, WrongPassphraseError
from tidings.client.sdk import Client
from tidings.client.transport import b64d
from tidings.crypto.franking import (
    FrankedPlaintext,
    direct_conversation_id,
    frank,
    verify_context_chain,
)
from tidings.errors import ProtocolError, UntrustedIdentityError
from tidings.wire import codec, limits
from tidings.wire import tidings_pb2 as pb


def bodies(events: list[Any], kind: str = "message") -> list[str]:
    return [e.message.body for e in events if e.kind == kind]


def test_send_and_receive_both_ways(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        sent = await alice.send_text(bob.account.username, "hello bob")
        assert sent.devices == 1 and sent.message.status == "sent"
        events = await bob.listen()  # WebSocket until queue_empty
        assert bodies(events) == ["hello bob"]
        received = events[0].message
        assert received is not None and received.sender == alice.account.username
        assert received.reportable
        # Bob answers; Alice receives by polling, together with Bob's delivery receipt.
        await bob.send_text(alice.account.username, "hi alice")
        events = await alice.poll()
        assert bodies(events) == ["hi alice"]
        assert any(e.kind == "receipt" for e in events)
        mine = [m for m in alice.messages(bob.account.username) if m.direction == "out"]
        assert mine[0].status == "delivered"
        # Read receipts.
        assert await bob.mark_read(alice.account.username) == 1
        await alice.poll()
        mine = [m for m in alice.messages(bob.account.username) if m.direction == "out"]
        assert mine[0].status == "read"
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_history_persists_and_wrong_passphrase(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        await alice.send_text(bob.account.username, "persist me")
        await bob.poll()
        await bob.aclose()
        with pytest.raises(WrongPassphraseError):
            Client.open(tmp_path / "bob", "not it")
        bob = Client.open(tmp_path / "bob", PASS)
        assert [m.body for m in bob.messages()] == ["persist me"]
        # Sessions survive a restart: both directions still work.
        await bob.send_text(alice.account.username, "after restart")
        assert bodies(await alice.poll()) == ["after restart"]
        await alice.send_text(bob.account.username, "again")
        assert bodies(await bob.poll()) == ["again"]
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_username_taken_leaves_no_profile(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        name = names("taken")
        first = await register(tmp_path, "one", name, server_url)
        with pytest.raises(ServerError) as info:
            await register(tmp_path, "two", name, server_url)
        assert info.value.code == "username_taken"
        assert not (tmp_path / "two" / "tidings.db").exists()
        await first.aclose()

    run(main())


def test_multi_device_receive_and_sync(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice1 = await register(tmp_path, "alice1", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        # Bob talks to Alice before her second device exists.
        await bob.send_text(alice1.account.username, "before link")
        alice2 = await link(tmp_path, "alice2", alice1, server_url)
        assert alice2.account.device_id != alice1.account.device_id
        # The server reports the new device as missing; Bob fetches its bundle and retries.
        sent = await bob.send_text(alice1.account.username, "to both devices")
        assert sent.devices == 2
        assert bodies(await alice1.poll()) == ["before link", "to both devices"]
        assert bodies(await alice2.listen()) == ["to both devices"]
        # Alice's first device sends: Bob receives, her second device gets the sync copy.
        sent = await alice1.send_text(bob.account.username, "from device one")
        assert sent.synced_devices == 1 and sent.sync_error is None
        assert bodies(await bob.poll()) == ["from device one"]
        sync = [e for e in await alice2.poll() if e.kind == "sync"]
        assert len(sync) == 1 and sync[0].message is not None
        assert sync[0].message.direction == "out"
        assert sync[0].message.peer == bob.account.username
        assert sync[0].message.body == "from device one"
        # Bob (second send) sees a 2-device account and Bob's safety numbers list both.
        safety = await bob.safety_numbers(alice1.account.username)
        assert [d.device_id for d in safety.devices] == sorted(
            [alice1.account.device_id, alice2.account.device_id]
        )
        for c in (alice1, alice2, bob):
            await c.aclose()

    run(main())


def test_offline_delivery_in_order_and_duplicates_deduped(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        for i in range(3):
            await alice.send_text(bob.account.username, f"offline {i}")
        # Bob processes the first envelope but "crashes" before acknowledging it.
        raw, _ = await bob._transport.get_messages()
        assert len(raw) == 3
        first = bob.process_envelope(raw[0])
        assert first.kind == "message"
        assert bob.process_envelope(raw[0]).kind == "duplicate"
        # On reconnect the stored-but-never-shown message is handed over first; the server
        # delivers its envelope again: acknowledged, not stored or shown twice.
        events = await bob.listen()
        assert [e.kind for e in events] == ["message", "duplicate", "message", "message"]
        assert bodies(events) == ["offline 0", "offline 1", "offline 2"]
        assert [m.body for m in bob.messages()] == ["offline 0", "offline 1", "offline 2"]
        assert (await bob._transport.get_messages())[0] == []
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_tampered_commitment_is_refused(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        bob.auto_delivery_receipts = False
        await alice.send_text(bob.account.username, "original")
        raw, _ = await bob._transport.get_messages()
        envelope = codec.decode(pb.Envelope, raw[0])
        envelope.commitment = bytes(32)  # someone on the path swaps the commitment
        event = bob.process_envelope(codec.encode(envelope))
        assert event.kind == "rejected" and event.code == "decryption_failed"
        assert bob.messages() == []

        # A malicious sender binds a commitment that does not open to the content.
        me, you = alice.account.username, bob.account.username
        content = pb.Content(
            version=limits.PROTOCOL_VERSION, sent_at_ms=1,
            conversation_id=direct_conversation_id(me, you), data=pb.DataMessage(body="lie"),
        )
        honest = frank(content)
        forged = FrankedPlaintext(
            plaintext=honest.plaintext, commitment=bytes(32),
            franking_key=honest.franking_key, content=honest.content,
        )
        await alice._send_franked(you, forged)
        raw, _ = await bob._transport.get_messages()
        events = [bob.process_envelope(r) for r in raw]
        assert [e.code for e in events if e.kind == "rejected"][-1] == "commitment_mismatch"
        assert bob.messages() == []
        assert {r["code"] for r in bob.rejected()} >= {"commitment_mismatch"}
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_franking_material_kept_and_chained(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        for text in ("one", "two", "three"):
            await alice.send_text(bob.account.username, text)
        events = await bob.poll()
        items = [bob.report_item(e.message.id) for e in events if e.message is not None]
        assert all(i is not None for i in items)
        run_items = [i for i in items if i is not None]
        assert run_items[0].sender == alice.account.username
        assert run_items[0].recipient_device == bob.account.device_id
        contents = verify_context_chain(
            run_items,
            expected_conversation_id=direct_conversation_id(
                alice.account.username, bob.account.username
            ),
        )
        assert [c.data.body for c in contents] == ["one", "two", "three"]
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_verified_contact_change_blocks_until_reverified(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob1 = await register(tmp_path, "bob1", names("bob"), server_url)
        bob_name = bob1.account.username
        numbers = await alice.safety_numbers(bob_name)
        assert len(numbers.devices) == 1 and not numbers.verified
        theirs = await bob1.safety_numbers(alice.account.username)
        # Both sides see the same 60 digits.
        assert theirs.devices[0].safety_number == numbers.devices[0].safety_number
        with pytest.raises(SafetyNumberMismatchError):
            await alice.verify(bob_name, "0" * 60)
        verified = await alice.verify(bob_name, numbers.devices[0].safety_number)
        assert verified.verified and verified.devices[0].verified
        await alice.send_text(bob_name, "verified hello")
        # Bob adds a device: a verified contact's key set changed.
        bob2 = await link(tmp_path, "bob2", bob1, server_url)
        with pytest.raises(UntrustedIdentityError):
            await alice.send_text(bob_name, "should not go")
        safety = await alice.safety_numbers(bob_name)
        assert safety.blocked and not safety.verified
        # The signed list published the device (key transparency), then its key was pinned.
        assert [e.kind for e in safety.events] == ["kt_device_added", "device_added"]
        await alice.verify(bob_name)
        sent = await alice.send_text(bob_name, "after re-verify")
        assert sent.devices == 2
        assert bodies(await bob2.poll()) == ["after re-verify"]
        assert bodies(await bob1.poll()) == ["verified hello", "after re-verify"]
        for c in (alice, bob1, bob2):
            await c.aclose()

    run(main())


def test_removed_device_is_dropped(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob1 = await register(tmp_path, "bob1", names("bob"), server_url)
        bob2 = await link(tmp_path, "bob2", bob1, server_url)
        sent = await alice.send_text(bob1.account.username, "two devices")
        assert sent.devices == 2
        await bob1._transport.delete_device(bob2.account.device_id)
        # The server reports the removed device as extra; Alice drops it and retries.
        sent = await alice.send_text(bob1.account.username, "one device")
        assert sent.devices == 1
        assert bodies(await bob1.poll()) == ["two devices", "one device"]
        for c in (alice, bob1, bob2):
            await c.aclose()

    run(main())


def test_prekeys_are_refilled(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        one_time, kem = await bob._transport.key_count()
        assert (one_time, kem) == (30, 30)
        uploaded = await bob.refresh_prekeys()
        assert uploaded == {"one_time": 0, "kem": 0, "signed": 0}
        # Drain the server below the watermark by fetching bundles.
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        for _ in range(12):
            await alice._transport.get_bundles(bob.account.username)
        uploaded = await bob.refresh_prekeys()
        assert uploaded["one_time"] == 100 and uploaded["kem"] == 100
        assert await bob._transport.key_count() == (118, 118)
        # A key fetched from the new batch still yields a working session.
        await alice.send_text(bob.account.username, "after refill")
        assert bodies(await bob.poll()) == ["after refill"]
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_attachment_roundtrip(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        original = tmp_path / "photo.bin"
        payload = bytes(range(256)) * 1000  # several chunks
        original.write_bytes(payload)
        sent = await alice.send_file(bob.account.username, original, caption="look",
                                     content_type="image/png")
        assert sent.message.attachments[0].size == len(payload)
        events = await bob.poll()
        received = next(e.message for e in events if e.kind == "message")
        assert received is not None and received.body == "look"
        assert received.attachments[0].file_name == "photo.bin"
        out_dir = tmp_path / "downloads"
        out_dir.mkdir()
        path = await bob.download_attachment(received.id, out_dir)
        assert path.read_bytes() == payload
        # A wrong index is a typed error.
        with pytest.raises(ProtocolError):
            await bob.download_attachment(received.id, out_dir, index=3)
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_b64_helpers_roundtrip() -> None:
    assert b64d("AQI") == b"\x01\x02"


def test_oversized_attachment_is_the_one_typed_error_and_sends_nothing(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    from tidings.crypto import attachment
    from tidings.errors import AttachmentTooLargeError

    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        huge = tmp_path / "huge.bin"
        with huge.open("wb") as f:
            f.truncate(attachment.MAX_ATTACHMENT_BYTES + 1)  # sparse: no disk used
        with pytest.raises(AttachmentTooLargeError) as caught:
            await alice.send_file(bob.account.username, huge)
        assert caught.value.code == "attachment_too_large"  # the server's code for the same
        assert alice.messages() == []
        await alice.aclose()
        await bob.aclose()

    run(main())
