"""Contacts and trust: pinned device identity keys, trust events, safety numbers, blocking."""

from __future__ import annotations

from tidings.client.errors import SafetyNumberMismatchError
from tidings.client.sdk.constants import K_CONTACT, K_KT, K_KT_CONTACT, K_SESSION, session_name
from tidings.client.sdk.models import ContactSafety, DeviceSafetyNumber, TrustEvent
from tidings.client.sdk.prekeys import PrekeysMixin
from tidings.client.sdk.records import ContactRecord, DeviceRecord
from tidings.client.transport import b64d, b64e
from tidings.crypto.kt_device_list import decode_device_list
from tidings.crypto.safety_number import SafetyNumber
from tidings.errors import ProtocolError


class TrustMixin(PrekeysMixin):
    """Contacts and trust, a part of `Client`."""

    # -- contacts and trust ------------------------------------------------------------------

    def _contact(self, username: str) -> ContactRecord:
        """The stored record of ``username`` (an empty one if unknown).

        Raises: StoreTamperedError (the stored record is damaged)."""
        data = self._store.get_json(K_CONTACT, username)
        return ContactRecord() if data is None else ContactRecord.from_json(data)

    def _put_contact(self, username: str, contact: ContactRecord) -> None:
        self._store.put_json(K_CONTACT, username, contact.to_json())

    def _note_event(self, contact: ContactRecord, kind: str, device_id: int) -> None:
        contact.note(kind, device_id, self._clock())
        if contact.verified:
            # A verified contact's keys changed: stop trusting until the user verifies again.
            contact.verified = False
            contact.sending_held = True

    def _observe_device(
        self, contact: ContactRecord, device_id: int, identity: bytes, registration_id: int
    ) -> bool:
        """Pin or compare one device's identity key; True if it changed (or is a new device of a
        known contact). Mutates ``contact``; the caller stores it."""
        known = contact.devices.get(device_id)
        changed = False
        if known is None:
            if contact.devices or contact.verified_keys:
                self._note_event(contact, "device_added", device_id)
                changed = True
        elif known.identity != b64e(identity):
            self._note_event(contact, "identity_changed", device_id)
            changed = True
        contact.devices[device_id] = DeviceRecord(b64e(identity), registration_id)
        return changed

    def _drop_device(self, username: str, contact: ContactRecord, device_id: int) -> None:
        if contact.devices.pop(device_id, None) is not None:
            contact.note("device_removed", device_id, self._clock())
        self._store.delete(K_SESSION, session_name(username, device_id))

    async def refresh_contact(self, username: str) -> ContactRecord:
        """Fetch ``username``'s device list (no prekeys claimed), pin or compare the identity
        keys, forget removed devices. Returns the stored contact record.

        Raises:
            UnknownAccountError: no such account.
        """
        remote = await self._transport.account_devices(username)
        contact = self._contact(username)
        seen = set()
        for device in remote:
            if username == self.account.username and device.device_id == self.account.device_id:
                continue
            seen.add(device.device_id)
            self._observe_device(contact, device.device_id, device.identity_key,
                                 device.registration_id)
        for device_id in list(contact.devices):
            if device_id not in seen:
                self._drop_device(username, contact, device_id)
        self._put_contact(username, contact)
        return contact

    async def safety_numbers(self, username: str) -> ContactSafety:
        """The safety number of every device of ``username`` (refreshed from the server).

        Raises:
            UnknownAccountError: no such account.
        """
        contact = await self.refresh_contact(username)
        return self._safety(username, contact)

    def _list_keys(self, kind: str, name: str) -> list[bytes]:
        """The identity keys of the signed device list stored under (``kind``, ``name``)
        (K_KT "own": this account's; K_KT_CONTACT username: the contact's as last verified)."""
        record = self._store.get_json(kind, name)
        if record is None or not record.get("list"):
            return []
        return [k.encode() for _, k in decode_device_list(b64d(record["list"])).devices]

    def _safety(self, username: str, contact: ContactRecord) -> ContactSafety:
        # The number covers each side's vouched device list (key transparency): this
        # account's known list, and the contact's list as last verified, else its pinned keys.
        own = self._identity.public.encode()
        local = sorted(set(self._list_keys(K_KT, "own")) | {own})
        remote = sorted(set(self._list_keys(K_KT_CONTACT, username))
                        or {b64d(d.identity) for d in contact.devices.values()})
        numbers = []
        for device_id, device in sorted(contact.devices.items()):
            number = SafetyNumber.compute(local, self.account.username, remote, username)
            pinned = contact.verified_keys.get(device_id)
            numbers.append(
                DeviceSafetyNumber(
                    device_id=device_id,
                    safety_number=number.display(),
                    verified=contact.verified and pinned == device.identity,
                )
            )
        return ContactSafety(
            username=username,
            devices=tuple(numbers),
            verified=contact.verified,
            blocked=contact.sending_held,
            events=tuple(contact.events),
        )

    async def verify(
        self, username: str, safety_number: str | None = None
    ) -> ContactSafety:
        """Mark ``username`` verified with its current device keys (after the user compared the
        safety numbers out of band). When ``safety_number`` is given it must equal one device's
        number (spaces ignored). Clears the change warnings and unblocks sending.

        Raises:
            SafetyNumberMismatchError: ``safety_number`` matches no device.
            UnknownAccountError: no such account.
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
        contact.verified = True
        contact.sending_held = False
        contact.verified_keys = {d: device.identity for d, device in contact.devices.items()}
        contact.events = []
        self._put_contact(username, contact)
        return self._safety(username, contact)

    def trust_events(self, username: str) -> tuple[TrustEvent, ...]:
        """The recorded device changes of ``username`` since it was last verified (local,
        no network): identity_changed, device_added, device_removed."""
        return tuple(self._contact(username).events)

    def set_blocked(self, username: str, blocked: bool = True) -> None:
        """Block (or unblock) ``username`` locally: its data messages are refused unread."""
        with self._store.transaction():
            contact = self._contact(username)
            contact.blocked_by_user = blocked
            self._put_contact(username, contact)

