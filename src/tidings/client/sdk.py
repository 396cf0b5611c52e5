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
  is acknowledged again and ignored. Each message reaches the application exactly once across
  crashes: it is filed as undelivered in that same transaction and marked delivered only once
  the application has it; every `poll`/`listen` starts with what is still filed (see
  "delivery to the application" in `Client`). The franking material (`ReportItem`: content
  bytes, franking key, commitment, server tag, timestamp, message id, sender and devices) is
  kept beside every received message so it can be reported later.
- **Receipts.** Delivery receipts are sent automatically for received data messages
  (``auto_delivery_receipts``), read receipts by `mark_read`; both are encrypted `Content`.
- **Trust.** Contacts' device identity keys are pinned on first use. A changed identity key, a
  new device or a removed device is recorded as a `TrustEvent`; for a contact marked verified it
  also clears the verified flag and *blocks sending* (`UntrustedIdentityError`) until the user
  compares safety numbers again and calls `verify`.

- **Groups.** Sender keys (`GroupSenderKeys`): one SENDER_KEY ciphertext per group message,
  franked (the commitment is the sender-key associated data), PUT with the same body to every
  device of every member (own other devices included). Keys are distributed over the 1:1
  sessions before first use and to any device `devices_needing_key` names; membership changes
  travel in `GroupContext` (members + revision) and rotate every remaining device's key when
  someone leaves or is removed. See the "groups" section of `Client`.
- **Reports.** `build_report` / `report` send the reported message's `ReportItem` with context
  from the same conversation (``POST /v1/reports``); `account_status` and `appeal` are the
  user's side of enforcement.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from tidings.client.errors import (
    InvalidArgumentError,
    MismatchedDevicesError,
    NotAGroupMemberError,
    NotRegisteredError,
    NotReportableError,
    ProfileExistsError,
    SendFailedError,
    ServerError,
    StaleDevicesError,
    StoreError,
    StoreTamperedError,
    TransportError,
    UnknownContactError,
    UnknownGroupError,
)
from tidings.client.store import KdfParams, Store
from tidings.client.transport import (
    Credentials,
    OutgoingEnvelope,
    Progress,
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
    group_conversation_id,
    open_franked,
    verify_context_chain,
)
from tidings.crypto.identity import IdentityKey, IdentityKeyPair
from tidings.crypto.prekeys import DevicePrekeys, PrekeyBundle
from tidings.crypto.primitives import sha256
from tidings.crypto.safety_number import SafetyNumber
from tidings.crypto.sender_keys import GroupSenderKeys
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
K_GROUP = "group"  # b64(group id) -> group JSON (title, revision, members, active, key_devices)
K_SENDER_KEYS = "sender_keys"  # b64(conversation id) -> GroupSenderKeys.to_bytes()
K_SK_LINE = "sk_line"  # "<sender>\0<device>\0<b64 distribution id>" -> conversation id
K_UNDELIVERED = "undelivered"  # b64(message id) -> event JSON: stored, not yet shown to the app

SELF = "self"

APPLICATION_KINDS = frozenset({"message", "sync", "rejected"})
"""Receive events that carry something for the application to show: these are handed to it
exactly once (see "delivery to the application" in `Client`)."""

Clock = Callable[[], int]

GROUP_PEER_PREFIX = "group:"
"""``Message.peer`` of a group message is this prefix and the base64url group id. Account names
cannot contain ':' (server rule), so a group never collides with a contact."""

MAX_GROUP_TITLE_CHARS = 128

REPORT_CATEGORIES = (
    "child_sexual_exploitation", "violent_threat", "terrorism", "harassment", "self_harm",
    "spam", "fraud", "other",
)
"""The report categories of docs/api.md."""

MAX_REPORT_CONTEXT = 50
"""At most this many context messages on each side of a reported one."""

