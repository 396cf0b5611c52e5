"""The detection voucher's inner payload (`tidings.wire.detection`): fixed size, one encoding
per payload, typed errors on anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.errors import DecodeError, OversizedError, TruncatedError, UnsupportedVersionError
from tidings.wire.base64url import b64e
from tidings.wire.detection import (
    CONTENT_TYPES,
    INNER_PAYLOAD_LEN,
    DetectionInnerPayload,
    list_statement,
)

_ID = b64e(bytes(range(100, 132)))


def _payload(**changes: object) -> DetectionInnerPayload:
    values: dict[str, object] = {
        "attachment_id": _ID,
        "key": bytes(range(32)),
        "digest": bytes(range(32, 64)),
        "size": 123_456,
        "content_type": "image/jpeg",
        "pdq": bytes(range(64, 96)),
    }
    values.update(changes)
    return DetectionInnerPayload(**values)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    attachment_id=st.binary(min_size=32, max_size=32).map(b64e),
    key=st.binary(min_size=32, max_size=32),
    digest=st.binary(min_size=32, max_size=32),
    size=st.integers(0, 2**32 - 1),
    content_type=st.sampled_from(CONTENT_TYPES),
    pdq=st.binary(min_size=32, max_size=32),
)
def test_round_trip_is_fixed_size(
    attachment_id: str, key: bytes, digest: bytes, size: int, content_type: str, pdq: bytes
) -> None:
    payload = DetectionInnerPayload(attachment_id, key, digest, size, content_type, pdq)
    encoded = payload.encode()
    assert len(encoded) == INNER_PAYLOAD_LEN == 134
    assert DetectionInnerPayload.decode(encoded) == payload


def test_a_known_encoding() -> None:
    encoded = _payload().encode()
    assert encoded[0] == 2
    assert encoded[1:33] == bytes(range(100, 132))
    assert encoded[97:101] == (123_456).to_bytes(4, "big")
    assert encoded[101] == CONTENT_TYPES.index("image/jpeg")
    assert encoded[102:] == bytes(range(64, 96))


def test_unlisted_content_types_are_sent_as_none() -> None:
    assert DetectionInnerPayload.for_content_type("image/png") == "image/png"
    assert DetectionInnerPayload.for_content_type("application/x-evil") == ""


def test_the_key_never_shows_in_a_repr() -> None:
    assert bytes(range(32)).hex() not in repr(_payload())
    assert repr(bytes(range(32))) not in repr(_payload())


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"attachment_id": ""}, "attachment id"),
        ({"attachment_id": "a" * 44}, "attachment id"),
        ({"attachment_id": "é" * 43}, "attachment id"),
        ({"attachment_id": "A" * 42 + "B"}, "attachment id"),  # not canonical base64url
        ({"key": bytes(31)}, "attachment key"),
        ({"digest": bytes(33)}, "attachment digest"),
        ({"size": -1}, "attachment size"),
        ({"size": 2**32}, "attachment size"),
        ({"size": True}, "attachment size"),
        ({"content_type": "text/html"}, "content type"),
        ({"content_type": b"image/png"}, "content type"),
        ({"pdq": bytes(16)}, "PDQ hash"),
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
        DetectionInnerPayload.decode(b"\x01" + good[1:])
    with pytest.raises(DecodeError):
        DetectionInnerPayload.decode("not bytes")  # type: ignore[arg-type]


def test_decode_refuses_an_unknown_content_type_code() -> None:
    bad = bytearray(_payload().encode())
    bad[101] = len(CONTENT_TYPES)
    with pytest.raises(DecodeError):
        DetectionInnerPayload.decode(bytes(bad))


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
