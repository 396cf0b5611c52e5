"""Tunables, store kinds and limits of the client SDK."""

from __future__ import annotations

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

LIST_REFRESH_MS = 6 * 3600 * 1000
"""Sending an image checks the server's detection list digest again once the last check is
older than this (6 hours): a new list reaches devices within a working day."""

MAX_VOUCHERS_PER_FLUSH = 64
"""Filed detection vouchers posted at most per send or sync (the oldest first)."""

KT_POLL_INTERVAL_MS = 30_000
"""`poll` runs key-transparency self-monitoring (`kt_sync`) at most this often."""

KT_VOUCH_GRACE_MS = 10 * 60 * 1000
"""A registered device with a link binding this device cannot check (another own device made
its code) is an alert once it stays out of the published list this long, in the directory's
head time (a link code lives 10 minutes; its maker vouches at its next check)."""

MAX_HEAD_GAP = 1440
"""Epoch heads a device fetches at most to check that a new head extends the last one it
verified (a day of 60-second epochs); beyond, the remembered head must still be served."""

MAX_KT_ALERTS = 50
"""Key-transparency alerts kept (oldest dropped first)."""

MAX_LINK_SECRETS = 8
"""Link-code secrets kept at once (each lives as long as its code, 10 minutes)."""

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
K_GROUP = "group"  # b64(group id) -> `Group.to_json()` (id, title, revision, members, active)
K_SENDER_KEYS = "sender_keys"  # b64(conversation id) -> GroupSenderKeys.to_bytes()
K_SK_LINE = "sk_line"  # "<sender>\0<device>\0<b64 distribution id>" -> conversation id
K_DETECTION = "detection"  # list / pin / checked / window / refused -> JSON (sdk/detection.py)
K_DETECTION_LIST = "detection_list"  # "current" -> the verified blinded list's bytes
K_VOUCHER = "voucher"  # "<ms>-<random>" -> {"window", "voucher"}: filed, not yet posted
K_KT = "kt"  # pin / head / own / links / alerts / checked (sdk/kt.py)
K_KT_CONTACT = "kt_contact"  # username -> {"list": b64 signed list | None, "tofu": bool}
K_UNDELIVERED = "undelivered"  # b64(message id) -> event JSON: stored, not yet shown to the app

SELF = "self"

APPLICATION_KINDS = frozenset({"message", "sync", "rejected"})
"""Receive events that carry something for the application to show: these are handed to it
exactly once (see "delivery to the application" in `Client`)."""


GROUP_PEER_PREFIX = "group:"
"""``Message.peer`` of a group message is this prefix and the base64url group id. Account names
cannot contain ':' (server rule), so a group never collides with a contact."""

MAX_GROUP_TITLE_CHARS = 128

DEFAULT_CONTENT_TYPE = "application/octet-stream"
"""The MIME type a sent file is labelled with when the caller names none."""

DEFAULT_REPORT_CONTEXT = 5
"""Context messages on each side of a reported one when the caller names no number."""

MAX_REPORT_CONTEXT = 50
"""At most this many context messages on each side of a reported one (the client's choice; the
server takes up to `tidings.crypto.franking.MAX_CONTEXT_ITEMS` items)."""


def session_name(username: str, device_id: int) -> str:
    return f"{device_id}:{username}"

