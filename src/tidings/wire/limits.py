"""Size limits for every wire structure (bytes). A larger input is refused before parsing."""

from __future__ import annotations

PROTOCOL_VERSION = 1
"""The only wire version this implementation speaks."""

MAX_BUNDLE_BYTES = 4 * 1024
MAX_PREKEY_MESSAGE_BYTES = 80 * 1024
MAX_RATCHET_MESSAGE_BYTES = 72 * 1024
MAX_SENDER_KEY_MESSAGE_BYTES = 72 * 1024
MAX_SENDER_KEY_DISTRIBUTION_BYTES = 256
MAX_CONTENT_BYTES = 64 * 1024
MAX_FRANKED_CONTENT_BYTES = MAX_CONTENT_BYTES + 4 * 1024
MAX_ENVELOPE_BYTES = 96 * 1024
MAX_TEXT_CHARS = 16 * 1024
MAX_ATTACHMENTS = 32
MAX_GROUP_MEMBERS = 1000
MAX_IDENTIFIER_CHARS = 64
"""Account names and attachment ids on the wire."""
