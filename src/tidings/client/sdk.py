"""The async client SDK: one device of one account, on top of the local store and the transport.

What a `Client` does (docs/api.md is the contract with the server, docs/protocol.md the crypto):

- **Register / link.** A device makes its own identity key, prekeys (`DevicePrekeys`), a random
  registration id and a 32-byte device secret, writes them sealed to the profile store *first*,
  then posts them (``POST /v1/accounts`` or ``POST /v1/devices/link`` with a one-time code from
  `create_link_code` on an existing device). If the server refuses, the new profile is removed,
  so the user can simply try again.
- **Send (1:1, multi-device).** One `Content` per message, franked once (fresh franking key,
  commitment, chained by ``previous_commitment`` per conversation and sender device), encrypted
  for every device of the recipient; a `SentTranscript` copy goes to the sender's own other
  devices. Session state is saved *before* the upload, so a crash never reuses a message key.
  409 ``mismatched_devices`` / 410 ``stale_devices`` are handled by fetching bundles for missing or
  re-registered devices and dropping extra ones, then retrying (`MAX_SEND_ATTEMPTS`).
- **Receive.** Over the WebSocket (`listen`) or by polling (`poll`). Each envelope is decrypted,
  its franking commitment opened (a message whose commitment does not open is *refused*), and the
  message, the session state, the consumed prekeys and the dedupe mark are written in one store
  transaction; only then is the envelope acknowledged. A redelivered envelope (same message id)
  is acknowledged again and ignored. The franking material (`ReportItem`: content bytes, franking
  key, commitment, server tag, timestamp, message id, sender and devices) is kept beside every
  received message so it can be reported later.
- **Receipts.** Delivery receipts are sent automatically for received data messages
  (``auto_delivery_receipts``), read receipts by `mark_read`; both are encrypted `Content`.
- **Trust.** Contacts' device identity keys are pinned on first use. A changed identity key, a
  new device or a removed device is recorded as a `TrustEvent`; for a contact marked verified it
  also clears the verified flag and *blocks sending* (`UntrustedIdentityError`) until the user
  compares safety numbers again and calls `verify`.

Identity keys are per device, so a safety number is per (own device, contact device) pair.

No method logs or puts plaintext, keys or secrets into an exception message.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tidings.client.errors import (
    MismatchedDevicesError,
    NotRegisteredError,
    ProfileExistsError,
    SendFailedError,
    ServerError,
    StaleDevicesError,
    StoreError,
    StoreTamperedError,
    TransportError,
    UnknownContactError,
)
from tidings.client.store import KdfParams, Store
from tidings.client.transport import (
    Credentials,
    OutgoingEnvelope,
    SendResult,
    Transport,
    b64d,
    b64e,
)
from tidings.crypto import attachment
from tidings.crypto.franking import (
    FrankedPlaintext,
    ReportItem,
    direct_conversation_id,
    frank,
    open_franked,
)
from tidings.crypto.identity import IdentityKey, IdentityKeyPair
from tidings.crypto.prekeys import DevicePrekeys, PrekeyBundle
from tidings.crypto.safety_number import SafetyNumber
from tidings.crypto.session import SessionRecord
from tidings.errors import (
    CryptoError,
    DecodeError,
    DuplicateMessageError,
    ProtocolError,
    TidingsError,
    UntrustedIdentityError,
)
from tidings.wire import codec, limits
from tidings.wire import tidings_pb2 as pb

# --- tunables -------------------------------------------------------------------------------

PREKEY_BATCH = 100
"""One-time prekeys (of each kind) generated at registration and per refill."""

PREKEY_LOW_WATERMARK = 20
"""Refill when the server holds fewer unused one-time prekeys of a kind than this."""

MAX_SEND_ATTEMPTS = 4
"""Attempts of one send while the server reports stale or mismatched device lists."""

MAX_TRUST_EVENTS = 50
"""Trust events kept per contact (oldest dropped first)."""

MAX_REGISTRATION_ID = 16380
"""Registration ids are drawn from 1..16380 (14 bits, as Signal)."""

# --- store kinds ----------------------------------------------------------------------------

K_ACCOUNT = "account"  # "self" -> account JSON (username, device id, server, secret, ...)
K_IDENTITY = "identity"  # "self" -> IdentityKeyPair.to_bytes()
K_PREKEYS = "prekeys"  # "self" -> DevicePrekeys.to_bytes()
K_SESSION = "session"  # "<device_id>:<username>" -> SessionRecord.to_bytes()
K_CONTACT = "contact"  # username -> contact JSON (devices, pinned keys, verified, events)
K_MESSAGE = "message"  # local id -> message JSON (history, franking material)
K_SENT_INDEX = "sent_index"  # "<peer>\0<sent_at_ms>" -> local id of the outgoing message
K_SEEN = "seen"  # b64(message id) -> b"" : envelopes already processed (dedupe)
K_CHAIN = "chain"  # b64(conversation id) -> head commitment of this device's chain
K_REJECTED = "rejected"  # b64(message id) -> why an envelope was refused (no content)

SELF = "self"

Clock = Callable[[], int]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _session_name(username: str, device_id: int) -> str:
    return f"{device_id}:{username}"


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
    copy), ``"o:" + random`` for one sent from this device.
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


EventKind = Literal["message", "sync", "receipt", "duplicate", "rejected", "ignored"]


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


class AttachmentTooLargeError(TidingsError):
    """The file is larger than an attachment may be."""

    code = "oversized"


class SafetyNumberMismatchError(TidingsError):
    """The safety number given does not match any device of the contact: do not verify."""

    code = "safety_number_mismatch"


# --- the client -----------------------------------------------------------------------------


class Client:
    """One registered device. Build with `register`, `link` or `open`; `aclose` when done.

    Every async method may raise `TransportError` (server unreachable), `ServerError` (a typed
    refusal), or `StoreError` subclasses (local store). Not safe for concurrent use by several
    tasks at once: run one operation at a time (the CLI does).
    """

    def __init__(
        self,
        store: Store,
        *,
        transport: Transport | None = None,
        clock: Clock = _now_ms,
        auto_delivery_receipts: bool = True,
    ) -> None:
        account = store.get_json(K_ACCOUNT, SELF)
        identity = store.get(K_IDENTITY, SELF)
        prekeys = store.get(K_PREKEYS, SELF)
        if account is None or identity is None or prekeys is None:
            raise NotRegisteredError("this profile has no registered device")
        self._store = store
        self.account = Account.from_json(account)
        try:
            self._identity = IdentityKeyPair.from_bytes(identity)
            self._prekeys = DevicePrekeys.from_bytes(prekeys)
        except TidingsError:
            raise StoreTamperedError("the stored device keys are damaged") from None
        base = transport or Transport(self.account.server_url)
        self._transport = base.with_credentials(self.account.credentials)
        self._owns_transport = transport is None
        self._clock = clock
        self.auto_delivery_receipts = auto_delivery_receipts
        self._pending_receipts: dict[str, list[int]] = {}
        self._prekeys_used = True  # check the server's prekey count on the first batch

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        profile: Path,
        passphrase: str,
        *,
        transport: Transport | None = None,
        clock: Clock = _now_ms,
        auto_delivery_receipts: bool = True,
    ) -> Client:
        """Unlock an existing profile.

        Raises:
            ProfileNotFoundError, WrongPassphraseError, StoreTamperedError, NotRegisteredError.
        """
        store = Store.open(profile, passphrase)
        try:
            return cls(
                store,
                transport=transport,
                clock=clock,
                auto_delivery_receipts=auto_delivery_receipts,
            )
        except BaseException:
            store.close()
            raise

    async def aclose(self) -> None:
        """Close the store and (if this client made it) the HTTP connection pool."""
        if self._owns_transport:
            await self._transport.aclose()
        self._store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @classmethod
    async def register(
        cls,
        profile: Path,
        passphrase: str,
        username: str,
        server_url: str,
        *,
        device_name: str = "primary",
        kdf: KdfParams | None = None,
        transport: Transport | None = None,
        clock: Clock = _now_ms,
        prekey_count: int = PREKEY_BATCH,
    ) -> Client:
        """Create a profile and a new account ``username`` on ``server_url``.

        Raises:
            ProfileExistsError: ``profile`` already holds a profile.
            ServerError: the server refused (``username_taken``, ``malformed``...); the new
                profile is removed then.
            TransportError: the server cannot be reached (profile removed too).
        """

        async def post(t: Transport, keys: dict[str, Any]) -> int:
            return await t.create_account(username, keys)

        return await cls._enroll(
            profile, passphrase, username, server_url, device_name, kdf, transport, clock,
            prekey_count, post,
        )

    @classmethod
    async def link(
        cls,
        profile: Path,
        passphrase: str,
        username: str,
        code: str,
        server_url: str,
        *,
        device_name: str = "linked",
        kdf: KdfParams | None = None,
        transport: Transport | None = None,
        clock: Clock = _now_ms,
        prekey_count: int = PREKEY_BATCH,
    ) -> Client:
        """Create a profile for a new device of the existing account ``username``, using a
        one-time ``code`` made by `create_link_code` on one of its devices.

        Raises: as `register` (a bad or used code is a `ServerError` from the server).
        """

        async def post(t: Transport, keys: dict[str, Any]) -> int:
            return await t.link_device(username, code, keys)

        return await cls._enroll(
            profile, passphrase, username, server_url, device_name, kdf, transport, clock,
            prekey_count, post,
        )

    @classmethod
    async def _enroll(
        cls,
        profile: Path,
        passphrase: str,
        username: str,
        server_url: str,
        device_name: str,
        kdf: KdfParams | None,
        transport: Transport | None,
        clock: Clock,
        prekey_count: int,
        post: Callable[[Transport, dict[str, Any]], Awaitable[int]],
    ) -> Client:
        profile = Path(profile)
        if Store.exists(profile):
            raise ProfileExistsError(f"{profile} already holds a Tidings profile")
        created_dir = not profile.exists()
        identity = IdentityKeyPair.generate()
        prekeys = DevicePrekeys.generate(
            identity, now_ms=clock(), one_time_count=prekey_count, kem_count=prekey_count
        )
        registration_id = 1 + secrets.randbelow(MAX_REGISTRATION_ID)
        secret = secrets.token_bytes(32)
        store = Store.create(profile, passphrase, kdf=kdf)
        own_transport = transport is None
        t = transport or Transport(server_url)
        try:
            # Keys are sealed on disk before they leave the device: a crash after the server
            # accepted them can never leave an account whose private keys are lost.
            with store.transaction():
                store.put(K_IDENTITY, SELF, identity.to_bytes())
                store.put(K_PREKEYS, SELF, prekeys.to_bytes())
            keys = {
                "name": device_name,
                "registration_id": registration_id,
                "identity_key": b64e(identity.public.encode()),
                "signed_prekey": b64e(codec.encode(prekeys.signed_prekey.to_wire())),
                "last_resort_kem_prekey": b64e(
                    codec.encode(prekeys.last_resort_kem_prekey.to_wire())
                ),
                "one_time_prekeys": [
                    b64e(codec.encode(k.to_wire())) for k in prekeys.one_time_prekeys
                ],
                "kem_prekeys": [b64e(codec.encode(k.to_wire())) for k in prekeys.kem_prekeys],
                "secret": b64e(secret),
            }
            device_id = await post(t, keys)
            account = Account(username, device_id, t.base_url, registration_id, secret, device_name)
            store.put_json(K_ACCOUNT, SELF, account.to_json())
        except BaseException:
            store.close()
            if own_transport:
                await t.aclose()
            # Nothing usable was created: remove the profile so the user can try again.
            (profile / "tidings.db").unlink(missing_ok=True)
            if created_dir:
                shutil.rmtree(profile, ignore_errors=True)
            raise
        client = cls(store, transport=t, clock=clock)
        client._owns_transport = own_transport
        return client

    async def create_link_code(self) -> tuple[str, int]:
        """A one-time code (and its expiry, ms) with which a new device joins this account."""
        return await self._transport.create_provisioning_code()

    async def devices(self) -> list[dict[str, Any]]:
        """This account's devices as the server lists them."""
        return await self._transport.own_devices()

    # -- prekeys -----------------------------------------------------------------------------

    async def refresh_prekeys(self) -> dict[str, int]:
        """Top up one-time prekeys on the server when it holds fewer than
        `PREKEY_LOW_WATERMARK` of a kind, and rotate the signed prekeys when due.

        New private keys are sealed in the store before their public halves are uploaded.
        Returns how many keys of each kind were uploaded.
        """
        one_time, kem = await self._transport.key_count()
        upload: dict[str, Any] = {}
        uploaded = {"one_time": 0, "kem": 0, "signed": 0}
        now = self._clock()
        with self._store.transaction():
            # Fresh state under the write lock (another process may have consumed keys).
            self._reload_prekeys()
            self._extend_prekeys(one_time, kem, now, upload, uploaded)
            if upload:
                self._store.put(K_PREKEYS, SELF, self._prekeys.to_bytes())
        if upload:
            await self._transport.put_keys(upload)
        return uploaded

    def _extend_prekeys(
        self, one_time: int, kem: int, now: int, upload: dict[str, Any], uploaded: dict[str, int]
    ) -> None:
        if one_time < PREKEY_LOW_WATERMARK:
            new = self._prekeys.generate_one_time_prekeys(PREKEY_BATCH)
            upload["one_time_prekeys"] = [b64e(codec.encode(k.to_wire())) for k in new]
            uploaded["one_time"] = len(new)
        if kem < PREKEY_LOW_WATERMARK:
            new_kem = self._prekeys.generate_kem_prekeys(self._identity, PREKEY_BATCH)
            upload["kem_prekeys"] = [b64e(codec.encode(k.to_wire())) for k in new_kem]
            uploaded["kem"] = len(new_kem)
        if self._prekeys.rotation_due(now):
            signed, last_resort = self._prekeys.rotate_signed_prekeys(self._identity, now_ms=now)
            upload["signed_prekey"] = b64e(codec.encode(signed.to_wire()))
            upload["last_resort_kem_prekey"] = b64e(codec.encode(last_resort.to_wire()))
            uploaded["signed"] = 1

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
        self._store.delete(K_SESSION, _session_name(username, device_id))

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

    async def verify(self, username: str, safety_number: str | None = None) -> ContactSafety:
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

    async def unverify(self, username: str) -> None:
        """Clear the verified flag (and any block) of ``username``."""
        contact = self._contact(username)
        contact.update(verified=False, blocked=False, verified_keys={})
        self._store.put_json(K_CONTACT, username, contact)

    # -- sending -----------------------------------------------------------------------------

    def _chain_head(self, conversation_id: bytes) -> bytes:
        return self._store.get(K_CHAIN, b64e(conversation_id)) or b""

    def _load_session(self, username: str, device_id: int) -> SessionRecord:
        data = self._store.get(K_SESSION, _session_name(username, device_id))
        if data is None:
            return SessionRecord()
        try:
            return SessionRecord.from_bytes(data)
        except TidingsError:
            raise StoreTamperedError("a stored session is damaged") from None

    def _start_session(
        self,
        username: str,
        contact: dict[str, Any],
        device_id: int,
        bundle_bytes: bytes,
        record: SessionRecord,
        *,
        force: bool = False,
    ) -> None:
        """Start a session with the device that published ``bundle_bytes`` (pinning or
        comparing its identity key in ``contact``). ``force``: even if the record already has a
        current session with that identity and registration (the server called it stale)."""
        bundle = PrekeyBundle.decode(bundle_bytes)  # verifies both prekey signatures
        if bundle.device_id != device_id:
            raise ProtocolError("the server returned a bundle for another device")
        self._observe_device(contact, device_id, bundle.identity_key.encode(),
                             bundle.registration_id)
        if force or record.needs_new_session(bundle):
            record.start(self._identity, bundle,
                         local_registration_id=self.account.registration_id)

    async def _fetch_bundles(self, username: str, device_ids: list[int] | None) -> dict[int, bytes]:
        """Bundles of ``username``'s devices (all when ``device_ids`` is None), without this
        device. A device the server does not know is simply absent from the result.

        Raises:
            UnknownContactError: no such account (when fetching all devices).
        """
        bundles: dict[int, bytes] = {}
        try:
            if device_ids is None:
                bundles = await self._transport.get_bundles(username)
            else:
                for device_id in device_ids:
                    try:
                        bundles.update(await self._transport.get_bundles(username, device_id))
                    except ServerError as exc:
                        if exc.status != 404:
                            raise
        except ServerError as exc:
            if exc.status == 404:
                raise UnknownContactError(f"there is no account named {username!r}") from None
            raise
        if username == self.account.username:
            bundles.pop(self.account.device_id, None)
        return bundles

    async def _send_franked(
        self, username: str, franked: FrankedPlaintext
    ) -> tuple[SendResult, int]:
        """Encrypt ``franked`` for every device of ``username`` (own account: every other own
        device) and upload, reconciling the device list with the server. Returns the server's
        answer and the number of devices.

        Network calls happen outside store transactions; every state change (new sessions from
        fetched bundles, dropped devices, advanced ratchets) is applied inside one, to records
        read afresh, so another process using the same profile (``receive --follow``) never
        has its session updates overwritten.

        Raises:
            UntrustedIdentityError: the contact is verified and its keys changed.
            UnknownContactError: no such account.
            SendFailedError: the device list kept changing.
        """
        own = username == self.account.username
        bundles: dict[int, bytes] = {}  # fetched, to start sessions from
        forced: set[int] = set()  # devices the server called stale
        drop: set[int] = set()  # devices the server says do not exist
        fetched_all = False
        for _round in range(2 * MAX_SEND_ATTEMPTS):
            outgoing: list[OutgoingEnvelope] = []
            with self._store.transaction():
                contact = self._contact(username)
                for device_id in drop:
                    self._drop_device(username, contact, device_id)
                records: dict[int, SessionRecord] = {}
                for device_id, data in bundles.items():
                    record = self._load_session(username, device_id)
                    self._start_session(username, contact, device_id, data, record,
                                        force=device_id in forced)
                    records[device_id] = record
                bundles, forced, drop = {}, set(), set()
                device_ids = sorted(int(k) for k in contact["devices"])
                for device_id in device_ids:
                    if device_id not in records:
                        records[device_id] = self._load_session(username, device_id)
                missing = [d for d in device_ids if records[d].current is None]
                first_contact = not device_ids and not own and not fetched_all
                blocked = bool(contact.get("blocked"))
                if not (missing or first_contact or blocked):
                    for device_id in device_ids:
                        encrypted = records[device_id].encrypt(franked.plaintext,
                                                               franked.commitment)
                        registration = contact["devices"][str(device_id)]["registration_id"]
                        outgoing.append(
                            OutgoingEnvelope(
                                device_id=device_id,
                                registration_id=int(registration),
                                type=int(encrypted.type),
                                body=encrypted.body,
                                commitment=franked.commitment,
                            )
                        )
                # Saved before uploading: a crash after the upload must never make this device
                # encrypt twice with the same message key.
                for device_id, record in records.items():
                    self._store.put(K_SESSION, _session_name(username, device_id),
                                    record.to_bytes())
                self._store.put_json(K_CONTACT, username, contact)
            if blocked:
                raise UntrustedIdentityError(
                    f"the safety number with {username} changed: compare it again "
                    f"(`tidings safety-number {username}`) and run `tidings verify {username}`"
                )
            if first_contact:
                bundles, fetched_all = await self._fetch_bundles(username, None), True
                continue
            if missing:
                bundles = await self._fetch_bundles(username, missing)
                # No bundle: the server no longer has the device.
                drop = {d for d in missing if d not in bundles}
                continue
            try:
                result = await self._transport.send_messages(username, outgoing)
            except MismatchedDevicesError as exc:
                drop = set(exc.extra)
                wanted = [d for d in exc.missing if not (own and d == self.account.device_id)]
                bundles = await self._fetch_bundles(username, wanted) if wanted else {}
                continue
            except StaleDevicesError as exc:
                bundles = await self._fetch_bundles(username, list(exc.stale))
                forced = set(exc.stale)
                drop = {d for d in exc.stale if d not in bundles}
                continue
            except ServerError as exc:
                if exc.status == 404:
                    raise UnknownContactError(f"there is no account named {username!r}") from None
                raise
            return result, len(outgoing)
        raise SendFailedError(
            f"could not deliver to {username}: the device list kept changing; try again"
        )

    def _content(self, conversation_id: bytes, sent_at_ms: int) -> pb.Content:
        return pb.Content(
            version=limits.PROTOCOL_VERSION,
            sent_at_ms=sent_at_ms,
            previous_commitment=self._chain_head(conversation_id),
            conversation_id=conversation_id,
        )

    async def send_text(self, username: str, text: str) -> SentMessage:
        """Send ``text`` to every device of ``username`` and a sync copy to this account's other
        devices. The message is stored in the local history with status "sent".

        Raises:
            OversizedError: the text is longer than the protocol allows.
            UnknownContactError: no such account.
            UntrustedIdentityError: ``username`` is verified and its keys changed.
            SendFailedError, ServerError, TransportError: the message was not sent.
        """
        return await self._send_data(username, pb.DataMessage(body=text))

    async def send_file(
        self,
        username: str,
        path: Path,
        *,
        caption: str = "",
        content_type: str = "application/octet-stream",
    ) -> SentMessage:
        """Encrypt the file at ``path`` (fresh 32-byte key, streaming, docs/protocol.md
        Attachments), upload the ciphertext, and send a message carrying the pointer (id, key,
        digest, size) to ``username``. The server only ever sees ciphertext.

        Raises:
            AttachmentTooLargeError: the file exceeds the protocol's attachment limit.
            StoreError: the file cannot be read.
            and everything `send_text` raises.
        """
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError:
            raise StoreError(f"cannot read {path}") from None
        if size > attachment.MAX_ATTACHMENT_BYTES:
            raise AttachmentTooLargeError(
                f"the file is larger than {attachment.MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB"
            )
        key = attachment.generate_key()
        with tempfile.TemporaryFile() as ciphertext:
            try:
                with path.open("rb") as source:
                    info = attachment.encrypt_file(key, source, ciphertext)
            except OSError:
                raise StoreError(f"cannot read {path}") from None
            ciphertext.seek(0)
            attachment_id = await self._transport.upload_attachment(
                ciphertext, info.ciphertext_size
            )
        pointer = pb.AttachmentPointer(
            id=attachment_id,
            key=key,
            digest=info.digest,
            size=info.plaintext_size,
            chunk_size=info.chunk_size,
            content_type=content_type,
            file_name=path.name[:255],
        )
        return await self._send_data(
            username, pb.DataMessage(body=caption, attachments=[pointer])
        )

    async def download_attachment(
        self, message_id: str, destination: Path, *, index: int = 0
    ) -> Path:
        """Download, verify and decrypt attachment ``index`` of a stored message into
        ``destination`` (a file path, or a directory to put the original file name in).

        Raises:
            ProtocolError: no such message or attachment.
            AttachmentError: the ciphertext does not match the digest or does not decrypt
                (nothing is left at ``destination`` then).
            ServerError: the attachment expired (404) or was refused.
        """
        record = self._store.get_json(K_MESSAGE, message_id)
        pointers = (record or {}).get("attachments", [])
        if not 0 <= index < len(pointers):
            raise ProtocolError("no such message or attachment")
        pointer = pointers[index]
        destination = Path(destination)
        if destination.is_dir():
            name = Path(str(pointer.get("file_name") or "attachment")).name or "attachment"
            destination = destination / name
        ciphertext = await self._transport.download_attachment(str(pointer["id"]))
        partial = destination.with_name(destination.name + ".part")
        try:
            with partial.open("wb") as out:
                out.write(
                    attachment.decrypt_bytes(
                        b64d(pointer["key"]),
                        ciphertext,
                        b64d(pointer["digest"]),
                        expected_size=int(pointer["size"]),
                    )
                )
            partial.replace(destination)
        except OSError:
            partial.unlink(missing_ok=True)
            raise StoreError(f"cannot write {destination}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return destination

    async def _send_data(self, username: str, data: pb.DataMessage) -> SentMessage:
        """Send one DataMessage 1:1 (franked, chained), store it, sync it to own devices."""
        me = self.account.username
        now = self._clock()
        conversation = direct_conversation_id(me, username)
        content = self._content(conversation, now)
        content.data.CopyFrom(data)
        franked = frank(content)  # checks the content as receivers will (size limits)
        result, devices = await self._send_franked(username, franked)
        local_id = "o:" + b64e(secrets.token_bytes(12))
        message = Message(
            id=local_id,
            direction="out",
            peer=username,
            sender=me,
            sender_device=self.account.device_id,
            body=data.body,
            sent_at_ms=now,
            server_timestamp_ms=result.server_timestamp_ms,
            status="sent",
            reportable=False,
            attachments=_attachment_summaries(data),
        )
        with self._store.transaction():
            # The data message is the new head of this device's chain in the conversation.
            self._store.put(K_CHAIN, b64e(conversation), franked.commitment)
            self._store_message(message, extra={"commitment": b64e(franked.commitment),
                                                "attachments": _pointers(data)})
        synced, sync_error = 0, None
        if username != me:
            sync = self._content(conversation, now)
            sync.sent.destination = username
            sync.sent.message.CopyFrom(data)
            try:
                synced = await self._sync_to_own_devices(frank(sync))
            except TidingsError as exc:
                # The message itself was delivered; only the copy to own devices failed.
                sync_error = exc.code
        return SentMessage(
            message=message,
            server_timestamp_ms=result.server_timestamp_ms,
            message_ids=tuple(b64e(i) for i in result.message_ids),
            devices=devices,
            synced_devices=synced,
            sync_error=sync_error,
        )

    async def _sync_to_own_devices(self, franked: FrankedPlaintext) -> int:
        me = self.account.username
        contact = self._contact(me)
        if not contact["devices"]:
            # Cheap check first: most accounts have a single device.
            devices = await self._transport.own_devices()
            if all(int(d.get("device_id", -1)) == self.account.device_id for d in devices):
                return 0
        _, count = await self._send_franked(me, franked)
        return count

    def _store_message(self, message: Message, extra: dict[str, Any] | None = None) -> None:
        record = message.to_dict()
        record.update(extra or {})
        self._store.put_json(K_MESSAGE, message.id, record)
        if message.direction == "out":
            self._store.put(
                K_SENT_INDEX, f"{message.peer}\0{message.sent_at_ms}", message.id.encode()
            )

    async def send_receipt(
        self, username: str, sent_at_ms: list[int], *, read: bool = False
    ) -> None:
        """Send a delivery (or read) receipt for ``username``'s messages with these
        ``sent_at_ms`` timestamps. Receipts are encrypted Content and do not advance the
        franking chain."""
        if not sent_at_ms or username == self.account.username:
            return
        content = self._content(direct_conversation_id(self.account.username, username),
                                self._clock())
        content.receipt.type = pb.ReceiptMessage.READ if read else pb.ReceiptMessage.DELIVERY
        content.receipt.timestamps.extend(sent_at_ms)
        await self._send_franked(username, frank(content))

    async def mark_read(self, username: str) -> int:
        """Mark every unread message from ``username`` read and send one read receipt.
        Returns how many messages were marked."""
        stamps: list[int] = []
        with self._store.transaction():
            for name, record in self._store.items_json(K_MESSAGE):
                if (record.get("direction") == "in" and record.get("peer") == username
                        and record.get("status") == "received"):
                    record["status"] = "read"
                    stamps.append(int(record["sent_at_ms"]))
                    self._store.put_json(K_MESSAGE, name, record)
        await self.send_receipt(username, stamps, read=True)
        return len(stamps)

    # -- receiving ---------------------------------------------------------------------------

    def process_envelope(self, raw: bytes) -> ReceiveEvent:
        """Decrypt, check and store one envelope; the caller acknowledges it afterwards
        (``event.message_id``) whatever the outcome, except when this raises.

        A refused envelope (undecryptable, commitment that does not open, misrouted, unknown
        type) is recorded without content as kind "rejected" with the error ``code``.

        Raises:
            DecodeError: ``raw`` is not an Envelope (it cannot be acknowledged by id).
            StoreError: the store could not be written (do not acknowledge: it comes again).
        """
        envelope = codec.decode(pb.Envelope, raw)
        mid = b64e(envelope.message_id)
        sender, sender_device = envelope.sender, envelope.sender_device

        def event(kind: EventKind, **kw: Any) -> ReceiveEvent:
            return ReceiveEvent(kind, sender, sender_device, mid, **kw)

        if (envelope.recipient != self.account.username
                or envelope.recipient_device != self.account.device_id):
            return self._reject(envelope, "misrouted")
        try:
            # One write transaction (BEGIN IMMEDIATE) around read-decrypt-write: the session
            # and the prekeys are read afresh under the lock, so two processes using the same
            # profile never overwrite each other's ratchet or prekey state.
            with self._store.transaction():
                if self._store.contains(K_SEEN, mid):
                    return event("duplicate")
                return self._decrypt_and_store(envelope)
        except StoreError:
            # Nothing was written: forget the in-memory prekey consumption too, so the
            # redelivered envelope (it is not acknowledged) decrypts again.
            self._reload_prekeys()
            raise

    def _decrypt_and_store(self, envelope: pb.Envelope) -> ReceiveEvent:
        """The body of `process_envelope`, inside its store transaction."""
        mid = b64e(envelope.message_id)
        sender, sender_device = envelope.sender, envelope.sender_device
        if envelope.type not in (pb.Envelope.PREKEY, pb.Envelope.RATCHET):
            # Group (sender-key) messages are not supported by this client yet.
            return self._reject(envelope, "unsupported_type")
        if envelope.type == pb.Envelope.PREKEY:
            self._reload_prekeys()
        record = self._load_session(sender, sender_device)
        try:
            decrypted = record.decrypt(
                envelope.type,
                envelope.body,
                envelope.commitment,
                identity=self._identity,
                prekeys=self._prekeys,
            )
        except DuplicateMessageError:
            self._store.add(K_SEEN, mid, b"")
            return ReceiveEvent("duplicate", sender, sender_device, mid)
        except (CryptoError, ProtocolError, DecodeError) as exc:
            # Failure-atomic in the crypto layer: nothing changed, nothing to save.
            return self._reject(envelope, exc.code)
        if decrypted.new_session:
            self._prekeys_used = True
        try:
            opened = open_franked(decrypted.plaintext, envelope.commitment)
            item = ReportItem.from_envelope(envelope, opened)
        except (CryptoError, DecodeError) as exc:
            # The sender bound a commitment that does not open (or sent garbage inside the
            # ratchet): refuse the message, but keep the advanced ratchet (its key is spent).
            self._save_receive_state(sender, sender_device, record, decrypted.new_session)
            return self._reject(envelope, exc.code)
        contact = self._contact(sender)
        changed = self._observe_device(
            contact,
            sender_device,
            decrypted.remote_identity.encode(),
            self._registration_of(record, decrypted.remote_identity),
        )
        changed = changed or decrypted.identity_changed
        self._store.put_json(K_CONTACT, sender, contact)
        self._save_receive_state(sender, sender_device, record, decrypted.new_session)
        self._store.add(K_SEEN, mid, b"")
        return self._handle_content(envelope, opened.content, item, changed)

    def _reload_prekeys(self) -> None:
        data = self._store.get(K_PREKEYS, SELF)
        if data is not None:
            self._prekeys = DevicePrekeys.from_bytes(data)

    @staticmethod
    def _registration_of(record: SessionRecord, remote: IdentityKey) -> int:
        # The session that decrypted carries the registration id the sender announced.
        for session in (record.current, *record.archived):
            if session is not None and session.remote_identity == remote:
                return session.remote_registration_id
        return 0

    def _save_receive_state(
        self, sender: str, sender_device: int, record: SessionRecord, new_session: bool
    ) -> None:
        self._store.put(K_SESSION, _session_name(sender, sender_device), record.to_bytes())
        if new_session:
            # The handshake consumed one-time prekeys.
            self._store.put(K_PREKEYS, SELF, self._prekeys.to_bytes())

    def _reject(self, envelope: pb.Envelope, code: str) -> ReceiveEvent:
        mid = b64e(envelope.message_id)
        with self._store.transaction():
            self._store.add(K_SEEN, mid, b"")
            self._store.put_json(
                K_REJECTED,
                mid,
                {"sender": envelope.sender, "sender_device": envelope.sender_device,
                 "server_timestamp_ms": envelope.server_timestamp_ms, "code": code},
            )
        return ReceiveEvent("rejected", envelope.sender, envelope.sender_device, mid, code=code)

    def _handle_content(
        self, envelope: pb.Envelope, content: pb.Content, item: ReportItem, changed: bool
    ) -> ReceiveEvent:
        sender, sender_device = envelope.sender, envelope.sender_device
        mid = b64e(envelope.message_id)
        me = self.account.username
        kind = content.WhichOneof("body")
        franking = {"report_item": b64e(item.encode()),
                    "conversation_id": b64e(content.conversation_id)}
        if kind == "data":
            if content.data.HasField("group"):
                return self._reject(envelope, "unsupported_group")
            expected = direct_conversation_id(me, sender)
            if content.conversation_id != expected:
                return self._reject(envelope, "wrong_conversation")
            message = Message(
                id="i:" + mid,
                direction="in",
                peer=sender,
                sender=sender,
                sender_device=sender_device,
                body=content.data.body,
                sent_at_ms=content.sent_at_ms,
                server_timestamp_ms=envelope.server_timestamp_ms,
                status="received",
                reportable=True,
                identity_changed=changed,
                attachments=_attachment_summaries(content.data),
            )
            self._store_message(message, extra={**franking,
                                                "attachments": _pointers(content.data)})
            if self.auto_delivery_receipts and sender != me:
                self._pending_receipts.setdefault(sender, []).append(content.sent_at_ms)
            return ReceiveEvent("message", sender, sender_device, mid, message=message,
                                identity_changed=changed)
        if kind == "sent":
            if sender != me:
                # Only our own devices may tell us what "we" sent.
                return self._reject(envelope, "forged_sync")
            destination = content.sent.destination
            message = Message(
                id="i:" + mid,
                direction="out",
                peer=destination,
                sender=me,
                sender_device=sender_device,
                body=content.sent.message.body,
                sent_at_ms=content.sent_at_ms,
                server_timestamp_ms=envelope.server_timestamp_ms,
                status="sent",
                reportable=False,
                attachments=_attachment_summaries(content.sent.message),
            )
            self._store_message(message, extra={**franking,
                                                "attachments": _pointers(content.sent.message)})
            return ReceiveEvent("sync", sender, sender_device, mid, message=message)
        if kind == "receipt":
            status = "read" if content.receipt.type == pb.ReceiptMessage.READ else "delivered"
            for stamp in content.receipt.timestamps:
                ref = self._store.get(K_SENT_INDEX, f"{sender}\0{stamp}")
                if ref is None:
                    continue
                record = self._store.get_json(K_MESSAGE, ref.decode())
                if record is None or record.get("status") == "read":
                    continue
                record["status"] = status
                self._store.put_json(K_MESSAGE, ref.decode(), record)
            return ReceiveEvent("receipt", sender, sender_device, mid, code=status,
                                identity_changed=changed)
        return ReceiveEvent("ignored", sender, sender_device, mid, code=kind or "empty",
                            identity_changed=changed)

    async def _after_batch(self) -> None:
        """Send the delivery receipts collected while receiving, then top up prekeys."""
        pending, self._pending_receipts = self._pending_receipts, {}
        for username, stamps in pending.items():
            try:
                await self.send_receipt(username, stamps)
            except TidingsError:
                # A receipt is best effort: the messages are stored and acknowledged already.
                continue
        if self._prekeys_used:
            self._prekeys_used = False
            await self.refresh_prekeys()

    async def poll(self) -> list[ReceiveEvent]:
        """Fetch and process every queued envelope with ``GET /v1/messages``, acknowledging
        each one after it is stored. Returns the events, oldest first."""
        events: list[ReceiveEvent] = []
        while True:
            raw_list, more = await self._transport.get_messages()
            progressed = False
            for raw in raw_list:
                try:
                    ev = self.process_envelope(raw)
                except DecodeError:
                    continue  # cannot be acknowledged by id; skip it
                await self._transport.ack_message(b64d(ev.message_id))
                events.append(ev)
                progressed = True
            if not more or not progressed:
                break
        await self._after_batch()
        return events

    async def listen(
        self,
        *,
        follow: bool = False,
        on_event: Callable[[ReceiveEvent], Awaitable[None] | None] | None = None,
        reconnect_delay: float = 1.0,
    ) -> list[ReceiveEvent]:
        """Receive over the WebSocket, acknowledging each envelope after it is stored.

        Without ``follow``, returns once the server says the backlog is sent
        (``queue_empty``). With ``follow``, runs until cancelled, reconnecting (with backoff up
        to 30 s) when the connection drops; ``on_event`` sees each event as it happens.

        Raises:
            ServerError: the server refused the connection (e.g. unauthorized).
            TransportError: the connection failed (only without ``follow``).
        """
        events: list[ReceiveEvent] = []
        delay = reconnect_delay
        while True:
            try:
                async with self._transport.websocket() as socket:
                    delay = reconnect_delay
                    while True:
                        frame = await socket.receive()
                        if frame.kind == "queue_empty":
                            await self._after_batch()
                            if not follow:
                                return events
                            continue
                        try:
                            ev = self.process_envelope(frame.envelope)
                        except DecodeError:
                            continue
                        await socket.ack(b64d(ev.message_id))
                        events.append(ev)
                        if on_event is not None:
                            result = on_event(ev)
                            if result is not None:
                                await result
                        if follow:
                            await self._after_batch()
            except TransportError:
                if not follow:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # -- history -----------------------------------------------------------------------------

    def messages(self, peer: str | None = None) -> list[Message]:
        """The local history (oldest stored first), optionally of one conversation."""
        out = []
        for _, record in self._store.items_json(K_MESSAGE):
            if peer is not None and record.get("peer") != peer:
                continue
            out.append(_message_from_record(record))
        return out

    def report_item(self, message_id: str) -> ReportItem | None:
        """The franking material kept beside a received message (None if not kept)."""
        record = self._store.get_json(K_MESSAGE, message_id)
        if record is None or "report_item" not in record:
            return None
        return ReportItem.decode(b64d(record["report_item"]))

    def rejected(self) -> list[dict[str, Any]]:
        """The envelopes this device refused (no content): sender, device, time, code."""
        return [
            dict(record, message_id=name) for name, record in self._store.items_json(K_REJECTED)
        ]

    @property
    def identity_key(self) -> IdentityKey:
        return self._identity.public


def _message_from_record(record: dict[str, Any]) -> Message:
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
                AttachmentSummary(str(a.get("file_name", "")), str(a.get("content_type", "")),
                                  int(a.get("size", 0)))
                for a in record.get("attachments", [])
            ),
        )
    except (KeyError, ValueError, TypeError):
        raise StoreTamperedError("a stored message is damaged") from None


def _attachment_summaries(data: pb.DataMessage) -> tuple[AttachmentSummary, ...]:
    return tuple(AttachmentSummary(a.file_name, a.content_type, a.size) for a in data.attachments)


def _pointers(data: pb.DataMessage) -> list[dict[str, Any]]:
    """Attachment pointers as stored (sealed) beside the message, keys included."""
    return [
        {"id": a.id, "key": b64e(a.key), "digest": b64e(a.digest), "size": a.size,
         "chunk_size": a.chunk_size, "content_type": a.content_type, "file_name": a.file_name}
        for a in data.attachments
    ]
