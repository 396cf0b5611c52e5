"""The Tidings client: encrypted local store, HTTP/WebSocket transport and the async SDK."""

from tidings.client.sdk import Client, ContactSafety, Message, ReceiveEvent, SentMessage
from tidings.client.store import KdfParams, Store

__all__ = [
    "Client",
    "ContactSafety",
    "KdfParams",
    "Message",
    "ReceiveEvent",
    "SentMessage",
    "Store",
]
