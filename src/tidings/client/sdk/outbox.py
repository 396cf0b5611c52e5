"""Sending: 1:1 sessions, franking, device reconciliation, receipts."""

from __future__ import annotations

import secrets
from typing import Any

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
from tidings.client.sdk.core import unknown_account_on_404
from tidings.client.sdk.models import (
    Message,
    SentMessage,
    attachment_pointers,
    new_message,
)
from tidings.client.sdk.records import ContactRecord
from tidings.client.sdk.trust import TrustMixin
from tidings.client.transport import OutgoingEnvelope, SendResult, b64e
from tidings.crypto.franking import FrankedPlaintext, direct_conversation_id, frank
from tidings.crypto.prekeys import PrekeyBundle
from tidings.crypto.session import SessionRecord
from tidings.errors import (
    MismatchedDevicesError,
    ProtocolError,
    StaleDevicesError,
    TidingsError,
    UntrustedIdentityError,
)
from tidings.wire import limits
from tidings.wire import tidings_pb2 as pb


class OutboxMixin(TrustMixin):
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
        self._observe_device(
            contact, device_id, bundle.identity_key.encode(), bundle.registration_id
        )
        if force or record.needs_new_session(bundle):
            record.start(self._identity, bundle, local_registration_id=self.account.registration_id)

    async def _fetch_bundles(self, username: str, device_ids: list[int] | None) -> dict[int, bytes]:
        """Bundles of ``username``'s devices (all when ``device_ids`` is None), without this
        device. A device the server does not know is simply absent from the result.

        Raises:
            UnknownAccountError: no such account (when fetching all devices).
        """
        bundles: dict[int, bytes] = {}
        with unknown_account_on_404(username):
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
            UnknownAccountError: no such account.
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
                    self._start_session(
                        username, contact, device_id, data, record, force=device_id in forced
                    )
                    records[device_id] = record
                bundles, forced, drop = {}, set(), set()
                device_ids = sorted(contact.devices)
                for device_id in device_ids:
                    if device_id not in records:
                        records[device_id] = self._load_session(username, device_id)
                missing = [d for d in device_ids if records[d].current is None]
                first_contact = not device_ids and not own and not fetched_all
                held = contact.sending_held
                if not (missing or first_contact or held):
                    for device_id in device_ids:
                        encrypted = records[device_id].encrypt(
                            franked.plaintext, franked.commitment
                        )
                        registration = contact.devices[device_id].registration_id
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
                    self._store.put(K_SESSION, session_name(username, device_id), record.to_bytes())
                self._put_contact(username, contact)
            if held:
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
                with unknown_account_on_404(username):
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
        local_id = "o:" + b64e(secrets.token_bytes(12))
        message = new_message(
            id=local_id,
            peer=username,
            sender=me,
            sender_device=self.account.device_id,
            data=data,
            sent_at_ms=now,
            server_timestamp_ms=result.server_timestamp_ms,
            incoming=False,
        )
        with self._store.transaction():
            # The data message is the new head of this device's chain in the conversation.
            self._store.put(K_CHAIN, b64e(conversation), franked.commitment)
            self._store_message(
                message,
                extra={
                    "commitment": b64e(franked.commitment),
                    "attachments": attachment_pointers(data),
                },
            )
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
        content = self._content(
            direct_conversation_id(self.account.username, username), self._clock()
        )
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
                if (
                    record.get("direction") == "in"
                    and record.get("peer") == username
                    and record.get("status") == "received"
                ):
                    record["status"] = "read"
                    stamps.setdefault(str(record["sender"]), []).append(int(record["sent_at_ms"]))
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
