"""Typed records of the local store (instead of raw JSON dicts), with their JSON forms.

A record's JSON form is what the sealed store holds; `from_json` also reads the key names
profiles written by earlier versions used, so no migration of the store file is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.client.errors import StoreTamperedError
from tidings.client.sdk.constants import MAX_TRUST_EVENTS
from tidings.client.sdk.models import TrustEvent


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
            "devices": {
                str(d): {"identity": r.identity, "registration_id": r.registration_id}
                for d, r in self.devices.items()
            },
            "verified": self.verified,
            "verified_keys": {str(d): k for d, k in self.verified_keys.items()},
            "sending_held": self.sending_held,
            "blocked_by_user": self.blocked_by_user,
            "events": [
                {"kind": e.kind, "device_id": e.device_id, "at_ms": e.at_ms} for e in self.events
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContactRecord:
        """Raises: StoreTamperedError (the record is damaged)."""
        try:
            return cls(
                devices={
                    int(d): DeviceRecord(str(r["identity"]), int(r["registration_id"]))
                    for d, r in _mapping(data.get("devices", {})).items()
                },
                verified=bool(data.get("verified")),
                verified_keys={
                    int(d): str(k) for d, k in _mapping(data.get("verified_keys", {})).items()
                },
                sending_held=bool(data.get("sending_held", data.get("blocked"))),
                blocked_by_user=bool(data.get("blocked_by_user", data.get("user_blocked"))),
                events=[
                    TrustEvent(str(e["kind"]), int(e["device_id"]), int(e["at_ms"]))
                    for e in data.get("events", [])
                ],
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            raise StoreTamperedError("a stored contact is damaged") from None


def _mapping(value: object) -> dict[str, Any]:
    """A stored JSON object, or TypeError (the caller maps it to StoreTamperedError)."""
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value