MAX_REPORT_NOTE_CHARS = 2000
MAX_REPORTED_ATTACHMENTS = 8


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
            return self.peer[len(GROUP_PEER_PREFIX):]
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
        progress: Progress | None = None,
    ) -> SentMessage:
        """Encrypt the file at ``path`` (fresh 32-byte key, streaming, docs/protocol.md
        Attachments), upload the ciphertext, and send a message carrying the pointer (id, key,
        digest, size) to ``username``. The server only ever sees ciphertext. ``progress`` sees
        (ciphertext bytes uploaded, total) while uploading.

        Raises:
            AttachmentTooLargeError: the file exceeds the protocol's attachment limit.
            StoreError: the file cannot be read.
            and everything `send_text` raises.
        """
        pointer = await self._upload_file(Path(path), content_type, progress)
        return await self._send_data(
            username, pb.DataMessage(body=caption, attachments=[pointer])
        )

    async def _upload_file(
        self, path: Path, content_type: str, progress: Progress | None
    ) -> pb.AttachmentPointer:
        """Encrypt and upload one file; the pointer to send (the key stays in it).

        Raises: AttachmentTooLargeError, StoreError (unreadable file), ServerError,
        TransportError.
        """
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
                ciphertext, info.ciphertext_size, progress=progress
            )
        return pb.AttachmentPointer(
            id=attachment_id,
            key=key,
            digest=info.digest,
            size=info.plaintext_size,
            chunk_size=info.chunk_size,
            content_type=content_type,
            file_name=path.name[:255],
        )

    async def download_attachment(
        self,
        message_id: str,
        destination: Path,
        *,
        index: int = 0,
        progress: Progress | None = None,
    ) -> Path:
        """Download, verify and decrypt attachment ``index`` of a stored message into
        ``destination`` (a file path, or a directory to put the original file name in).
        ``progress`` sees (ciphertext bytes received, total) while downloading.

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
        ciphertext = await self._transport.download_attachment(
            str(pointer["id"]), progress=progress
        )
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
        """Mark every unread message of the conversation ``username`` (an account, or a group's
        ``"group:<id>"`` peer) read and send read receipts (one per sender). Returns how many
        messages were marked. A receipt that cannot be sent is skipped (best effort)."""
        stamps: dict[str, list[int]] = {}
        with self._store.transaction():
            for name, record in self._store.items_json(K_MESSAGE):
                if (record.get("direction") == "in" and record.get("peer") == username
                        and record.get("status") == "received"):
                    record["status"] = "read"
                    stamps.setdefault(str(record["sender"]), []).append(
                        int(record["sent_at_ms"]))
                    self._store.put_json(K_MESSAGE, name, record)
        for sender, sent in stamps.items():
            try:
                await self.send_receipt(sender, sent, read=True)
            except TidingsError:
                if not username.startswith(GROUP_PEER_PREFIX):
                    raise
        return sum(len(v) for v in stamps.values())

    def unread_counts(self) -> dict[str, int]:
        """Unread received messages per conversation (account or ``"group:<id>"``)."""
        counts: dict[str, int] = {}
        for _, record in self._store.items_json(K_MESSAGE):
            if record.get("direction") == "in" and record.get("status") == "received":
                peer = str(record.get("peer"))
                counts[peer] = counts.get(peer, 0) + 1
        return counts

    def set_blocked(self, username: str, blocked: bool = True) -> None:
        """Block (or unblock) ``username`` locally: its data messages are refused unread."""
        with self._store.transaction():
            contact = self._contact(username)
            contact["user_blocked"] = blocked
            self._store.put_json(K_CONTACT, username, contact)

    # -- receiving ---------------------------------------------------------------------------

    def process_envelope(self, raw: bytes) -> ReceiveEvent:
        """Decrypt, check and store one envelope; the caller acknowledges it afterwards
        (``event.message_id``) whatever the outcome, except when this raises.

        An event of a kind in `APPLICATION_KINDS` is also filed as undelivered (`undelivered`)
        until the caller says the application has it (`mark_delivered`); `poll` and `listen`
        do both.

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

        try:
            # One write transaction (BEGIN IMMEDIATE) around read-decrypt-write: the session
            # and the prekeys are read afresh under the lock, so two processes using the same
            # profile never overwrite each other's ratchet or prekey state.
            with self._store.transaction():
                if self._store.contains(K_SEEN, mid):
                    return event("duplicate")
                if (envelope.recipient != self.account.username
                        or envelope.recipient_device != self.account.device_id):
                    result = self._reject(envelope, "misrouted")
                else:
                    result = self._decrypt_and_store(envelope)
                # Filed in the same transaction as the message: shown to the application
                # until `mark_delivered` says it has it, whatever crashes in between.
                self._hold_for_application(result)
                return result
        except StoreError:
            # Nothing was written: forget the in-memory prekey consumption too, so the
            # redelivered envelope (it is not acknowledged) decrypts again.
            self._reload_prekeys()
            raise

    def _decrypt_and_store(self, envelope: pb.Envelope) -> ReceiveEvent:
        """The body of `process_envelope`, inside its store transaction."""
        mid = b64e(envelope.message_id)
        sender, sender_device = envelope.sender, envelope.sender_device
        if envelope.type == pb.Envelope.SENDER_KEY:
            return self._receive_group_message(envelope)
        if envelope.type not in (pb.Envelope.PREKEY, pb.Envelope.RATCHET):
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
        if kind == "data" and self._contact(sender).get("user_blocked"):
            # The user blocked this account (e.g. `report --block`): drop its messages.
            return self._reject(envelope, "blocked")
        if kind == "sender_key_distribution":
            return self._receive_distribution(envelope, content, changed)
        if kind == "data":
            if content.data.HasField("group"):
                # Group messages are sender-key messages; a group message over a 1:1 session
                # would reach only this device and could never be a link of the group chain.
                return self._reject(envelope, "group_over_session")
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

    # -- delivery to the application -----------------------------------------------------------
    #
    # Exactly once to the application. Storing a message and acknowledging its envelope is not
    # enough: a process that dies after the store transaction but before the application had
    # the event (before the JSON line is printed, before `on_event` returns) leaves a message
    # that is stored and seen, so its redelivered envelope is dropped as a duplicate and the
    # application never sees it. So an event of a kind in `APPLICATION_KINDS` is filed under
    # K_UNDELIVERED in the transaction that stores it, and the row is deleted only once the
    # application has it (`mark_delivered`). `poll` and `listen` start by handing over what is
    # still filed, oldest first, before any new traffic. A crash anywhere in between shows the
    # event again on the next start: at least once from the store, at most once past the mark.
    #
    # Profiles written before this mark existed have no K_UNDELIVERED rows, so their stored
    # history counts as delivered (the version that received it showed it, or lost it for
    # good); no migration of the store file is needed.

    def _hold_for_application(self, event: ReceiveEvent) -> None:
        """File ``event`` as not yet delivered (inside the receive transaction)."""
        if event.kind not in APPLICATION_KINDS:
            return
        self._store.put_json(K_UNDELIVERED, event.message_id, {
            "kind": event.kind, "sender": event.sender, "sender_device": event.sender_device,
            "message": event.message.id if event.message is not None else None,
            "code": event.code, "identity_changed": event.identity_changed,
        })

    def undelivered(self) -> list[ReceiveEvent]:
        """The events stored but not yet marked delivered to the application, oldest first
        (messages with their current status).

        Raises:
            StoreTamperedError: a stored row is damaged.
        """
        out: list[ReceiveEvent] = []
        for mid, record in self._store.items_json(K_UNDELIVERED):
            message = None
            try:
                kind = str(record["kind"])
                if kind not in APPLICATION_KINDS:
                    raise ValueError(kind)
                if record.get("message") is not None:
                    stored = self._store.get_json(K_MESSAGE, str(record["message"]))
                    if stored is None:
                        raise ValueError("message missing")
                    message = _message_from_record(stored)
                code = record.get("code")
                out.append(ReceiveEvent(
                    cast(EventKind, kind), str(record["sender"]), int(record["sender_device"]),
                    mid, message=message, code=None if code is None else str(code),
                    identity_changed=bool(record.get("identity_changed"))))
            except (KeyError, ValueError, TypeError):
                raise StoreTamperedError("a stored undelivered event is damaged") from None
        return out

    def mark_delivered(self, event: ReceiveEvent | str) -> None:
        """Record that the application has ``event`` (or the event of this server message id):
        it is not handed over again. Marking an event that is not filed does nothing."""
        mid = event if isinstance(event, str) else event.message_id
        self._store.delete(K_UNDELIVERED, mid)

    async def _hand_over(
        self,
        event: ReceiveEvent,
        events: list[ReceiveEvent],
        on_event: Callable[[ReceiveEvent], Awaitable[None] | None] | None,
    ) -> None:
        """Give ``event`` to the application: into ``events`` and, when given, to
        ``on_event``; marked delivered once ``on_event`` returned (without ``on_event`` the
        caller marks ``events`` when it returns them). An exception from ``on_event``
        propagates and leaves the event undelivered."""
        events.append(event)
        if on_event is None:
            return
        result = on_event(event)
        if result is not None:
            await result
        if event.kind in APPLICATION_KINDS:
            self.mark_delivered(event)

    def _returned(self, events: list[ReceiveEvent], on_event: object) -> list[ReceiveEvent]:
        """Mark ``events`` delivered as they are returned (when no ``on_event`` took them)."""
        if on_event is None:
            for ev in events:
                if ev.kind in APPLICATION_KINDS:
                    self.mark_delivered(ev)
        return events

    async def poll(
        self, *, on_event: Callable[[ReceiveEvent], Awaitable[None] | None] | None = None
    ) -> list[ReceiveEvent]:
        """Fetch and process every queued envelope with ``GET /v1/messages``, acknowledging
        each one after it is stored. Returns the events, oldest first, starting with those
        stored earlier but never delivered (`undelivered`).

        Each message is delivered exactly once across calls and crashes: with ``on_event``,
        it is marked delivered after ``on_event`` returns for it; without, when this returns.
        If this raises, the events not yet marked come again on the next call.
        """
        events: list[ReceiveEvent] = []
        for ev in self.undelivered():
            await self._hand_over(ev, events, on_event)
        while True:
            raw_list, more = await self._transport.get_messages()
            progressed = False
            for raw in raw_list:
                try:
                    ev = self.process_envelope(raw)
                except DecodeError:
                    continue  # cannot be acknowledged by id; skip it
                await self._transport.ack_message(b64d(ev.message_id))
                await self._hand_over(ev, events, on_event)
                progressed = True
            if not more or not progressed:
                break
        await self._after_batch()
        return self._returned(events, on_event)

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

        Exactly once to the application: before any new traffic (and again before each
        reconnection), the events stored earlier but never delivered (`undelivered`) are handed
        over, oldest first. With ``on_event``, an event is marked delivered after ``on_event``
        returns for it (an exception from it propagates, and that event comes again on the
        next start); without, when this returns the list. Events in the list of a call that
        raises are not marked, so they come again.

        Raises:
            ServerError: the server refused the connection (e.g. unauthorized).
            TransportError: the connection failed (only without ``follow``).
        """
        events: list[ReceiveEvent] = []
        handed: set[str] = set()  # undelivered events already in ``events`` (no on_event)
        delay = reconnect_delay
        while True:
            for ev in self.undelivered():
                if ev.message_id not in handed:
                    await self._hand_over(ev, events, on_event)
                    if on_event is None:
                        handed.add(ev.message_id)
            try:
                async with self._transport.websocket() as socket:
                    delay = reconnect_delay
                    while True:
                        frame = await socket.receive()
                        if frame.kind == "queue_empty":
                            await self._after_batch()
                            if not follow:
                                return self._returned(events, on_event)
                            continue
                        try:
                            ev = self.process_envelope(frame.envelope)
                        except DecodeError:
                            continue
                        await socket.ack(b64d(ev.message_id))
                        await self._hand_over(ev, events, on_event)
                        if on_event is None:
                            handed.add(ev.message_id)
                        if follow:
                            await self._after_batch()
            except TransportError:
                if not follow:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # -- groups ------------------------------------------------------------------------------
    #
    # A group is a local record (id, title, revision, members, active) that every member device
    # keeps, plus one `GroupSenderKeys` per group conversation. Group messages are one
    # SENDER_KEY ciphertext per message, sent with the same body to every device of every
    # member account (own other devices included: they hold this device's sender key like any
    # member device). The franking commitment is the sender-key associated data.
    #
    # Membership changes are group data messages whose GroupContext lists the members; a
    # receiver applies one when the sender is a member in its current view and the change
    # supersedes its view (`_supersedes`: higher revision, ties broken by a digest), so members
    # that see the same changes converge whatever the order. Departed members' sender-key lines
    # are forgotten and every remaining device rotates its own key (`remove_member`), so the
    # departed cannot read later messages.
    #
    # Sender-key distributions arrive over 1:1 sessions with the group's conversation id; they
    # are filed by conversation id (the group may not be known yet: a new member gets the keys
    # just before the message that tells it about the group), and a (sender, device,
    # distribution id) index finds the conversation of a later SENDER_KEY message.

    def groups(self) -> list[Group]:
        """Every group this device knows (active or not), by title."""
        out = [_group_from_record(r) for _, r in self._store.items_json(K_GROUP)]
        return sorted(out, key=lambda g: (g.title.lower(), g.id))

    def group(self, ref: str) -> Group:
        """Find a group by id (base64url, or the ``"group:<id>"`` peer), unique id prefix of at
        least 4 characters, or unique title.

        Raises:
            UnknownGroupError: nothing (or more than one group) matches.
        """
        ref = ref.removeprefix(GROUP_PEER_PREFIX)
        groups = self.groups()
        matchers: list[Callable[[Group], bool]] = [
            lambda g: g.id == ref,
            lambda g: g.title == ref,
            lambda g: len(ref) >= 4 and g.id.startswith(ref),
        ]
        for matcher in matchers:
            found = [g for g in groups if matcher(g)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UnknownGroupError(f"{ref!r} matches several groups: use the group id")
        raise UnknownGroupError(f"no group matches {ref!r} (see `tidings group list`)")

    def _group_record(self, group_id: str) -> dict[str, Any]:
        record = self._store.get_json(K_GROUP, group_id)
        if record is None:
            raise UnknownGroupError("no such group")
        return record

    def _group_keys(self, conversation: bytes) -> GroupSenderKeys:
        """The sender keys of a group conversation, created (fresh own key) when absent."""
        data = self._store.get(K_SENDER_KEYS, b64e(conversation))
        if data is None:
            return GroupSenderKeys.create()
        try:
            return GroupSenderKeys.from_bytes(data)
        except TidingsError:
            raise StoreTamperedError("a stored group key state is damaged") from None

    def _put_group_keys(self, conversation: bytes, keys: GroupSenderKeys) -> None:
        self._store.put(K_SENDER_KEYS, b64e(conversation), keys.to_bytes())

    def _member_devices(self, members: list[str]) -> list[tuple[str, int]]:
        """The known devices of ``members`` (for this account: its other devices)."""
        out = []
        for account in members:
            for key in self._contact(account)["devices"]:
                out.append((account, int(key)))
        return sorted(out)

    async def _check_accounts(self, usernames: list[str]) -> list[str]:
        """Deduplicated, validated account names (each must exist on the server)."""
        out: list[str] = []
        for name in usernames:
            if name not in out:
                if name != self.account.username:
                    await self.refresh_contact(name)  # UnknownContactError for no such account
                out.append(name)
        return out

    async def create_group(self, title: str, members: list[str]) -> GroupSendResult:
        """Create a group (random 16-byte id, revision 1) with this account and ``members``,
        and announce it to every member device.

        Raises:
            InvalidArgumentError: empty or overlong title, too many members.
            UnknownContactError: a member account does not exist (nothing is created).
            SendFailedError: no member could be reached (the group exists locally).
        """
        title = title.strip()
        if not title or len(title) > MAX_GROUP_TITLE_CHARS:
            raise InvalidArgumentError(
                f"a group title has 1 to {MAX_GROUP_TITLE_CHARS} characters")
        me = self.account.username
        accounts = await self._check_accounts([m for m in members if m != me])
        member_list = sorted({me, *accounts})
        if len(member_list) > limits.MAX_GROUP_MEMBERS:
            raise InvalidArgumentError(f"a group has at most {limits.MAX_GROUP_MEMBERS} members")
        group_id = secrets.token_bytes(16)
        gid = b64e(group_id)
        record = {"id": gid, "title": title, "revision": 1, "members": member_list,
                  "active": True, "key_devices": []}
        self._store.put_json(K_GROUP, gid, record)
        notice = f"{me} created the group"
        return await self._send_group(gid, pb.DataMessage(), targets=member_list, change=True,
                                      notice=notice)

    async def add_group_members(self, ref: str, usernames: list[str]) -> GroupSendResult:
        """Add accounts to a group (next revision) and announce it to every member, the new
        ones included. New members receive this device's current sender key and cannot read
        anything sent before.

        Raises:
            UnknownGroupError, NotAGroupMemberError (this account left / was removed),
            UnknownContactError, InvalidArgumentError (nobody new), SendFailedError.
        """
        group = self._active_group(ref)
        new = [u for u in await self._check_accounts(usernames) if u not in group.members]
        if not new:
            raise InvalidArgumentError("everyone named is already a member")
        members = sorted({*group.members, *new})
        with self._store.transaction():
            record = self._group_record(group.id)
            record.update(revision=int(record["revision"]) + 1, members=members)
            self._store.put_json(K_GROUP, group.id, record)
        notice = f"{self.account.username} added {', '.join(new)}"
        return await self._send_group(group.id, pb.DataMessage(), targets=members, change=True,
                                      notice=notice)

    async def remove_group_members(self, ref: str, usernames: list[str]) -> GroupSendResult:
        """Remove accounts from a group (next revision). The removal notice reaches the removed
        members too (so their view shows it); then this device forgets their sender keys and
        rotates its own, so they cannot read later messages; every other member does the same
        on receiving the notice.

        Raises:
            UnknownGroupError, NotAGroupMemberError (this account is not a member, or a named
            account is not), InvalidArgumentError (removing oneself: use `leave_group`),
            SendFailedError.
        """
        group = self._active_group(ref)
        me = self.account.username
        if me in usernames:
            raise InvalidArgumentError("to remove yourself, leave the group")
        for name in usernames:
            if name not in group.members:
                raise NotAGroupMemberError(f"{name} is not a member of {group.title}")
        remaining = sorted(set(group.members) - set(usernames))
        with self._store.transaction():
            record = self._group_record(group.id)
            record.update(revision=int(record["revision"]) + 1, members=remaining)
            self._store.put_json(K_GROUP, group.id, record)
        notice = f"{me} removed {', '.join(sorted(set(usernames)))}"
        result = await self._send_group(group.id, pb.DataMessage(), targets=list(group.members),
                                        change=True, notice=notice)
        conversation = group_conversation_id(b64d(group.id))
        with self._store.transaction():
            keys = self._group_keys(conversation)
            for name in sorted(set(usernames)):
                keys.remove_member(name)
            self._put_group_keys(conversation, keys)
            record = self._group_record(group.id)
            record["key_devices"] = []
            self._store.put_json(K_GROUP, group.id, record)
        return result

    async def leave_group(self, ref: str) -> GroupSendResult:
        """Leave a group: announce the member list without this account (next revision) to
        every member (own other devices too, which leave with it), then forget the group's keys.
        The history stays readable locally.

        Raises:
            UnknownGroupError, NotAGroupMemberError, SendFailedError.
        """
        group = self._active_group(ref)
        me = self.account.username
        remaining = sorted(set(group.members) - {me})
        with self._store.transaction():
            record = self._group_record(group.id)
            record.update(revision=int(record["revision"]) + 1, members=remaining)
            self._store.put_json(K_GROUP, group.id, record)
        result = await self._send_group(group.id, pb.DataMessage(), targets=list(group.members),
                                        change=True, notice=f"{me} left")
        with self._store.transaction():
            record = self._group_record(group.id)
            record.update(active=False, key_devices=[])
            self._store.put_json(K_GROUP, group.id, record)
            self._store.delete(K_SENDER_KEYS, b64e(group_conversation_id(b64d(group.id))))
        return replace(result, group=_group_from_record(record))

    def _active_group(self, ref: str) -> Group:
        group = self.group(ref)
        if not group.active or self.account.username not in group.members:
            raise NotAGroupMemberError(f"you are not a member of {group.title} any more")
        return group

    async def send_group_text(self, ref: str, text: str) -> GroupSendResult:
        """Send ``text`` to a group (one sender-key message, franked, to every member device).

        Raises:
            UnknownGroupError, NotAGroupMemberError, OversizedError, SendFailedError (no member
            reached; partial failures are listed in the result's ``failed``).
        """
        group = self._active_group(ref)
        return await self._send_group(group.id, pb.DataMessage(body=text),
                                      targets=list(group.members))

    async def send_group_file(
        self,
        ref: str,
        path: Path,
        *,
        caption: str = "",
        content_type: str = "application/octet-stream",
        progress: Progress | None = None,
    ) -> GroupSendResult:
        """Encrypt, upload and send a file to a group (see `send_file`).

        Raises: as `send_file` and `send_group_text`.
        """
        group = self._active_group(ref)
        pointer = await self._upload_file(Path(path), content_type, progress)
        return await self._send_group(
            group.id, pb.DataMessage(body=caption, attachments=[pointer]),
            targets=list(group.members),
        )

    async def _send_group(
        self,
        gid: str,
        data: pb.DataMessage,
        *,
        targets: list[str],
        change: bool = False,
        notice: str = "",
    ) -> GroupSendResult:
        """Encrypt ``data`` once with this device's sender key and deliver it to every device of
        ``targets`` (and this account's other devices). ``change``: carry the member list
        (a membership change). The message is stored and becomes this device's chain head when
        at least one account received it.

        Raises:
            SendFailedError: no account could be reached (nothing stored).
            OversizedError / DecodeError: ``data`` is not a valid message.
        """
        me = self.account.username
        group_id = b64d(gid)
        conversation = group_conversation_id(group_id)
        record = self._group_record(gid)
        failed: dict[str, str] = {}
        for account in sorted(set(targets) - {me}):
            if not self._contact(account)["devices"]:
                try:
                    await self.refresh_contact(account)
                except TidingsError as exc:
                    failed[account] = exc.code
        if not self._contact(me)["devices"]:
            # Cheap for single-device accounts, and finds own devices linked since.
            await self.refresh_contact(me)
        now = self._clock()
        data.group.CopyFrom(pb.GroupContext(group_id=group_id, revision=int(record["revision"]),
                                            title=str(record["title"])))
        if change:
            data.group.members.extend(record["members"])
        content = self._content(conversation, now)
        content.data.CopyFrom(data)
        franked = frank(content)
        with self._store.transaction():
            record = self._group_record(gid)
            keys = self._group_keys(conversation)
            current = set(self._member_devices(list(record["members"])))
            # Only devices of accounts still in the group: removed accounts are handled by the
            # caller after this message (the removal notice must still reach them).
            departed = [(str(a), int(d)) for a, d in record.get("key_devices", [])
                        if (a, d) not in current and a in record["members"]]
            if departed:
                # A member device was unlinked since it got this key: it must not read on.
                for account, device in departed:
                    keys.remove_member(account, device)
                record["key_devices"] = []
            snapshot = keys.distribution()
            body = keys.encrypt(franked.plaintext, franked.commitment)
            # Saved before any upload: a crash must never make this device reuse a message key.
            self._put_group_keys(conversation, keys)
            self._store.put_json(K_GROUP, gid, record)
        first: SendResult | None = None
        delivered: list[str] = []
        devices = 0
        for account in [*sorted(set(targets) - {me} - set(failed)), me]:
            try:
                result, count = await self._deliver_group(
                    account, gid, conversation, snapshot, body, franked.commitment, now
                )
            except TidingsError as exc:
                failed[account] = exc.code
                continue
            if result is not None:
                first = first or result
                devices += count
                if account != me:
                    delivered.append(account)
        if first is None and failed:
            raise SendFailedError(
                "could not deliver the group message to any member "
                f"({', '.join(sorted(set(failed.values())))})"
            )
        message = Message(
            id="o:" + b64e(secrets.token_bytes(12)),
            direction="out",
            peer=GROUP_PEER_PREFIX + gid,
            sender=me,
            sender_device=self.account.device_id,
            body=data.body,
            sent_at_ms=now,
            server_timestamp_ms=first.server_timestamp_ms if first else now,
            status="sent",
            reportable=False,
            attachments=_attachment_summaries(data),
            notice=notice,
        )
        with self._store.transaction():
            self._store.put(K_CHAIN, b64e(conversation), franked.commitment)
            self._store_message(message, extra={"commitment": b64e(franked.commitment),
                                                "attachments": _pointers(data), "group": gid})
            for account in delivered:
                # Receipts from members come 1:1 and name the sent_at_ms: index them all.
                self._store.put(K_SENT_INDEX, f"{account}\0{now}", message.id.encode())
            group = _group_from_record(self._group_record(gid))
        return GroupSendResult(group=group, message=message, delivered=tuple(delivered),
                               failed=failed, devices=devices)

    async def _deliver_group(
        self,
        account: str,
        gid: str,
        conversation: bytes,
        snapshot: pb.SenderKeyDistribution,
        body: bytes,
        commitment: bytes,
        now: int,
    ) -> tuple[SendResult | None, int]:
        """PUT the SENDER_KEY ``body`` to every device of ``account`` (own account: the other
        devices; (None, 0) when there are none), first sending ``snapshot`` (this device's key
        as it was before ``body`` was encrypted) over the 1:1 sessions to the devices that lack
        it. A changed device list is reconciled and the key re-sent.

        Raises:
            SendFailedError: the device list kept changing. UntrustedIdentityError,
            UnknownContactError, ServerError, TransportError: from the 1:1 distribution or the
            upload.
        """
        me = self.account.username
        force = False
        for _attempt in range(MAX_SEND_ATTEMPTS):
            device_ids = sorted(int(k) for k in self._contact(account)["devices"])
            if account == me and not device_ids:
                return None, 0
            need = self._group_keys(conversation).devices_needing_key(
                [(account, d) for d in device_ids])
            if need or force or not device_ids:
                distribution = self._content(conversation, now)
                distribution.sender_key_distribution.CopyFrom(snapshot)
                # The 1:1 send reconciles the device list with the server (new sessions,
                # dropped devices), so afterwards the contact lists exactly the devices that
                # hold the key.
                await self._send_franked(account, frank(distribution))
                device_ids = sorted(int(k) for k in self._contact(account)["devices"])
                holders = [(account, d) for d in device_ids]
                with self._store.transaction():
                    keys = self._group_keys(conversation)
                    if keys.own.chain_id == snapshot.chain_id:
                        keys.mark_key_sent(holders)
                        self._put_group_keys(conversation, keys)
                        record = self._group_record(gid)
                        known = {(str(a), int(d)) for a, d in record.get("key_devices", [])}
                        record["key_devices"] = sorted(known | set(holders))
                        self._store.put_json(K_GROUP, gid, record)
                force = False
            contact = self._contact(account)
            outgoing = [
                OutgoingEnvelope(
                    device_id=d,
                    registration_id=int(contact["devices"][str(d)]["registration_id"]),
                    type=int(pb.Envelope.SENDER_KEY),
                    body=body,
                    commitment=commitment,
                )
                for d in device_ids
            ]
            try:
                return await self._transport.send_messages(account, outgoing), len(outgoing)
            except (MismatchedDevicesError, StaleDevicesError) as exc:
                gone = exc.extra if isinstance(exc, MismatchedDevicesError) else exc.stale
                with self._store.transaction():
                    contact = self._contact(account)
                    for device_id in gone:
                        # A stale device re-registered: its session is useless; the 1:1 send
                        # of the key starts a new one from a fresh bundle.
                        self._drop_device(account, contact, device_id)
                    self._store.put_json(K_CONTACT, account, contact)
                force = True
            except ServerError as exc:
                if exc.status == 404:
                    raise UnknownContactError(f"there is no account named {account!r}") from None
                raise
        raise SendFailedError(
            f"could not deliver to {account}: the device list kept changing; try again")

    def _receive_distribution(
        self, envelope: pb.Envelope, content: pb.Content, changed: bool
    ) -> ReceiveEvent:
        """File a sender-key distribution that came over the 1:1 session with its sender,
        under the group conversation it names (inside the receive transaction)."""
        sender, sender_device = envelope.sender, envelope.sender_device
        conversation = content.conversation_id
        keys = self._group_keys(conversation)
        try:
            keys.add_distribution(sender, sender_device, content.sender_key_distribution)
        except (DecodeError, ValueError):
            return self._reject(envelope, "malformed")
        self._put_group_keys(conversation, keys)
        self._store.put(
            K_SK_LINE,
            _line_name(sender, sender_device, content.sender_key_distribution.distribution_id),
            conversation,
        )
        return ReceiveEvent("key", sender, sender_device, b64e(envelope.message_id),
                            identity_changed=changed)

    def _receive_group_message(self, envelope: pb.Envelope) -> ReceiveEvent:
        """Decrypt a SENDER_KEY envelope with the sender device's key, open its franking, apply
        its group context, store it (inside the receive transaction)."""
        mid = b64e(envelope.message_id)
        sender, sender_device = envelope.sender, envelope.sender_device
        if sender != self.account.username and self._contact(sender).get("user_blocked"):
            return self._reject(envelope, "blocked")
        try:
            message = codec.decode(pb.SenderKeyMessage, envelope.body)
        except DecodeError as exc:
            return self._reject(envelope, exc.code)
        conversation = self._store.get(
            K_SK_LINE, _line_name(sender, sender_device, message.distribution_id))
        if conversation is None:
            return self._reject(envelope, "unknown_sender_key")
        keys = self._group_keys(conversation)
        try:
            plaintext = keys.decrypt(sender, sender_device, message, envelope.commitment)
        except DuplicateMessageError:
            self._store.add(K_SEEN, mid, b"")
            return ReceiveEvent("duplicate", sender, sender_device, mid)
        except (CryptoError, ProtocolError, DecodeError) as exc:
            return self._reject(envelope, exc.code)
        # The chain advanced: keep it whatever follows (its message key is spent).
        self._put_group_keys(conversation, keys)
        try:
            opened = open_franked(plaintext, envelope.commitment)
            item = ReportItem.from_envelope(envelope, opened)
        except (CryptoError, DecodeError) as exc:
            return self._reject(envelope, exc.code)
        content = opened.content
        if (content.conversation_id != conversation or content.WhichOneof("body") != "data"
                or not content.data.HasField("group")
                or group_conversation_id(content.data.group.group_id) != conversation):
            # A sender-key message must be a group data message of the conversation the
            # sender's key was given for.
            return self._reject(envelope, "wrong_conversation")
        self._store.add(K_SEEN, mid, b"")
        return self._handle_group_data(envelope, content, item, conversation)

    def _handle_group_data(
        self, envelope: pb.Envelope, content: pb.Content, item: ReportItem, conversation: bytes
    ) -> ReceiveEvent:
        me = self.account.username
        sender, sender_device = envelope.sender, envelope.sender_device
        mid = b64e(envelope.message_id)
        context = content.data.group
        gid = b64e(context.group_id)
        record = self._store.get_json(K_GROUP, gid)
        notice = ""
        if context.members:
            new_members = sorted(set(context.members))
            if record is None:
                if me not in new_members or sender not in new_members:
                    return self._reject(envelope, "not_a_member")
                record = {"id": gid, "title": context.title[:MAX_GROUP_TITLE_CHARS],
                          "revision": context.revision, "members": new_members,
                          "active": True, "key_devices": []}
                notice = f"{sender} created the group" if context.revision <= 1 else \
                    f"{sender} added you"
            else:
                if sender not in record["members"]:
                    return self._reject(envelope, "not_a_member")
                if _supersedes(context.revision, new_members, context.title, record):
                    old = set(record["members"])
                    removed, added = old - set(new_members), set(new_members) - old
                    record.update(revision=context.revision, members=new_members,
                                  title=context.title[:MAX_GROUP_TITLE_CHARS])
                    notice = _change_notice(sender, added, removed)
                    if me not in new_members:
                        record.update(active=False, key_devices=[])
                        self._store.delete(K_SENDER_KEYS, b64e(conversation))
                    else:
                        record["active"] = True
                        if removed:
                            keys = self._group_keys(conversation)
                            for account in sorted(removed):
                                keys.remove_member(account)
                            self._put_group_keys(conversation, keys)
                            record["key_devices"] = []
            self._store.put_json(K_GROUP, gid, record)
        elif record is None or not record.get("active") or sender not in record["members"]:
            return self._reject(envelope, "not_a_member")
        own = sender == me
        message = Message(
            id="i:" + mid,
            direction="out" if own else "in",
            peer=GROUP_PEER_PREFIX + gid,
            sender=sender,
            sender_device=sender_device,
            body=content.data.body,
            sent_at_ms=content.sent_at_ms,
            server_timestamp_ms=envelope.server_timestamp_ms,
            status="sent" if own else "received",
            reportable=not own,
            attachments=_attachment_summaries(content.data),
            notice=notice,
        )
        self._store_message(message, extra={
            "report_item": b64e(item.encode()), "conversation_id": b64e(conversation),
            "attachments": _pointers(content.data), "group": gid})
        if self.auto_delivery_receipts and not own:
            self._pending_receipts.setdefault(sender, []).append(content.sent_at_ms)
        return ReceiveEvent("sync" if own else "message", sender, sender_device, mid,
                            message=message)

    # -- reports, account status, appeals ------------------------------------------------------

    def build_report(
        self,
        message_id: str,
        category: str,
        *,
        context: int = 5,
        note: str | None = None,
        block: bool = False,
    ) -> dict[str, Any]:
        """The JSON body of ``POST /v1/reports`` for a message received by this device.

        ``items`` are the reported message's franking material (`ReportItem`) and up to
        ``context`` received messages of the same conversation before and after it, oldest
        first. The context is grown outwards one message at a time and only while the run
        stays a valid transcript excerpt (`verify_context_chain`), so a gap in the local
        history (a refused message, a member who was away) shortens the context instead of
        making the server refuse the report. The reported message's attachments are reported
        by revealing their keys.

        Raises:
            InvalidArgumentError: unknown category, context out of range, overlong note.
            NotReportableError: no such message, or it was not received by this device.
        """
        if category not in REPORT_CATEGORIES:
            raise InvalidArgumentError(
                f"unknown category {category!r}; one of: {', '.join(REPORT_CATEGORIES)}")
        if not 0 <= context <= MAX_REPORT_CONTEXT:
            raise InvalidArgumentError(f"context is 0 to {MAX_REPORT_CONTEXT} messages")
        if note is not None and len(note) > MAX_REPORT_NOTE_CHARS:
            raise InvalidArgumentError(f"the note is longer than {MAX_REPORT_NOTE_CHARS} "
                                       "characters")
        record = self._store.get_json(K_MESSAGE, message_id)
        target = None if record is None else _reportable(record)
        if record is None or target is None or record.get("direction") != "in":
            raise NotReportableError(
                "only a message received by this device can be reported (see `messages --json`"
                " for ids)")
        candidates: list[tuple[int, str, ReportItem, pb.Content]] = []
        for name, other in self._store.items_json(K_MESSAGE):
            if other.get("peer") != record.get("peer"):
                continue
            parsed = _reportable(other)
            if parsed is not None:
                candidates.append((parsed[0].server_timestamp_ms, name, *parsed))
        candidates.sort(key=lambda c: c[0])  # stable: ties keep the order of arrival
        index = next(i for i, c in enumerate(candidates) if c[1] == message_id)
        lo = hi = index

        def valid(first: int, last: int) -> bool:
            try:
                verify_context_chain([c[2] for c in candidates[first:last + 1]])
            except TidingsError:
                return False
            return True

        while lo > 0 and index - lo < context and valid(lo - 1, hi):
            lo -= 1
        while hi < len(candidates) - 1 and hi - index < context and valid(lo, hi + 1):
            hi += 1
        window = candidates[lo:hi + 1]
        reported_index = index - lo
        pointers = target[1].data.attachments
        body: dict[str, Any] = {
            "category": category,
            "items": [b64e(c[2].encode()) for c in window],
            "reported_index": reported_index,
            "attachments": [
                {"item": reported_index, "pointer": j, "key": b64e(p.key)}
                for j, p in enumerate(pointers[:MAX_REPORTED_ATTACHMENTS])
            ],
            "block": bool(block),
        }
        if note:
            body["note"] = note
        return body

    async def report(
        self,
        message_id: str,
        category: str,
        *,
        context: int = 5,
        note: str | None = None,
        block: bool = False,
    ) -> dict[str, Any]:
        """Report a received message (`build_report`) with ``POST /v1/reports``. With
        ``block``, the sender is also blocked locally. Returns the server's answer
        (``report_id``, ``case_id``) plus ``items`` (how many messages were sent).

        Raises:
            InvalidArgumentError, NotReportableError: see `build_report`.
            ServerError: the server refused the report (its reason's code).
        """
        body = self.build_report(message_id, category, context=context, note=note, block=block)
        answer = await self._transport.post_report(body)
        if block:
            sender = ReportItem.decode(b64d(body["items"][body["reported_index"]])).sender
            self.set_blocked(sender, True)
        return {**answer, "items": len(body["items"])}

    async def account_status(self) -> dict[str, Any]:
        """This account's enforcement state (``GET /v1/account/status``): status, until,
        policy, reason, decision id, appeal state. Works for a suspended or banned account."""
        return await self._transport.account_status()

    async def appeal(self, decision_id: str, text: str) -> dict[str, Any]:
        """Appeal an enforcement decision (``POST /v1/appeals``); returns ``{"appeal_id"}``.

        Raises:
            InvalidArgumentError: empty text. ServerError: refused (unknown decision, already
            appealed...).
        """
        if not text.strip() or not decision_id.strip():
            raise InvalidArgumentError("an appeal needs the decision id and a text")
        return await self._transport.post_appeal(decision_id, text)

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
            notice=str(record.get("notice", "")),
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
        return {"id": self.id, "title": self.title, "revision": self.revision,
                "members": list(self.members), "active": self.active, "peer": self.peer}


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
        return {"group": self.group.to_dict(), "message": self.message.to_dict(),
                "delivered": list(self.delivered), "failed": dict(self.failed),
                "devices": self.devices}


def _group_from_record(record: dict[str, Any]) -> Group:
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


def _membership_digest(members: list[str], title: str) -> bytes:
    return sha256("\n".join([title, *sorted(members)]).encode("utf-8"))


def _supersedes(revision: int, members: list[str], title: str, record: dict[str, Any]) -> bool:
    """Whether a received membership change replaces the stored view: a higher revision wins;
    at the same revision (two members changed the group concurrently) the larger digest of
    (title, members) wins, so every member ends with the same view whatever the order."""
    current = int(record["revision"])
    if revision != current:
        return revision > current
    return _membership_digest(members, title) > _membership_digest(
        list(record["members"]), str(record["title"]))


def _change_notice(sender: str, added: set[str], removed: set[str]) -> str:
    if removed == {sender} and not added:
        return f"{sender} left"
    parts = []
    if added:
        parts.append(f"added {', '.join(sorted(added))}")
    if removed:
        parts.append(f"removed {', '.join(sorted(removed))}")
    return f"{sender} " + (" and ".join(parts) if parts else "updated the group")


def _line_name(sender: str, device: int, distribution_id: bytes) -> str:
    return f"{sender}\0{device}\0{b64e(distribution_id)}"


def _reportable(record: dict[str, Any]) -> tuple[ReportItem, pb.Content] | None:
    """The report item and content of a stored message if it can be a report item: received
    by this device, with franking material, a data message (a link of the transcript chain).
    """
    raw = record.get("report_item")
    if not isinstance(raw, str):
        return None
    try:
        item = ReportItem.decode(b64d(raw))
        content = codec.decode(pb.Content, item.content)
    except (TidingsError, TransportError):
        return None
    if content.WhichOneof("body") != "data":
        return None
    return item, content
