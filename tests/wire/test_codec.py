"""The wire codec answers every malformed input with a typed DecodeError, never a crash."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.errors import DecodeError, OversizedError, UnsupportedVersionError
from tidings.wire import codec, decode, encode, pb
from tidings.wire.limits import PROTOCOL_VERSION

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
from fuzz_wire import _seed

KINDS = list(codec.DECODABLE)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.DESCRIPTOR.name)
def test_valid_encoding_round_trips(kind: type[codec.Message]) -> None:
    data = _seed(kind)
    message = decode(kind, data)
    assert encode(message) == data


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.DESCRIPTOR.name)
def test_other_version_is_refused_by_name(kind: type[codec.Message]) -> None:
    message = decode(kind, _seed(kind))
    message.version = PROTOCOL_VERSION + 1  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedVersionError, match="version 2 is not supported"):
        decode(kind, encode(message))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.DESCRIPTOR.name)
def test_oversized_input_is_refused_before_parsing(kind: type[codec.Message]) -> None:
    limit, _ = codec._SPECS[kind]
    with pytest.raises(OversizedError):
        decode(kind, b"\x08\x01" + bytes(limit))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.DESCRIPTOR.name)
def test_every_truncation_is_a_typed_error_or_a_checked_message(kind: type[codec.Message]) -> None:
    data = _seed(kind)
    for cut in range(len(data)):
        try:
            decode(kind, data[:cut])
        except DecodeError:
            continue


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), data=st.binary(max_size=2048))
def test_random_bytes_give_only_typed_errors(kind: type[codec.Message], data: bytes) -> None:
    try:
        decode(kind, data)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
)
def test_mutated_valid_encodings_give_only_typed_errors(
    kind: type[codec.Message], flips: list[tuple[int, int]]
) -> None:
    data = bytearray(_seed(kind))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    try:
        decode(kind, bytes(data))
    except DecodeError:
        pass


def test_wrong_field_length_is_named() -> None:
    envelope = decode(pb.Envelope, _seed(pb.Envelope))
    envelope.commitment = bytes(31)
    with pytest.raises(DecodeError, match="commitment must be 32 bytes"):
        decode(pb.Envelope, encode(envelope))


def test_unknown_envelope_type_is_refused() -> None:
    envelope = decode(pb.Envelope, _seed(pb.Envelope))
    envelope.type = pb.Envelope.UNKNOWN
    with pytest.raises(DecodeError, match="type is unknown"):
        decode(pb.Envelope, encode(envelope))


def test_nonzero_padding_is_refused() -> None:
    franked = decode(pb.FrankedContent, _seed(pb.FrankedContent))
    franked.padding = b"\x00\x01"
    with pytest.raises(DecodeError, match="padding"):
        decode(pb.FrankedContent, encode(franked))


def test_prekey_message_checks_its_inner_ratchet_message() -> None:
    message = decode(pb.PrekeyMessage, _seed(pb.PrekeyMessage))
    message.message.header = bytes(39)
    with pytest.raises(DecodeError, match="ratchet header"):
        decode(pb.PrekeyMessage, encode(message))


def test_content_without_body_is_refused() -> None:
    content = pb.Content(version=1, conversation_id=bytes(32))
    with pytest.raises(DecodeError, match="no body"):
        decode(pb.Content, encode(content))


def test_too_many_attachments_is_oversized() -> None:
    pointer = pb.AttachmentPointer(id="a", key=bytes(32), digest=bytes(32), chunk_size=1)
    content = pb.Content(
        version=1, conversation_id=bytes(32), data=pb.DataMessage(attachments=[pointer] * 33)
    )
    with pytest.raises(OversizedError, match="attachments"):
        decode(pb.Content, encode(content))


def test_non_bytes_input_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(pb.Envelope, "not bytes")  # type: ignore[arg-type]
