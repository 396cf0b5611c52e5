"""The SDK's result types and their decoding from stored records (built in one place)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tidings.client.errors import StoreTamperedError, TransportError
from tidings.client.sdk.constants import GROUP_PEER_PREFIX
from tidings.client.transport import Credentials, b64d, b64e
from tidings.wire import tidings_pb2 as pb

# --- public result types --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """This device's registration (secret included: keep it inside the store)."""

    username: str
    device_id: int
    server_url: str
    registration_id: int
    secret: bytes = field(repr=False)
    device_name: str

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "device_id": self.device_id,
            "server_url": self.server_url,
            "registration_id": self.registration_id,
            "secret": b64e(self.secret),
            "device_name": self.device_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Account:
        try:
            return cls(
                username=str(data["username"]),
                device_id=int(data["device_id"]),
                server_url=str(data["server_url"]),
                registration_id=int(data["registration_id"]),
                secret=b64d(data["secret"]),
                device_name=str(data.get("device_name", "")),
            )
        except (KeyError, ValueError, TypeError, TransportError):
            raise StoreTamperedError("the stored account record is damaged") from None

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.username, self.device_id, self.secret)


@dataclass(frozen=True, slots=True)
class AttachmentSummary:
    """What a message says about one attachment (the key stays in the store)."""

    file_name: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the local history.

    ``direction`` is "in" (received) or "out" (sent by this account, from this or another own
    device). ``status`` of an outgoing message: "sent", "delivered", "read"; of an incoming one:
    "received", "read". ``reportable`` is true when the franking material is kept.
    ``id`` is local: ``"i:" + base64url(server message id)`` for a received message (or a sync
    copy), ``"o:" + random`` for one sent from this device. A group message has ``peer``
    ``"group:<id>"``; ``notice`` describes a membership change it carried (then ``body`` is
    usually empty).
    """

    id: str
    direction: Literal["in", "out"]
    peer: str
    sender: str
    sender_device: int
    body: str
    sent_at_ms: int
    server_timestamp_ms: int
    status: str
    reportable: bool
    identity_changed: bool = False
    attachments: tuple[AttachmentSummary, ...] = ()
    notice: str = ""

    @property
    def group_id(self) -> str | None:
        """The base64url group id of a group message, else None."""
        if self.peer.startswith(GROUP_PEER_PREFIX):
            return self.peer[len(GROUP_PEER_PREFIX) :]
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SentMessage:
    """The outcome of a send: the stored message and the server's ids per recipient device."""

    message: Message
    server_timestamp_ms: int
    message_ids: tuple[str, ...]
    devices: int
    synced_devices: int
    sync_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message.to_dict(),
            "server_timestamp_ms": self.server_timestamp_ms,
            "message_ids": list(self.message_ids),
            "devices": self.devices,
            "synced_devices": self.synced_devices,
            "sync_error": self.sync_error,
        }


EventKind = Literal["message", "sync", "receipt", "key", "duplicate", "rejected", "ignored"]


@dataclass(frozen=True, slots=True)
class ReceiveEvent:
    """What happened to one envelope. ``code`` is the error code of a rejected one."""

    kind: EventKind
    sender: str
    sender_device: int
    message_id: str
    message: Message | None = None
    code: str | None = None
    identity_changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "sender": self.sender,
            "sender_device": self.sender_device,
            "message_id": self.message_id,
            "identity_changed": self.identity_changed,
        }
        if self.message is not None:
            out["message"] = self.message.to_dict()
        if self.code is not None:
            out["code"] = self.code
        return out


@dataclass(frozen=True, slots=True)
class TrustEvent:
    """A change in a contact's devices: "identity_changed", "device_added", "device_removed"."""

    kind: str
    device_id: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class DeviceSafetyNumber:
    device_id: int
    safety_number: str
    verified: bool


