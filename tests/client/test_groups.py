"""Groups end to end: sender-key messages to several multi-device members, membership changes
with rotation, and reports of group messages, against the real server (see conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import PASS, link, register, run
from tidings.client.errors import NotAGroupMemberError, NotReportableError, UnknownGroupError
from tidings.client.sdk import Client, ReceiveEvent
from tidings.client.sdk.constants import K_GROUP
from tidings.client.transport import b64d
from tidings.crypto.franking import (
    ReportItem,
    group_conversation_id,
    verify_report,
    verify_report_item,
)
from tidings.errors import StaleDevicesError, UnknownSenderKeyError
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb


def texts(events: list[ReceiveEvent], kind: str = "message") -> list[str]:
    return [e.message.body for e in events
            if e.kind == kind and e.message is not None and e.message.body]


async def drain(*clients: Client) -> dict[str, list[ReceiveEvent]]:
    """Receive everything queued for each client (twice: receipts and keys cross)."""
    out: dict[str, list[ReceiveEvent]] = {}
    for _ in range(2):
        for c in clients:
            key = f"{c.account.username}.{c.account.device_id}"
            out.setdefault(key, []).extend(await c.poll())
    return out


def test_group_three_members_multi_device(
    tmp_path: Path, server_url: str, franking_key: bytes, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a1", names("alice"), server_url)
        alice2 = await link(tmp_path, "a2", alice, server_url)
        bob = await register(tmp_path, "b1", names("bob"), server_url)
        carol = await register(tmp_path, "c1", names("carol"), server_url)
        carol2 = await link(tmp_path, "c2", carol, server_url)
        everyone = [alice, alice2, bob, carol, carol2]
        a, b, c = alice.account.username, bob.account.username, carol.account.username

        created = await alice.create_group("Book club", [b, c])
        group = created.group
        assert group.members == tuple(sorted([a, b, c])) and group.revision == 1
        # bob: 1 device, carol: 2 devices, alice's other device: 1.
        assert created.devices == 4 and not created.failed
        first = await alice.send_group_text(group.id, "welcome all")
        assert first.devices == 4
        events = await drain(*everyone)
        for member in (bob, carol, carol2):
            got = events[f"{member.account.username}.{member.account.device_id}"]
            assert texts(got) == ["welcome all"], got
            assert member.group(group.id).members == group.members
            assert next(m.notice for m in member.messages(group.peer)) == f"{a} created the group"
        # Alice's other device sees both as her own (sync) messages in the same group.
        assert texts(events[f"{a}.{alice2.account.device_id}"], "sync") == ["welcome all"]
        assert alice2.group("Book club").id == group.id

        # Bob answers; carol (both devices), alice (both devices) read it.
        await bob.send_group_text(group.id, "hi from bob")
        events = await drain(*everyone)
        for member in (alice, alice2, carol, carol2):
            got = events[f"{member.account.username}.{member.account.device_id}"]
            assert texts(got) == ["hi from bob"]
        # Delivery receipts from members came back to the senders.
        statuses = {m.body: m.status for m in alice.messages(group.peer) if m.body}
        assert statuses["welcome all"] == "delivered"
        # Carol's second device answers: the others decrypt with that device's own key.
        await carol2.send_group_text("Book club", "carol on her laptop")
        events = await drain(*everyone)
        assert texts(events[f"{b}.1"]) == ["carol on her laptop"]
        assert texts(events[f"{c}.{carol.account.device_id}"], "sync") == ["carol on her laptop"]

        # Group messages are reportable: the kept ReportItem verifies with the server's key.
        incoming = [m for m in carol.messages(group.peer) if m.direction == "in" and m.body]
        assert [m.body for m in incoming] == ["welcome all", "hi from bob"]
        item = carol.report_item(incoming[0].id)
        assert item is not None and item.recipient == c and item.sender == a
        content = verify_report_item(franking_key, item)
        assert content.data.body == "welcome all"
        assert content.conversation_id == group_conversation_id(b64d(group.id))
        # The report body: the reported item with its context, a valid transcript excerpt.
        body = carol.build_report(incoming[1].id, "harassment", context=5, note="n")
        items = [ReportItem.decode(b64d(x)) for x in body["items"]]
        assert body["category"] == "harassment" and body["note"] == "n"
        assert items[body["reported_index"]].sender == b
        verify_report(franking_key, items,
                      expected_conversation_id=group_conversation_id(b64d(group.id)))
        # Context: alice's creation notice and first message before, carol's other device's
        # message after (the copy this device received is a link like any other).
        assert [codec.decode(pb.Content, i.content).data.body for i in items] == [
            "", "welcome all", "hi from bob", "carol on her laptop"]
        # Own sent messages cannot be reported.
        own = next(m for m in carol.messages(group.peer) if m.direction == "out")
        with pytest.raises(NotReportableError):
            carol.build_report(own.id, "spam")
        for client in everyone:
            await client.aclose()

    run(main())


def test_group_membership_changes_rotate_keys(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        carol = await register(tmp_path, "c", names("carol"), server_url)
        dave = await register(tmp_path, "d", names("dave"), server_url)
        everyone = [alice, bob, carol, dave]
        a, b, c, d = (x.account.username for x in everyone)

        group = (await alice.create_group("Team", [b, c])).group
        await alice.send_group_text(group.id, "before dave")
        await drain(*everyone)
        # Carol sends too, so everyone holds her key.
        await carol.send_group_text(group.id, "carol here")
        await drain(*everyone)
        assert texts([]) == []

        # Dave joins: he sees messages from now on only.
        added = await alice.add_group_members(group.id, [d])
        assert added.group.revision == 2 and d in added.group.members
        await alice.send_group_text(group.id, "hello dave")
        events = await drain(*everyone)
        assert texts(events[f"{d}.1"]) == ["hello dave"]
        assert [m.body for m in dave.messages(group.peer) if m.body] == ["hello dave"]
        assert dave.group(group.id).members == tuple(sorted([a, b, c, d]))
        assert bob.group(group.id).revision == 2

        # Keep Carol's key state from before her removal: she holds alice's and bob's chains.
        conversation = group_conversation_id(b64d(group.id))
        await bob.send_group_text(group.id, "bob before removal")
        await drain(*everyone)
        carol_old_keys = carol._group_keys(conversation)
        assert carol_old_keys.remote(a, 1) is not None and carol_old_keys.remote(b, 1)

        removed = await alice.remove_group_members(group.id, [c])
        assert c not in removed.group.members and removed.group.revision == 3
        await drain(*everyone)
        # Carol learned she was removed; she can no longer send to the group.
        assert not carol.group(group.id).active
        assert "removed" in [m.notice for m in carol.messages(group.peer)][-1]
        with pytest.raises(NotAGroupMemberError):
            await carol.send_group_text(group.id, "still here?")

        # Later messages use rotated keys: Carol's old chains cannot open them.
        await alice.send_group_text(group.id, "after carol")
        await bob.send_group_text(group.id, "bob after carol")
        raw, _ = await dave._transport.get_messages()
        group_envelopes = [e for e in (codec.decode(pb.Envelope, r) for r in raw)
                           if e.type == pb.Envelope.SENDER_KEY]
        assert len(group_envelopes) == 2
        for envelope in group_envelopes:
            with pytest.raises(UnknownSenderKeyError):
                carol_old_keys.decrypt(envelope.sender, envelope.sender_device, envelope.body,
                                       envelope.commitment)
        events = await drain(*everyone)
        assert texts(events[f"{d}.1"]) == ["after carol", "bob after carol"]
        assert texts(events[f"{b}.1"]) == ["after carol"]
        assert texts(events[f"{c}.1"]) == []  # the server never sent them to her anyway

        # Bob leaves; the rest converge on the same view and keep talking.
        left = await bob.leave_group(group.id)
        assert not left.group.active
        await drain(*everyone)
        for member in (alice, dave):
            view = member.group(group.id)
            assert view.members == tuple(sorted([a, d])) and view.revision == 4
        await dave.send_group_text(group.id, "just us")
        events = await drain(*everyone)
        assert texts(events[f"{a}.1"]) == ["just us"]
        assert texts(events[f"{b}.1"]) == []
        with pytest.raises(UnknownGroupError):
            alice.group("no such group")
        assert [g.title for g in alice.groups()] == ["Team"]
        for client in everyone:
            await client.aclose()

    run(main())


def test_group_of_an_old_profile_opens_and_an_unlinked_device_loses_the_key(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    """Profiles written before the sender-key state was the one record of who holds this
    device's key stored that list in the group record too ("key_devices"): such a profile still
    opens and sends, and the key state alone decides that an unlinked device gets no more."""

    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        bob2 = await link(tmp_path, "b2", bob, server_url)
        b, b2 = bob.account.username, bob2.account.device_id
        group = (await alice.create_group("Old", [b])).group
        await drain(alice, bob, bob2)
        conversation = group_conversation_id(b64d(group.id))
        assert alice._group_keys(conversation).shared_with() == [(b, 1), (b, b2)]

        stored = alice._store.get_json(K_GROUP, group.id)
        assert stored is not None and "key_devices" not in stored
        alice._store.put_json(K_GROUP, group.id, {**stored, "key_devices": [[b, 1], [b, b2]]})
        await alice.aclose()
        alice = Client.open(tmp_path / "a", PASS)
        assert alice.group("Old") == group
        chain = alice._group_keys(conversation).own.chain_id

        await bob._transport.delete_device(b2)
        # The upload finds the device gone (the key was already used for this message)...
        await alice.send_group_text(group.id, "one")
        # ...and the next message is under a new key that the unlinked device never gets.
        second = await alice.send_group_text(group.id, "two")
        assert second.devices == 1 and not second.failed
        keys = alice._group_keys(conversation)
        assert keys.own.chain_id != chain and keys.shared_with() == [(b, 1)]
        events = await drain(alice, bob)
        assert texts(events[f"{b}.1"]) == ["one", "two"]
        for client in (alice, bob, bob2):
            await client.aclose()

    run(main())


def test_stale_device_gets_a_new_session_in_1to1_and_group_sends(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    """410 ``stale_devices`` (the device re-registered) takes the same reconciliation path in
    both sends: a fresh bundle and a new session, then the message (and in a group the sender
    key again, over that new session) goes through."""

    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        b = bob.account.username
        await alice.send_text(b, "first")
        group = (await alice.create_group("Stale", [b])).group
        await drain(alice, bob)
        upload = alice._transport.send_messages
        uploads: list[int] = []  # the envelope type of each upload, the refused one first

        async def stale_once(username: str, messages: Any) -> Any:
            uploads.append(messages[0].type)
            if len(uploads) == 1:
                raise StaleDevicesError([1])
            return await upload(username, messages)

        alice._transport.send_messages = stale_once  # type: ignore[method-assign]
        await alice.send_text(b, "after stale")
        # Retried under a new session started from a fresh bundle: a prekey message, though
        # the old session was current.
        assert uploads == [pb.Envelope.RATCHET, pb.Envelope.PREKEY]
        assert texts((await drain(alice, bob))[f"{b}.1"]) == ["after stale"]
        uploads.clear()
        await alice.send_group_text(group.id, "group after stale")
        # The sender key goes again over a new session, then the group message.
        assert uploads == [pb.Envelope.SENDER_KEY, pb.Envelope.PREKEY, pb.Envelope.SENDER_KEY]
        assert texts((await drain(alice, bob))[f"{b}.1"]) == ["group after stale"]
        for client in (alice, bob):
            await client.aclose()

    run(main())
