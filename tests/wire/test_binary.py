"""The shared fixed-layout helpers in `tidings.wire.binary`: field checks, per-record parsing and
equality by encoding."""

from __future__ import annotations

import pytest

from tidings.errors import DecodeError, TruncatedError
from tidings.wire import binary, limits


def test_require_bytes_accepts_exact_bytes_only() -> None:
    assert binary.require_bytes(b"abcd", 4, "field") == b"abcd"
    for bad in (b"abc", b"abcde", bytearray(b"abcd"), "abcd", None):
        with pytest.raises(DecodeError, match="field must be 4 bytes"):
            binary.require_bytes(bad, 4, "field")


def test_require_uint_bounds_and_rejects_bool() -> None:
    assert binary.require_uint(0, binary.U32_MAX, "n") == 0
    assert binary.require_uint(binary.U32_MAX, binary.U32_MAX, "n") == binary.U32_MAX
    for bad in (-1, binary.U32_MAX + 1, True, 1.0, "1"):
        with pytest.raises(DecodeError, match="n is not an unsigned integer in range"):
            binary.require_uint(bad, binary.U32_MAX, "n")


def test_identifier_bytes() -> None:
    assert binary.identifier_bytes("alice", "sender") == b"alice"
    assert binary.identifier_bytes("é" * limits.MAX_IDENTIFIER_CHARS, "x") == "é".encode() * 64
    with pytest.raises(DecodeError, match="non-empty"):
        binary.identifier_bytes("", "sender")
    with pytest.raises(DecodeError, match="non-empty"):
        binary.identifier_bytes(b"alice", "sender")
    with pytest.raises(DecodeError, match="longer than"):
        binary.identifier_bytes("a" * (limits.MAX_IDENTIFIER_CHARS + 1), "sender")
    with pytest.raises(DecodeError, match="UTF-8"):
        binary.identifier_bytes("\ud800", "sender")


def _pair(r: binary.Reader) -> tuple[int, int]:
    return r.u16(), r.u8()


def test_records_parses_each_record_from_its_own_reader() -> None:
    data = bytes([0, 1, 2, 0, 3, 4, 9])
    r = binary.Reader(data, "list")
    assert r.records(2, 3, _pair) == [(1, 2), (3, 4)]
    assert r.remaining == 1


def test_records_refuses_over_limit_truncation_and_leftovers() -> None:
    with pytest.raises(DecodeError, match="more than 1 records"):
        binary.Reader(bytes(6), "list").records(2, 3, _pair, limit=1)
    with pytest.raises(TruncatedError):
        binary.Reader(bytes(5), "list").records(2, 3, _pair)
    # A record larger than what the parser reads leaves bytes over: refused, not skipped.
    with pytest.raises(DecodeError, match="trailing"):
        binary.Reader(bytes(8), "list").records(2, 4, _pair)


class _A(binary.EqualByEncoding):
    __slots__ = ("_encoded",)

    def __init__(self, encoded: bytes) -> None:
        self._encoded = encoded


def test_equal_by_encoding() -> None:
    assert _A(b"x") == _A(b"x")
    assert hash(_A(b"x")) == hash(_A(b"x"))
    assert _A(b"x") != _A(b"y")
    assert _A(b"x") != b"x"
    assert len({_A(b"x"), _A(b"x"), _A(b"y")}) == 2
