"""Typed records of the local store (instead of raw JSON dicts), with their JSON forms.

A record's JSON form is what the sealed store holds; `from_json` also reads the key names
profiles written by earlier versions used, so no migration of the store file is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.client.errors import StoreTamperedError
from tidings.client.sdk.constants import MAX_TRUST_EVENTS
from tidings.client.sdk.models import AttachmentSummary, Message, TrustEvent


@dataclass(slots=True)
class DeviceRecord:
    """One pinned device of a contact: its identity key (base64url) and registration id."""

    identity: str
    registration_id: int


@dataclass(slots=True)
class ContactRecord:
    """What this device knows about one account (K_CONTACT).

    Two different flags, named so they cannot be confused:

    - ``sending_held``: the contact was verified and its keys changed since; sending to it is
      refused (`UntrustedIdentityError`) until the user verifies again. Set by the client.
      (Stored as ``"blocked"`` before, and shown as `ContactSafety.blocked`.)
    - ``blocked_by_user``: the user blocked the contact (`Client.set_blocked`); its data
      messages are refused unread. (Stored as ``"user_blocked"`` before.)
    """

    devices: dict[int, DeviceRecord] = field(default_factory=dict)
    verified: bool = False
    verified_keys: dict[int, str] = field(default_factory=dict)
    sending_held: bool = False
    blocked_by_user: bool = False
    events: list[TrustEvent] = field(default_factory=list)

    def note(self, kind: str, device_id: int, at_ms: int) -> None:
        """Record a trust event, keeping the newest `MAX_TRUST_EVENTS`."""
        self.events = [*self.events, TrustEvent(kind, device_id, at_ms)][-MAX_TRUST_EVENTS:]

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": {str(d): {"identity": r.identity, "registration_id": r.registration_id}
                        for d, r in self.devices.items()},
            "verified": self.verified,
            "verified_keys": {str(d): k for d, k in self.verified_keys.items()},
            "sending_held": self.sending_held,
            "blocked_by_user": self.blocked_by_user,
            "events": [{"kind": e.kind, "device_id": e.device_id, "at_ms": e.at_ms}
                       for e in self.events],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContactRecord:
        """Raises: StoreTamperedError (the record is damaged)."""
        try:
            return cls(
                devices={int(d): DeviceRecord(str(r["identity"]), int(r["registration_id"]))
                         for d, r in _mapping(data.get("devices", {})).items()},
                verified=bool(data.get("verified")),
                verified_keys={int(d): str(k)
                               for d, k in _mapping(data.get("verified_keys", {})).items()},
                sending_held=bool(data.get("sending_held", data.get("blocked"))),
                blocked_by_user=bool(data.get("blocked_by_user", data.get("user_blocked"))),
                events=[TrustEvent(str(e["kind"]), int(e["device_id"]), int(e["at_ms"]))
                        for e in data.get("events", [])],
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            raise StoreTamperedError("a stored contact is damaged") from None


@dataclass(slots=True)
class MessageRecord:
    """One message of the local history as stored (K_MESSAGE): the `Message` and what only the
    sealed store keeps beside it. Its JSON form is the message's `to_dict` with ``attachments``
    holding the full pointers (keys included) and the optional fields present when set.
    """

    message: Message
    attachment_pointers: list[dict[str, Any]] = field(default_factory=list)
    commitment: str | None = None
    """An own message sent from this device: its franking commitment (base64url)."""
    report_item: str | None = None
    """A received message or sync copy: `ReportItem.encode()` (base64url), for reports."""
    conversation_id: str | None = None
    """With ``report_item``: the conversation id it was received in (base64url)."""
    group: str | None = None
    """A group message: the base64url group id."""

    def to_json(self) -> dict[str, Any]:
        out = self.message.to_dict()
        out["attachments"] = self.attachment_pointers
        for key in _MESSAGE_EXTRAS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageRecord:
        """Raises: StoreTamperedError (the record is damaged)."""
        try:
            pointers = [_mapping(a) for a in data.get("attachments", [])]
            message = Message(
                id=str(data["id"]),
                direction="in" if data["direction"] == "in" else "out",
                peer=str(data["peer"]),
                sender=str(data["sender"]),
                sender_device=int(data["sender_device"]),
                body=str(data["body"]),
                sent_at_ms=int(data["sent_at_ms"]),
                server_timestamp_ms=int(data["server_timestamp_ms"]),
                status=str(data["status"]),
                reportable=bool(data.get("reportable")),
                identity_changed=bool(data.get("identity_changed")),
                attachments=tuple(
                    AttachmentSummary(str(a.get("file_name", "")), str(a.get("content_type", "")),
                                      int(a.get("size", 0)))
                    for a in pointers
                ),
                notice=str(data.get("notice", "")),
            )
            extras = {key: str(data[key]) for key in _MESSAGE_EXTRAS if data.get(key) is not None}
        except (KeyError, ValueError, TypeError):
            raise StoreTamperedError("a stored message is damaged") from None
        return cls(message, pointers, **extras)


_MESSAGE_EXTRAS = ("commitment", "report_item", "conversation_id", "group")


def _mapping(value: object) -> dict[str, Any]:
    """A stored JSON object, or TypeError (the caller maps it to StoreTamperedError)."""
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value
