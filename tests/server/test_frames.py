"""The WebSocket frame reader and writers (`tidings.server.frames`): the hand-written checks of a
``send`` frame's messages accept exactly what `tidings.server.models.SendRequest` accepts (the
HTTP route's model), every malformed frame is answered (never raised), and the hand-built
server frames are what ``json.dumps`` gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tidings.server.frames import (
    BAD_MESSAGES,
    MAX_CLIENT_FRAME,
    AckFrame,
    BadFrame,
    DeviceMessage,
    SendFrame,
    envelope_frame,
    read_client_frame,
    send_result_frame,
)
from tidings.server.ids import DEVICE_ID_MAX, REGISTRATION_ID_MAX
from tidings.server.models import MAX_MESSAGES_PER_SEND, SendRequest, b64url_max
from tidings.wire.base64url import b64e
from tidings.wire.limits import MAX_ENVELOPE_BYTES

B64_CHARS = "ABCxyz019-_"
VALID = {
    "device_id": 1,
    "registration_id": 7,
    "type": 2,
    "body": b64e(b"ciphertext"),
    "commitment": b64e(bytes(32)),
}

# Values around every boundary the model checks, and of every JSON type.
numbers = st.one_of(
    st.sampled_from(
        [
            0,
            1,
            2,
            3,
            4,
            -1,
            DEVICE_ID_MAX,
            DEVICE_ID_MAX + 1,
            REGISTRATION_ID_MAX,
            2**63,
            1.0,
            2.0,
            1.5,
            -0.0,
            1e300,
            float("inf"),
            float("nan"),
            True,
            False,
            None,
            "1",
            [1],
            {},
        ]
    ),
    st.integers(),
    st.floats(),
)
texts = st.one_of(
    st.text(alphabet=B64_CHARS, max_size=50),
    st.text(max_size=8),
    st.sampled_from(
        [
            b64e(bytes(32)),
            b64e(bytes(32)) + "\n",
            b64e(bytes(31)),
            "A" * 43,
            "A" * 44,
            "A" * 45,
            "abcde",
            "ab==",
            "+/+/",
            "",
            "A" * b64url_max(MAX_ENVELOPE_BYTES),
            "A" * (b64url_max(MAX_ENVELOPE_BYTES) + 1),
        ]
    ),
    numbers,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message with each field valid, or one of the boundary values, or missing."""
    message: dict[str, Any] = {}
    for field in VALID:
        choice = draw(st.integers(0, 4))
        if choice == 0:
            continue  # missing
        if choice <= 2:
            message[field] = VALID[field]
        else:
            message[field] = draw(
                numbers if field in ("device_id", "registration_id", "type") else texts
            )
    if draw(st.booleans()):
        message["extra"] = draw(json_values)
    return message


message_lists = st.one_of(
    st.lists(st.one_of(messages(), json_values), max_size=4),
    json_values,
)


def pydantic_accepts(value: Any) -> SendRequest | None:
    try:
        return SendRequest.model_validate({"messages": value})
    except ValidationError:
        return None


@settings(max_examples=600, deadline=None)
@given(message_lists)
def test_send_frames_accept_exactly_what_the_http_model_accepts(value: Any) -> None:
    text = json.dumps({"type": "send", "id": 1, "destination": "bob", "messages": value})
    model = pydantic_accepts(json.loads(text)["messages"])
    frame = read_client_frame(text)
    if model is None:
        assert frame == BadFrame(BAD_MESSAGES, 1)
        return
    assert isinstance(frame, SendFrame)
    expected = [
        DeviceMessage(m.device_id, m.registration_id, m.type, m.body, m.commitment)
        for m in model.messages
    ]
    assert frame.messages == expected


def test_the_message_count_limit_is_the_models() -> None:
    at_limit = [VALID] * MAX_MESSAGES_PER_SEND
    for value, ok in ((at_limit, True), ([*at_limit, VALID], False), ([], True)):
        assert (pydantic_accepts(value) is not None) is ok
        frame = read_client_frame(
            json.dumps({"type": "send", "id": 1, "destination": "b", "messages": value})
        )
        assert isinstance(frame, SendFrame) is ok


@pytest.mark.parametrize(
    "text",
    [
        None,  # binary
        "",
        "{",
        "[]",
        "null",
        '"ack"',
        "[" * 100_000,  # nested past the recursion limit
        '{"type": "ack"}',
        '{"type": "ack", "message_id": 5}',
        '{"type": "ack", "message_id": "%%%"}',
        json.dumps({"type": "ack", "message_id": b64e(bytes(17))}),
        json.dumps({"type": "ack", "message_id": "A", "pad": "x" * MAX_CLIENT_FRAME}),
        '{"type": "ack", "message_id": "' + "1" * 5000 + '"}',
        '{"type": "send", "id": ' + "9" * 5000 + "}",  # past int's digit limit
        '{"type": "send", "id": true}',
        '{"type": "send", "id": 1, "destination": ""}',
        '{"type": "send", "id": 1, "destination": 5, "messages": []}',
        '{"type": "subscribe"}',
    ],
)
def test_malformed_frames_are_answered_not_raised(text: str | None) -> None:
    assert isinstance(read_client_frame(text), BadFrame)


@given(st.text(max_size=300))
def test_any_text_is_read_or_refused(text: str) -> None:
    assert isinstance(read_client_frame(text), AckFrame | SendFrame | BadFrame)


def test_an_ack_frame_gives_its_message_id() -> None:
    assert read_client_frame(json.dumps({"type": "ack", "message_id": b64e(b"m" * 16)})) == (
        AckFrame(b"m" * 16)
    )


@given(
    st.one_of(st.integers(0, 2**53 - 1), st.text(min_size=1, max_size=64)),
    st.integers(0, 2**63),
    st.lists(st.binary(min_size=16, max_size=16).map(b64e), max_size=5),
)
def test_send_result_frames_are_what_json_dumps_gives(
    request_id: int | str, timestamp: int, ids: list[str]
) -> None:
    expected = {
        "type": "send_result",
        "id": request_id,
        "server_timestamp_ms": timestamp,
        "message_ids": ids,
    }
    assert send_result_frame(request_id, timestamp, ids) == json.dumps(expected)


@given(st.binary(max_size=200))
def test_envelope_frames_are_what_json_dumps_gives(envelope: bytes) -> None:
    assert envelope_frame(envelope) == json.dumps({"type": "envelope", "envelope": b64e(envelope)})
