"""The detection voucher's inner payload (`tidings.wire.detection`): fixed size, one encoding
per payload, typed errors on anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.errors import DecodeError, OversizedError, TruncatedError, UnsupportedVersionError
from tidings.wire.detection import (
    INNER_PAYLOAD_LEN,
    NO_MESSAGE_ID,
    DetectionInnerPayload,
    list_statement,
)

_ASCII = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=64
)


def _payload(**changes: object) -> DetectionInnerPayload:
    values: dict[str, object] = {
        "attachment_id": "A" * 43,
        "key": bytes(range(32)),
        "digest": bytes(range(32, 64)),
        "size": 123_456,
        "content_type": "image/jpeg",
        "pdq": bytes(range(64, 96)),
        "message_id": bytes(range(16)),
    }
    values.update(changes)
    return DetectionInnerPayload(**values)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    attachment_id=_ASCII.filter(bool),
    key=st.binary(min_size=32, max_size=32),
    digest=st.binary(min_size=32, max_size=32),
    size=st.integers(0, 2**64 - 1),
    content_type=_ASCII,
    pdq=st.binary(min_size=32, max_size=32),
    message_id=st.binary(min_size=16, max_size=16),
)
def test_round_trip_is_fixed_size(
    attachment_id: str,
    key: bytes,
    digest: bytes,
    size: int,
    content_type: str,
    pdq: bytes,
    message_id: bytes,
) -> None:
    payload = DetectionInnerPayload(attachment_id, key, digest, size, content_type, pdq, message_id)
    encoded = payload.encode()
    assert len(encoded) == INNER_PAYLOAD_LEN
    assert DetectionInnerPayload.decode(encoded) == payload


def test_the_key_never_shows_in_a_repr() -> None:
    assert bytes(range(32)).hex() not in repr(_payload())
    assert repr(bytes(range(32))) not in repr(_payload())


def test_message_id_defaults_to_unknown() -> None:
    payload = DetectionInnerPayload("x", bytes(32), bytes(32), 0, "", bytes(32))
    assert payload.message_id == NO_MESSAGE_ID
    assert DetectionInnerPayload.decode(payload.encode()).message_id == NO_MESSAGE_ID


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"attachment_id": ""}, "attachment id"),
        ({"attachment_id": "a" * 65}, "attachment id"),
        ({"attachment_id": "é"}, "attachment id"),
        ({"attachment_id": "a\nb"}, "attachment id"),
        ({"key": bytes(31)}, "attachment key"),
        ({"digest": bytes(33)}, "attachment digest"),
        ({"size": -1}, "attachment size"),
        ({"size": 2**64}, "attachment size"),
        ({"size": True}, "attachment size"),
        ({"content_type": "x" * 65}, "content type"),
        ({"content_type": b"image/png"}, "content type"),
        ({"pdq": bytes(16)}, "PDQ hash"),
        ({"message_id": bytes(15)}, "message id"),
    ],
)
def test_construction_refuses_bad_fields(changes: dict[str, object], what: str) -> None:
    with pytest.raises(DecodeError, match=what):
        _payload(**changes)


def test_decode_refuses_wrong_sizes_and_versions() -> None:
    good = _payload().encode()
    with pytest.raises(TruncatedError):
        DetectionInnerPayload.decode(good[:-1])
    with pytest.raises(TruncatedError):
        DetectionInnerPayload.decode(b"")
    with pytest.raises(OversizedError):
        DetectionInnerPayload.decode(good + b"\x00")
    with pytest.raises(UnsupportedVersionError):
        DetectionInnerPayload.decode(b"\x02" + good[1:])
    with pytest.raises(DecodeError):
        DetectionInnerPayload.decode("not bytes")  # type: ignore[arg-type]


def test_decode_refuses_non_canonical_encodings() -> None:
    good = bytearray(_payload().encode())
    cases = []
    id_len = bytearray(good)
    id_len[1] = 65  # longer than the field
    cases.append(id_len)
    empty_id = bytearray(good)
    empty_id[1] = 0
    cases.append(empty_id)
    id_padding = bytearray(good)
    id_padding[2 + 60] = 1  # inside the id's padding
    cases.append(id_padding)
    tail = bytearray(good)
    tail[-1] = 1  # the final padding
    cases.append(tail)
    non_ascii = bytearray(good)
    non_ascii[2] = 0xFF
    cases.append(non_ascii)
    control = bytearray(good)
    control[2] = 0x07
    cases.append(control)
    for data in cases:
        with pytest.raises(DecodeError):
            DetectionInnerPayload.decode(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * INNER_PAYLOAD_LEN))
def test_garbage_gives_typed_errors_only(data: bytes) -> None:
    try:
        payload = DetectionInnerPayload.decode(data)
    except DecodeError:
        return
    assert payload.encode() == data


def test_list_statement_binds_every_field() -> None:
    base = {"version": 3, "digest": bytes(32), "threshold": 10, "created_ms": 1_700_000_000_000}
    statement = list_statement(**base)  # type: ignore[arg-type]
    assert statement.startswith(b"Tidings_DetectionList_v1")
    for name, other in (
        ("version", 4),
        ("digest", b"\x01" * 32),
        ("threshold", 11),
        ("created_ms", 1),
    ):
        assert list_statement(**{**base, name: other}) != statement  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="list digest"):
        list_statement(**{**base, "digest": bytes(31)})  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="list version"):
        list_statement(**{**base, "version": -1})  # type: ignore[arg-type]
