"""Contacts and trust: pinned device identity keys, trust events, safety numbers, blocking."""

from __future__ import annotations

from typing import Any

from tidings.client.errors import SafetyNumberMismatchError, ServerError, UnknownContactError
from tidings.client.sdk.constants import K_CONTACT, K_SESSION, MAX_TRUST_EVENTS, session_name
from tidings.client.sdk.models import ContactSafety, DeviceSafetyNumber, TrustEvent
from tidings.client.sdk.prekeys import PrekeysMixin
from tidings.client.transport import b64d, b64e
from tidings.crypto.safety_number import SafetyNumber
from tidings.errors import ProtocolError


class TrustMixin(PrekeysMixin):
    """Contacts and trust, a part of `Client`."""

    # -- contacts and trust ------------------------------------------------------------------

    def _contact(self, username: str) -> dict[str, Any]:
        contact = self._store.get_json(K_CONTACT, username)
        if contact is None:
            contact = {"devices": {}, "verified": False, "verified_keys": {}, "blocked": False,
                       "events": []}
        return contact

    def _note_event(self, contact: dict[str, Any], kind: str, device_id: int) -> None:
        contact["events"] = [
            *contact.get("events", []),
            {"kind": kind, "device_id": device_id, "at_ms": self._clock()},
        ][-MAX_TRUST_EVENTS:]
        if contact.get("verified"):
            # A verified contact's keys changed: stop trusting until the user verifies again.
            contact["verified"] = False
            contact["blocked"] = True

    def _observe_device(
        self, contact: dict[str, Any], device_id: int, identity: bytes, registration_id: int
    ) -> bool:
        """Pin or compare one device's identity key; True if it changed (or is a new device of a
        known contact). Mutates ``contact``; the caller stores it."""
        devices: dict[str, Any] = contact["devices"]
        key = str(device_id)
        known = devices.get(key)
        changed = False
        if known is None:
            if devices or contact.get("verified_keys"):
                self._note_event(contact, "device_added", device_id)
                changed = True
        elif known["identity"] != b64e(identity):
            self._note_event(contact, "identity_changed", device_id)
            changed = True
        devices[key] = {"identity": b64e(identity), "registration_id": registration_id}
        return changed

    def _drop_device(self, username: str, contact: dict[str, Any], device_id: int) -> None:
        if contact["devices"].pop(str(device_id), None) is not None:
            contact["events"] = [
                *contact.get("events", []),
                {"kind": "device_removed", "device_id": device_id, "at_ms": self._clock()},
            ][-MAX_TRUST_EVENTS:]
        self._store.delete(K_SESSION, session_name(username, device_id))

    async def refresh_contact(self, username: str) -> dict[str, Any]:
        """Fetch ``username``'s device list (no prekeys claimed), pin or compare the identity
        keys, forget removed devices. Returns the stored contact record.

        Raises:
            UnknownContactError: no such account.
        """
        try:
            remote = await self._transport.account_devices(username)
        except ServerError as exc:
            if exc.status == 404:
                raise UnknownContactError(f"there is no account named {username!r}") from None
            raise
        contact = self._contact(username)
        seen = set()
        for device in remote:
            if username == self.account.username and device.device_id == self.account.device_id:
                continue
            seen.add(device.device_id)
            self._observe_device(contact, device.device_id, device.identity_key,
                                 device.registration_id)
        for key in list(contact["devices"]):
            if int(key) not in seen:
                self._drop_device(username, contact, int(key))
        self._store.put_json(K_CONTACT, username, contact)
        return contact

    async def safety_numbers(self, username: str) -> ContactSafety:
        """The safety number of every device of ``username`` (refreshed from the server).

        Raises:
            UnknownContactError: no such account.
        """
        contact = await self.refresh_contact(username)
        return self._safety(username, contact)

    def _safety(self, username: str, contact: dict[str, Any]) -> ContactSafety:
        own = self._identity.public.encode()
        numbers = []
        for key, device in sorted(contact["devices"].items(), key=lambda kv: int(kv[0])):
            number = SafetyNumber.compute(own, self.account.username, b64d(device["identity"]),
                                          username)
            pinned = contact.get("verified_keys", {}).get(key)
            numbers.append(
                DeviceSafetyNumber(
                    device_id=int(key),
                    safety_number=number.display(),
                    verified=bool(contact.get("verified")) and pinned == device["identity"],
                )
            )
        return ContactSafety(
            username=username,
            devices=tuple(numbers),
            verified=bool(contact.get("verified")),
            blocked=bool(contact.get("blocked")),
            events=tuple(TrustEvent(e["kind"], int(e["device_id"]), int(e["at_ms"]))
                         for e in contact.get("events", [])),
        )

    async def verify(
        self, username: str, safety_number: str | None = None
    ) -> ContactSafety:
        """Mark ``username`` verified with its current device keys (after the user compared the
        safety numbers out of band). When ``safety_number`` is given it must equal one device's
        number (spaces ignored). Clears the change warnings and unblocks sending.

        Raises:
            SafetyNumberMismatchError: ``safety_number`` matches no device.
            UnknownContactError: no such account.
            ProtocolError: the contact has no devices.
        """
        contact = await self.refresh_contact(username)
        safety = self._safety(username, contact)
        if not safety.devices:
            raise ProtocolError(f"{username} has no devices to verify")
        if safety_number is not None:
            wanted = "".join(safety_number.split())
            if all(d.safety_number.replace(" ", "") != wanted for d in safety.devices):
                raise SafetyNumberMismatchError(
                    "the safety number does not match: do not trust this contact yet"
                )
        contact["verified"] = True
        contact["blocked"] = False
        contact["verified_keys"] = {k: d["identity"] for k, d in contact["devices"].items()}
        contact["events"] = []
        self._store.put_json(K_CONTACT, username, contact)
        return self._safety(username, contact)

    def trust_events(self, username: str) -> tuple[TrustEvent, ...]:
        """The recorded device changes of ``username`` since it was last verified (local,
        no network): identity_changed, device_added, device_removed."""
        contact = self._store.get_json(K_CONTACT, username) or {}
        return tuple(TrustEvent(str(e["kind"]), int(e["device_id"]), int(e["at_ms"]))
                     for e in contact.get("events", []))

    async def unverify(self, username: str) -> None:
        """Clear the verified flag (and any block) of ``username``."""
        contact = self._contact(username)
        contact.update(verified=False, blocked=False, verified_keys={})
        self._store.put_json(K_CONTACT, username, contact)

    def set_blocked(self, username: str, blocked: bool = True) -> None:
        """Block (or unblock) ``username`` locally: its data messages are refused unread."""
        with self._store.transaction():
            contact = self._contact(username)
            contact["user_blocked"] = blocked
            self._store.put_json(K_CONTACT, username, contact)