@dataclass(frozen=True, slots=True)
class ContactSafety:
    """Safety numbers of every device of a contact, seen from this device."""

    username: str
    devices: tuple[DeviceSafetyNumber, ...]
    verified: bool
    blocked: bool
    events: tuple[TrustEvent, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def message_from_record(record: dict[str, Any]) -> Message:
    try:
        return Message(
            id=str(record["id"]),
            direction="in" if record["direction"] == "in" else "out",
            peer=str(record["peer"]),
            sender=str(record["sender"]),
            sender_device=int(record["sender_device"]),
            body=str(record["body"]),
            sent_at_ms=int(record["sent_at_ms"]),
            server_timestamp_ms=int(record["server_timestamp_ms"]),
            status=str(record["status"]),
            reportable=bool(record.get("reportable")),
            identity_changed=bool(record.get("identity_changed")),
            attachments=tuple(
                AttachmentSummary(
                    str(a.get("file_name", "")),
                    str(a.get("content_type", "")),
                    int(a.get("size", 0)),
                )
                for a in record.get("attachments", [])
            ),
            notice=str(record.get("notice", "")),
        )
    except (KeyError, ValueError, TypeError):
        raise StoreTamperedError("a stored message is damaged") from None


def new_message(
    *,
    id: str,
    peer: str,
    sender: str,
    sender_device: int,
    data: pb.DataMessage,
    sent_at_ms: int,
    server_timestamp_ms: int,
    incoming: bool,
    identity_changed: bool = False,
    notice: str = "",
) -> Message:
    """The one place a `Message` is built from a data message. An ``incoming`` one is "in",
    "received" and reportable (its franking material is kept beside it); one of this account
    (sent from this device, or a copy from another own device) is "out", "sent" and not
    reportable."""
    return Message(
        id=id,
        direction="in" if incoming else "out",
        peer=peer,
        sender=sender,
        sender_device=sender_device,
        body=data.body,
        sent_at_ms=sent_at_ms,
        server_timestamp_ms=server_timestamp_ms,
        status="received" if incoming else "sent",
        reportable=incoming,
        identity_changed=identity_changed,
        attachments=attachment_summaries(data),
        notice=notice,
    )


def attachment_summaries(data: pb.DataMessage) -> tuple[AttachmentSummary, ...]:
    return tuple(AttachmentSummary(a.file_name, a.content_type, a.size) for a in data.attachments)


def attachment_pointers(data: pb.DataMessage) -> list[dict[str, Any]]:
    """Attachment pointers as stored (sealed) beside the message, keys included."""
    return [
        {
            "id": a.id,
            "key": b64e(a.key),
            "digest": b64e(a.digest),
            "size": a.size,
            "chunk_size": a.chunk_size,
            "content_type": a.content_type,
            "file_name": a.file_name,
        }
        for a in data.attachments
    ]


# --- groups and reports: helpers ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    """A group as this device sees it. ``id`` is the base64url of the 16-byte group id;
    ``active`` is false once this account left or was removed."""

    id: str
    title: str
    revision: int
    members: tuple[str, ...]
    active: bool

    @property
    def peer(self) -> str:
        """The ``Message.peer`` of this group's messages."""
        return GROUP_PEER_PREFIX + self.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "revision": self.revision,
            "members": list(self.members),
            "active": self.active,
            "peer": self.peer,
        }


@dataclass(frozen=True, slots=True)
class GroupSendResult:
    """The outcome of a group send: the stored message, the accounts reached and those that
    could not be (account -> error code)."""

    group: Group
    message: Message
    delivered: tuple[str, ...]
    failed: dict[str, str]
    devices: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group.to_dict(),
            "message": self.message.to_dict(),
            "delivered": list(self.delivered),
            "failed": dict(self.failed),
            "devices": self.devices,
        }


def group_from_record(record: dict[str, Any]) -> Group:
    try:
        return Group(
            id=str(record["id"]),
            title=str(record["title"]),
            revision=int(record["revision"]),
            members=tuple(str(m) for m in record["members"]),
            active=bool(record.get("active")),
        )
    except (KeyError, ValueError, TypeError):
        raise StoreTamperedError("a stored group is damaged") from None
