"""The WebSocket frames of docs/api.md ("WebSocket"), read and written on the delivery hot path.

Client frames (``ack``, ``send``) are read with one `json.loads` and the checks written out
here instead of a pydantic model (≈ 7 µs instead of ≈ 9 µs for the bench's send frame, most of
either being `json.loads` itself: `bench/relay_hot_path.py`). The checks are exactly the model's
(`tidings.server.models.OutgoingMessage`: the same limits, from the same constants; JSON-Schema
integers as in `tidings.server.ids`): tests/server/test_frames.py compares the two on
hypothesis-generated frames, so the HTTP route (which keeps the model, for /openapi.json) and
the WebSocket accept the same messages.

Server frames of a fixed shape (``envelope``, ``send_result``) are built as text, byte for
byte what ``json.dumps`` of the same object gives (the tests compare them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeGuard

from tidings.errors import TidingsError
from tidings.server.ids import DEVICE_ID_MAX, REGISTRATION_ID_MAX
from tidings.server.models import (
    MAX_MESSAGES_PER_SEND,
    MESSAGE_TYPE_MAX,
    MESSAGE_TYPE_MIN,
    b64url_max,
)
from tidings.wire.base64url import b64d, b64e
from tidings.wire.codec import COMMITMENT_LEN, MESSAGE_ID_LEN
from tidings.wire.limits import MAX_ENVELOPE_BYTES

MAX_CLIENT_FRAME = 256
"""Longest ack frame (an ack is ~70 characters). A send frame may be as long as the transport
allows: it refuses anything past `tidings.server.serving.MAX_WS_MESSAGE_BYTES` before it is
buffered."""
MAX_REQUEST_ID_CHARS = 64

_BODY_MAX_CHARS = b64url_max(MAX_ENVELOPE_BYTES)
_COMMITMENT_CHARS = b64url_max(COMMITMENT_LEN)
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _is_b64url(text: str) -> bool:
    """`tidings.wire.base64url.B64URL_PATTERN` (4-character groups, then 2-3 characters) is:
    characters of the alphabet, and a length that is not 4k+1. Checked as that, in C (a
    translation that deletes the alphabet leaves nothing): Python's `re` takes several times
    longer over the pattern's repeated group on a 1 KiB body."""
    return (
        len(text) % 4 != 1
        and text.isascii()
        and not text.encode().translate(None, _B64URL_ALPHABET)
    )


RequestId = str | int

BAD_MESSAGES = "the messages do not validate (docs/api.md, Messages)"
BAD_REQUEST_ID = (
    f"a send frame needs an id: a string of 1-{MAX_REQUEST_ID_CHARS} "
    "characters or an integer 0..2^53-1"
)


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """One device's message of a ``send`` frame, checked as `models.OutgoingMessage` checks it
    (the text fields still base64url: `tidings.server.routes.messages.relay_send` decodes)."""

    device_id: int
    registration_id: int
    type: int
    body: str
    commitment: str


@dataclass(frozen=True, slots=True)
class AckFrame:
    message_id: bytes


@dataclass(frozen=True, slots=True)
class SendFrame:
    request_id: RequestId
    destination: str
    messages: list[DeviceMessage]


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame answered ``malformed`` (the socket stays open): why, and the request id to echo
    once it was readable."""

    why: str
    request_id: RequestId | None = None


def read_client_frame(text: str | None) -> AckFrame | SendFrame | BadFrame:
    """What a client frame asks for (``text`` None: a binary frame). Never raises: every
    malformed frame is a `BadFrame`."""
    if text is None:
        # A binary frame: the protocol is JSON text. Answered, not fatal (docs/api.md).
        return BadFrame("binary frame")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return BadFrame("bad frame")
    if type(frame) is not dict:
        return BadFrame("bad frame")
    kind = frame.get("type")
    if kind == "ack":
        if len(text) > MAX_CLIENT_FRAME:
            return BadFrame("bad frame")
        message_id = frame.get("message_id")
        if type(message_id) is not str:
            return BadFrame("bad frame")
        try:
            return AckFrame(b64d(message_id, what="message id", max_len=MESSAGE_ID_LEN))
        except TidingsError:
            return BadFrame("bad frame")
    if kind == "send":
        request_id = frame.get("id")
        if not _is_request_id(request_id):
            return BadFrame(BAD_REQUEST_ID)
        destination = frame.get("destination")
        if type(destination) is not str or not destination:
            return BadFrame("a send frame needs a destination username", request_id)
        messages = _messages(frame.get("messages"))
        if messages is None:
            return BadFrame(BAD_MESSAGES, request_id)
        return SendFrame(request_id, destination, messages)
    return BadFrame("unknown frame type")


def _is_request_id(value: object) -> TypeGuard[RequestId]:
    if type(value) is str:
        return 0 < len(value) <= MAX_REQUEST_ID_CHARS
    return type(value) is int and 0 <= value < 2**53


def _messages(value: object) -> list[DeviceMessage] | None:
    """The checked messages, or None where `models.SendRequest` would refuse them."""
    if type(value) is not list or len(value) > MAX_MESSAGES_PER_SEND:
        return None
    checked = []
    for item in value:
        if type(item) is not dict:
            return None
        try:
            device_id = _json_int(item["device_id"], 1, DEVICE_ID_MAX)
            registration_id = _json_int(item["registration_id"], 0, REGISTRATION_ID_MAX)
            kind = _json_int(item["type"], MESSAGE_TYPE_MIN, MESSAGE_TYPE_MAX)
            body, commitment = item["body"], item["commitment"]
        except KeyError:
            return None
        if device_id is None or registration_id is None or kind is None:
            return None
        if type(body) is not str or len(body) > _BODY_MAX_CHARS or not _is_b64url(body):
            return None
        if (
            type(commitment) is not str
            or len(commitment) != _COMMITMENT_CHARS
            or not _is_b64url(commitment)
        ):
            return None
        checked.append(DeviceMessage(device_id, registration_id, kind, body, commitment))
    return checked


def _json_int(value: object, minimum: int, maximum: int) -> int | None:
    """A JSON-Schema integer in [minimum, maximum] (``1`` or ``1.0``; never a boolean, a
    string or a fraction: `tidings.server.ids.JsonInt`), else None."""
    if type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():  # False for inf and nan
        number = int(value)
    else:
        return None
    return number if minimum <= number <= maximum else None


# -- server frames ---------------------------------------------------------------------------


def envelope_frame(envelope: bytes) -> str:
    return '{"type": "envelope", "envelope": "' + b64e(envelope) + '"}'


def send_result_frame(
    request_id: RequestId, server_timestamp_ms: int, message_ids: list[str]
) -> str:
    """``send_result``; ``message_ids`` are base64url (nothing to escape)."""
    rid = str(request_id) if type(request_id) is int else json.dumps(request_id)
    ids = '"' + '", "'.join(message_ids) + '"' if message_ids else ""
    return (
        '{"type": "send_result", "id": '
        + rid
        + ', "server_timestamp_ms": '
        + str(server_timestamp_ms)
        + ', "message_ids": ['
        + ids
        + "]}"
    )


def error_frame(code: str, message: str, request_id: RequestId | None = None) -> str:
    frame: dict[str, object] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return json.dumps(frame)
