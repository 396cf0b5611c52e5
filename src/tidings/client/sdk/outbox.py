"""Sending: 1:1 sessions, franking, device reconciliation, receipts."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import replace

from tidings.client.errors import (
    SendFailedError,
    ServerError,
    StoreTamperedError,
)
from tidings.client.sdk.constants import (
    GROUP_PEER_PREFIX,
    K_CHAIN,
    K_MESSAGE,
    K_SENT_INDEX,
    K_SESSION,
    MAX_SEND_ATTEMPTS,
    session_name,
)
from tidings.client.sdk.kt import KtMixin
from tidings.client.sdk.models import (
    Message,
    SentMessage,
    attachment_pointers,
    new_message,
)
from tidings.client.sdk.records import ContactRecord, MessageRecord
from tidings.client.transport import OutgoingEnvelope, SendResult, b64d, b64e
from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.franking import FrankedPlaintext, ReportItem, direct_conversation_id, frank
from tidings.crypto.session import Session, SessionRecord
from tidings.errors import (
    MismatchedDevicesError,
    ProtocolError,
    StaleDevicesError,
    TidingsError,
    UntrustedIdentityError,
)
from tidings.wire import limits
from tidings.wire import tidings_pb2 as pb


class OutboxMixin(KtMixin):
    """Sending, a part of `Client`."""

    # -- sending -----------------------------------------------------------------------------

    def _chain_head(self, conversation_id: bytes) -> bytes:
        return self._store.get(K_CHAIN, b64e(conversation_id)) or b""

    def _load_session(self, username: str, device_id: int) -> SessionRecord:
        data = self._store.get(K_SESSION, session_name(username, device_id))
        if data is None:
            return SessionRecord()
        try:
            return SessionRecord.from_bytes(data)
        except TidingsError:
            raise StoreTamperedError("a stored session is damaged") from None

    def _start_session(
        self,
        username: str,
        contact: ContactRecord,
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
            record.promote(Session.initiate(
                self._identity, bundle, local_registration_id=self.account.registration_id))

    async def _fetch_bundles(
        self, username: str, device_ids: list[int] | None
    ) -> dict[int, bytes]:
        """Bundles of ``username``'s devices (all when ``device_ids`` is None), without this
        device. A device the server does not know is simply absent from the result.

        Raises:
            UnknownAccountError: no such account (when fetching all devices).
        """
        bundles: dict[int, bytes] = {}
        if device_ids is None:
            bundles = await self._transport.get_bundles(username)
        else:
            for device_id in device_ids:
                try:
                    bundles.update(await self._transport.get_bundles(username, device_id))
                except ServerError as exc:
                    if exc.status != 404:
                        raise
        if username == self.account.username:
            bundles.pop(self.account.device_id, None)
        return bundles

    # -- device reconciliation: the one path of 1:1 and group sends ---------------------------

    async def _reconcile(
        self,
        username: str,
        fetch: list[int] | None,
        *,
        drop: Iterable[int] = (),
        force: Iterable[int] = (),
    ) -> None:
        """Bring the stored devices and sessions of ``username`` in line with the server:
        fetch bundles for the devices ``fetch`` (None: all of them) and start sessions from
        them (a new one even if current for the devices in ``force``); forget the devices in
        ``drop`` and those of ``fetch`` the server has no bundle for.

        The network call happens outside the store transaction; the changes are applied in one,
        to records read afresh, so another process using the same profile (``receive
        --follow``) never has its session updates overwritten.

        Raises:
            UnknownAccountError: no such account (``fetch`` None).
        """
        bundles = await self._fetch_bundles(username, fetch)
        # Key transparency before any PQXDH: every device must be in the published list.
        await self._kt_check_devices(username, {
            d: PrekeyBundle.decode(data).identity_key.encode() for d, data in bundles.items()
        })
        gone = set(drop) | {d for d in fetch or () if d not in bundles}
        forced = set(force)
        with self._store.transaction():
            contact = self._contact(username)
            for device_id in gone:
                self._drop_device(username, contact, device_id)
            for device_id, data in bundles.items():
                record = self._load_session(username, device_id)
                self._start_session(username, contact, device_id, data, record,
                                    force=device_id in forced)
                self._store.put(K_SESSION, session_name(username, device_id), record.to_bytes())
            self._put_contact(username, contact)

    async def _upload(self, username: str, outgoing: list[OutgoingEnvelope]) -> SendResult:
        """``PUT /v1/messages/{username}``; a refusal because the device list is not current
        (409 ``mismatched_devices``, 410 ``stale_devices``, docs/api.md) is reconciled
        (`_reconcile`: ``extra`` devices dropped, ``missing`` ones fetched — never this device —
        ``stale`` ones fetched with a new session) and raised for the caller to build the
        envelopes again.

        Raises:
            MismatchedDevicesError, StaleDevicesError: reconciled; send again.
            UnknownAccountError: no such account. ServerError, TransportError.
        """
        try:
            return await self._transport.send_messages(username, outgoing)
        except MismatchedDevicesError as exc:
            own = username == self.account.username
            wanted = [d for d in exc.missing if not (own and d == self.account.device_id)]
            await self._reconcile(username, wanted, drop=exc.extra)
            raise
        except StaleDevicesError as exc:
            await self._reconcile(username, list(exc.stale), force=exc.stale)
            raise

    async def _send_franked(
        self, username: str, franked: FrankedPlaintext
    ) -> tuple[SendResult, int]:
        """Encrypt ``franked`` for every device of ``username`` (own account: every other own
        device) and upload, reconciling the device list with the server (`_reconcile`,
        `_upload`). Returns the server's answer and the number of devices.

        Raises:
            UntrustedIdentityError: the contact is verified and its keys changed.
            UnknownAccountError: no such account.
            SendFailedError: the device list kept changing.
        """
        own = username == self.account.username
        fetched_all = False
        if self._kt_pending(username):
            # Trusted on first use: check the devices in use until the account's list appears.
            pinned = self._contact(username).devices
            await self._kt_check_devices(
                username, {d: b64d(r.identity) for d, r in pinned.items()}
            )
        for _round in range(2 * MAX_SEND_ATTEMPTS):
            outgoing: list[OutgoingEnvelope] = []
            with self._store.transaction():
                contact = self._contact(username)
                device_ids = sorted(contact.devices)
                records = {d: self._load_session(username, d) for d in device_ids}
                missing = [d for d in device_ids if records[d].current is None]
                first_contact = not device_ids and not own and not fetched_all
                held = contact.sending_held
                if not (missing or first_contact or held):
                    for device_id in device_ids:
                        record = records[device_id]
                        encrypted = record.encrypt(franked.plaintext, franked.commitment)
                        outgoing.append(
                            OutgoingEnvelope(
                                device_id=device_id,
                                registration_id=contact.devices[device_id].registration_id,
                                type=int(encrypted.type),
                                body=encrypted.body,
                                commitment=franked.commitment,
                            )
                        )
                        # Saved before uploading: a crash after the upload must never make
                        # this device encrypt twice with the same message key.
                        self._store.put(K_SESSION, session_name(username, device_id),
                                        record.to_bytes())
            if held:
                raise UntrustedIdentityError(
                    f"the safety number with {username} changed: compare it again "
                    f"(`tidings safety-number {username}`) and run `tidings verify {username}`"
                )
            if first_contact:
                await self._reconcile(username, None)
                fetched_all = True
                continue
            if missing:
                await self._reconcile(username, missing)
                continue
            try:
                return await self._upload(username, outgoing), len(outgoing)
            except (MismatchedDevicesError, StaleDevicesError):
                continue
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
            UnknownAccountError: no such account.
            UntrustedIdentityError: ``username`` is verified and its keys changed.
            SendFailedError, ServerError, TransportError: the message was not sent.
        """
        return await self._send_data(username, pb.DataMessage(body=text))

    async def _send_data(self, username: str, data: pb.DataMessage) -> SentMessage:
        """Send one DataMessage 1:1 (franked, chained), store it, sync it to own devices."""
        me = self.account.username
        now = self._clock()
        conversation = direct_conversation_id(me, username)
        content = self._content(conversation, now)
        content.data.CopyFrom(data)
        franked = frank(content)  # checks the content as receivers will (size limits)
        result, devices = await self._send_franked(username, franked)
        message = self._store_sent(username, content, franked, result.server_timestamp_ms)
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
        if not contact.devices:
            # Cheap check first: most accounts have a single device.
            devices = await self._transport.own_devices()
            if all(int(d.get("device_id", -1)) == self.account.device_id for d in devices):
                return 0
        _, count = await self._send_franked(me, franked)
        return count

    # -- the local history ------------------------------------------------------------------

    def _message_record(self, local_id: str) -> MessageRecord | None:
        """The stored message ``local_id``, if any. Raises: StoreTamperedError."""
        data = self._store.get_json(K_MESSAGE, local_id)
        return None if data is None else MessageRecord.from_json(data)

    def _message_records(self) -> list[MessageRecord]:
        """Every stored message, oldest stored first. Raises: StoreTamperedError."""
        return [MessageRecord.from_json(data) for _, data in self._store.items_json(K_MESSAGE)]

    def _put_message(self, record: MessageRecord) -> None:
        self._store.put_json(K_MESSAGE, record.message.id, record.to_json())

    def _store_sent(
        self, peer: str, content: pb.Content, franked: FrankedPlaintext,
        server_timestamp_ms: int, *, notice: str = "", group: str | None = None,
    ) -> Message:
        """Store the data message ``content`` this device sent (franked as ``franked``; local
        id ``"o:"`` + random) and make its commitment the head of this device's chain in its
        conversation, in one transaction."""
        data = content.data
        message = new_message(
            id="o:" + b64e(secrets.token_bytes(12)), peer=peer, sender=self.account.username,
            sender_device=self.account.device_id, data=data, sent_at_ms=content.sent_at_ms,
            server_timestamp_ms=server_timestamp_ms, incoming=False, notice=notice,
        )
        with self._store.transaction():
            self._store.put(K_CHAIN, b64e(content.conversation_id), franked.commitment)
            self._store_message(MessageRecord(message, attachment_pointers(data), group=group,
                                              commitment=b64e(franked.commitment)))
        return message

    def _store_received(
        self, envelope: pb.Envelope, content: pb.Content, item: ReportItem, *, peer: str,
        incoming: bool, identity_changed: bool = False, notice: str = "",
        group: str | None = None,
    ) -> Message:
        """Store the data message (or the sync copy of an own one, ``incoming`` false) that
        came in ``envelope`` (local id ``"i:"`` + the server's message id) with its franking
        material for reports; one from another account is queued for a delivery receipt
        (``auto_delivery_receipts``). Inside the receive transaction."""
        data = content.sent.message if content.WhichOneof("body") == "sent" else content.data
        message = new_message(
            id="i:" + b64e(envelope.message_id), peer=peer, sender=envelope.sender,
            sender_device=envelope.sender_device, data=data, sent_at_ms=content.sent_at_ms,
            server_timestamp_ms=envelope.server_timestamp_ms, incoming=incoming,
            identity_changed=identity_changed, notice=notice,
        )
        self._store_message(MessageRecord(
            message, attachment_pointers(data), report_item=b64e(item.encode()),
            conversation_id=b64e(content.conversation_id), group=group))
        if incoming and self.auto_delivery_receipts and envelope.sender != self.account.username:
            self._pending_receipts.setdefault(envelope.sender, []).append(content.sent_at_ms)
        return message

    def _store_message(self, record: MessageRecord) -> None:
        """Store a new message; an outgoing one is also indexed by (peer, sent_at_ms), which is
        how receipts name it."""
        message = record.message
        self._put_message(record)
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
            for record in self._message_records():
                message = record.message
                if (message.direction == "in" and message.peer == username
                        and message.status == "received"):
                    record.message = replace(message, status="read")
                    stamps.setdefault(message.sender, []).append(message.sent_at_ms)
                    self._put_message(record)
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
        for record in self._message_records():
            message = record.message
            if message.direction == "in" and message.status == "received":
                counts[message.peer] = counts.get(message.peer, 0) + 1
        return counts

