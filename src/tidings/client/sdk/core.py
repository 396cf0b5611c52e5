"""`ClientCore`: the state every part of `Client` shares (declared here, set by `Client`)."""

from __future__ import annotations

from tidings.client.sdk.constants import K_REJECTED, K_SEEN
from tidings.client.sdk.models import Account, ReceiveEvent
from tidings.client.store import Store
from tidings.client.transport import Transport, b64e
from tidings.clock import Clock
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.wire import tidings_pb2 as pb


class ClientCore:
    """The attributes of one open device. `Client.__init__` sets them; the parts of the client
    (prekeys, trust, outbox, attachments, groups, inbox, reports) build on one another in that
    order, each using only what the parts before it and this core provide."""

    _store: Store
    account: Account
    _identity: IdentityKeyPair
    _prekeys: DevicePrekeys
    _transport: Transport
    _owns_transport: bool
    _clock: Clock
    auto_delivery_receipts: bool
    _pending_receipts: dict[str, list[int]]
    _prekeys_used: bool
    _kt_senders: set[tuple[str, int, bytes]]

    def _reject(self, envelope: pb.Envelope, code: str) -> ReceiveEvent:
        """Refuse an envelope: mark it seen and file why (no content is kept)."""
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
