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

- **Key transparency** (`kt`): the account's signed device list is published at
  registration, vouched for on linking (the link code's local secret binds the new device) and
  monitored (`kt_sync`: alerts in `kt_alerts`); a contact's devices must be in its published,
  verified list before any PQXDH (`UnvouchedDeviceError`). docs/key-transparency.md, "Clients".

Identity keys are per device; the safety number covers both sides' vouched device lists, so it
is one number per conversation (shown beside each of the contact's devices).

No method logs or puts plaintext, keys or secrets into an exception message.

Modules, one concept each: `models` (result types, decoded from stored records in one place),
`records` (typed store records: contacts, messages; a `Group` is its own stored form),
`constants`, `core` (the shared state), then the parts of
`Client` in the order they build on one another: `prekeys`, `trust`, `kt`, `outbox`, `attachments`,
`groups`, `inbox`, `reports`; `client` is the facade (lifecycle, registration, history).
"""


from tidings.client.sdk.client import Client
from tidings.client.sdk.constants import GROUP_PEER_PREFIX, K_MESSAGE
from tidings.client.sdk.models import (
    Account,
    AttachmentSummary,
    ContactSafety,
    DeviceSafetyNumber,
    Group,
    GroupSendResult,
    Message,
    ReceiveEvent,
    SentMessage,
    TrustEvent,
)

__all__ = [
    "GROUP_PEER_PREFIX",
    "K_MESSAGE",
    "Account",
    "AttachmentSummary",
    "Client",
    "ContactSafety",
    "DeviceSafetyNumber",
    "Group",
    "GroupSendResult",
    "Message",
    "ReceiveEvent",
    "SentMessage",
    "TrustEvent",
]
