"""The Tidings client: encrypted local store, HTTP/WebSocket transport and the async SDK."""

from tidings.client.sdk import (
    Client,
    ContactSafety,
    Group,
    GroupSendResult,
    Message,
    ReceiveEvent,
    SentMessage,
)
from tidings.client.store import KdfParams, Store

__all__ = [
    "Client",
    "ContactSafety",
    "Group",
    "GroupSendResult",
    "KdfParams",
    "Message",
    "ReceiveEvent",
    "SentMessage",
    "Store",
]
