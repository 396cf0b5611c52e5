"""Receiving: envelope processing and exactly-once delivery to the application."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, cast

from tidings.client.errors import StoreError, StoreTamperedError, TransportError
from tidings.client.sdk.constants import (
    APPLICATION_KINDS,
    K_PREKEYS,
    K_SEEN,
    K_SENT_INDEX,
    K_SESSION,
    K_UNDELIVERED,
    SELF,
    session_name,
)
from tidings.client.sdk.groups import GroupsMixin
from tidings.client.sdk.models import (
    EventKind,
    ReceiveEvent,
)
from tidings.client.transport import b64d, b64e
from tidings.crypto.franking import ReportItem, direct_conversation_id, open_franked
from tidings.crypto.identity import IdentityKey
from tidings.crypto.session import SessionRecord
from tidings.errors import (
    CryptoError,
    DecodeError,
    DuplicateMessageError,
    ProtocolError,
    TidingsError,
)
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb


class InboxMixin(GroupsMixin):
    """Receiving, a part of `Client`."""

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
        if decrypted.new_session:
            # Key transparency: checked against the sender's published list after the batch.
            self._kt_note_sender(sender, sender_device, decrypted.remote_identity.encode())
        self._put_contact(sender, contact)
        self._save_receive_state(sender, sender_device, record, decrypted.new_session)
        self._store.add(K_SEEN, mid, b"")
        return self._handle_content(envelope, opened.content, item, changed)

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
        self._store.put(K_SESSION, session_name(sender, sender_device), record.to_bytes())
        if new_session:
            # The handshake consumed one-time prekeys.
            self._store.put(K_PREKEYS, SELF, self._prekeys.to_bytes())

    def _handle_content(
        self, envelope: pb.Envelope, content: pb.Content, item: ReportItem, changed: bool
    ) -> ReceiveEvent:
        sender, sender_device = envelope.sender, envelope.sender_device
        mid = b64e(envelope.message_id)
        me = self.account.username
        kind = content.WhichOneof("body")
        if kind == "data" and self._contact(sender).blocked_by_user:
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
            message = self._store_received(envelope, content, item,
                                           peer=sender, incoming=True,
                                           identity_changed=changed)
            return ReceiveEvent("message", sender, sender_device, mid, message=message,
                                identity_changed=changed)
        if kind == "sent":
            if sender != me:
                # Only our own devices may tell us what "we" sent.
                return self._reject(envelope, "forged_sync")
            message = self._store_received(envelope, content, item,
                                           peer=content.sent.destination, incoming=False)
            return ReceiveEvent("sync", sender, sender_device, mid, message=message)
        if kind == "receipt":
            status = "read" if content.receipt.type == pb.ReceiptMessage.READ else "delivered"
            for stamp in content.receipt.timestamps:
                ref = self._store.get(K_SENT_INDEX, f"{sender}\0{stamp}")
                if ref is None:
                    continue
                record = self._message_record(ref.decode())
                if record is None or record.message.status == "read":
                    continue
                record.message = replace(record.message, status=status)
                self._put_message(record)
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
        await self._kt_check_senders()

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
                    stored = self._message_record(str(record["message"]))
                    if stored is None:
                        raise ValueError("message missing")
                    message = stored.message
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
        await self._kt_poll()  # self-monitoring in the key directory (sdk/kt.py)
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

