"""Typed store records of the SDK: contacts read from today's and earlier profiles."""

from __future__ import annotations

import pytest

from tidings.client.errors import StoreTamperedError
from tidings.client.sdk.models import Group, TrustEvent, attachment_pointers, new_message
from tidings.client.sdk.records import ContactRecord, DeviceRecord, MessageRecord
from tidings.wire import tidings_pb2 as pb

# A contact as profiles written before the typed record stored it.
OLD = {
    "devices": {"1": {"identity": "aWQx", "registration_id": 7}},
    "verified": False,
    "verified_keys": {"1": "aWQw"},
    "blocked": True,
    "user_blocked": False,
    "events": [{"kind": "identity_changed", "device_id": 1, "at_ms": 5}],
}


def test_old_contact_reads_with_its_two_flags_kept_apart() -> None:
    contact = ContactRecord.from_json(OLD)
    assert contact.devices == {1: DeviceRecord("aWQx", 7)}
    assert contact.verified_keys == {1: "aWQw"}
    assert contact.sending_held and not contact.blocked_by_user
    assert contact.events == [TrustEvent("identity_changed", 1, 5)]
    user = ContactRecord.from_json({**OLD, "blocked": False, "user_blocked": True})
    assert user.blocked_by_user and not user.sending_held


def test_contact_round_trips_under_names_that_cannot_be_confused() -> None:
    contact = ContactRecord.from_json(OLD)
    stored = contact.to_json()
    assert "blocked" not in stored and "user_blocked" not in stored
    assert stored["sending_held"] is True and stored["blocked_by_user"] is False
    assert ContactRecord.from_json(stored) == contact


def test_trust_events_keep_the_newest() -> None:
    contact = ContactRecord()
    for at in range(60):
        contact.note("device_added", 2, at)
    assert len(contact.events) == 50 and contact.events[-1].at_ms == 59


@pytest.mark.parametrize(
    "damaged",
    [
        {"devices": {"x": {"identity": "a", "registration_id": 1}}},
        {"devices": {"1": {"registration_id": 1}}},
        {"devices": []},
        {"events": [{"kind": "device_added"}]},
    ],
)
def test_damaged_contact_is_a_typed_error(damaged: dict[str, object]) -> None:
    with pytest.raises(StoreTamperedError):
        ContactRecord.from_json(damaged)


def test_messages_are_built_in_one_place_with_consistent_fields() -> None:
    data = pb.DataMessage(body="hi")
    data.attachments.add(file_name="a.txt", content_type="text/plain", size=3)
    common = {"peer": "bob", "sender": "bob", "sender_device": 1, "data": data,
              "sent_at_ms": 1, "server_timestamp_ms": 2}
    incoming = new_message(id="i:x", incoming=True, **common)  # type: ignore[arg-type]
    assert (incoming.direction, incoming.status, incoming.reportable) == ("in", "received", True)
    assert incoming.attachments[0].file_name == "a.txt" and incoming.body == "hi"
    own = new_message(id="o:y", incoming=False, **common)  # type: ignore[arg-type]
    assert (own.direction, own.status, own.reportable) == ("out", "sent", False)


def test_old_group_record_reads_without_its_key_devices() -> None:
    old = {"id": "Z2lk", "title": "Team", "revision": 3, "members": ["alice", "bob"],
           "active": True, "key_devices": [["bob", 1]]}
    group = Group.from_json(old)
    assert group == Group("Z2lk", "Team", 3, ("alice", "bob"), active=True)
    assert group.to_json() == {k: v for k, v in old.items() if k != "key_devices"}
    assert Group.from_json(group.to_json()) == group


@pytest.mark.parametrize(
    "damaged",
    [
        {"title": "t", "revision": 1, "members": []},
        {"id": "g", "title": "t", "revision": "x", "members": []},
        {"id": "g", "title": "t", "revision": 1, "members": "alice"},
    ],
)
def test_damaged_group_is_a_typed_error(damaged: dict[str, object]) -> None:
    with pytest.raises(StoreTamperedError):
        Group.from_json(damaged)


def test_message_record_keeps_its_stored_form() -> None:
    data = pb.DataMessage(body="hi")
    data.attachments.add(id="att", key=b"k" * 32, digest=b"d" * 32, size=3, chunk_size=4,
                         content_type="text/plain", file_name="a.txt")
    message = new_message(id="i:x", peer="bob", sender="bob", sender_device=1, data=data,
                          sent_at_ms=1, server_timestamp_ms=2, incoming=True)
    record = MessageRecord(message, attachment_pointers(data), report_item="aXRlbQ",
                           conversation_id="Y29udg")
    stored = record.to_json()
    # The form profiles hold: the message's fields, the pointers (with their keys) under
    # "attachments", and only the optional fields that are set.
    assert stored["attachments"][0]["key"] and stored["attachments"][0]["file_name"] == "a.txt"
    assert "commitment" not in stored and "group" not in stored
    assert stored["report_item"] == "aXRlbQ" and stored["status"] == "received"
    assert MessageRecord.from_json(stored) == record
    assert MessageRecord.from_json(stored).message.attachments == message.attachments


@pytest.mark.parametrize(
    "damaged",
    [{"id": "i:x"}, {"id": "i:x", "direction": "in", "peer": "b", "sender": "b",
                     "sender_device": "one", "body": "", "sent_at_ms": 1,
                     "server_timestamp_ms": 1, "status": "received"}],
)
def test_damaged_message_is_a_typed_error(damaged: dict[str, object]) -> None:
    with pytest.raises(StoreTamperedError):
        MessageRecord.from_json(damaged)
