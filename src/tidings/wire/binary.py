"""Fixed-layout binary encodings (big-endian), used where protobuf is not canonical enough:
signed and MACed byte strings, and the versioned serialization of private protocol state.

`Reader` is the one cursor every fixed-layout decoder uses: it raises `TruncatedError` when the
input ends early and `DecodeError` for trailing bytes, so a decoder built on it cannot raise
`IndexError` or `struct.error`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from tidings.errors import DecodeError, TruncatedError
from tidings.wire.limits import MAX_IDENTIFIER_CHARS

_T = TypeVar("_T")

U32_MAX = 0xFFFF_FFFF
"""Largest value of a ``u32`` field."""

U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
"""Largest value of a ``u64`` field."""

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def u8(value: int) -> bytes:
    return _U8.pack(value)


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def require_bytes(value: object, length: int, what: str) -> bytes:
    """``value`` itself if it is ``bytes`` of exactly ``length``.

    Raises:
        DecodeError: ``"<what> must be <length> bytes"`` otherwise (also for bytearray).
    """
    if not isinstance(value, bytes) or len(value) != length:
        raise DecodeError(f"{what} must be {length} bytes")
    return value


def require_uint(value: object, maximum: int, what: str) -> int:
    """``value`` itself if it is an ``int`` (not a bool) in ``0..maximum``.

    Raises:
        DecodeError: ``"<what> is not an unsigned integer in range"`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise DecodeError(f"{what} is not an unsigned integer in range")
    return value


def identifier_bytes(name: object, what: str) -> bytes:
    """The UTF-8 bytes of an account name (or other wire identifier): a non-empty ``str`` of at
    most `limits.MAX_IDENTIFIER_CHARS` characters.

    Raises:
        DecodeError: not a non-empty str, too long, or not encodable as UTF-8 (lone surrogates).
    """
    if not isinstance(name, str) or not name:
        raise DecodeError(f"{what} must be a non-empty account name")
    if len(name) > MAX_IDENTIFIER_CHARS:
        raise DecodeError(f"{what} is longer than {MAX_IDENTIFIER_CHARS} characters")
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError(f"{what} is not encodable as UTF-8") from None


def var16(value: bytes) -> bytes:
    """``u16(len(value)) || value``; raises `ValueError` past 65535 bytes (a caller bug)."""
    return _U16.pack(len(value)) + value


def var32(value: bytes) -> bytes:
    """``u32(len(value)) || value``."""
    return _U32.pack(len(value)) + value


class EqualByEncoding:
    """Mixin for immutable values identified by their canonical encoding, kept in ``_encoded``:
    two are equal when they are of the same class and their encodings are; the hash is the
    encoding's."""

    __slots__ = ()

    _encoded: bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self._encoded == other._encoded

    def __hash__(self) -> int:
        return hash(self._encoded)


class Reader:
    """A cursor over untrusted bytes. ``what`` names the structure in error messages."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what} is not bytes")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes. Raises `TruncatedError` if fewer remain."""
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise TruncatedError(f"{self._what} ends early")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return int(_U8.unpack(self.take(1))[0])

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def flag(self) -> bool:
        """A u8 that must be 0 or 1."""
        value = self.u8()
        if value > 1:
            raise DecodeError(f"{self._what} has a flag byte that is neither 0 nor 1")
        return value == 1

    def var16(self) -> bytes:
        return self.take(self.u16())

    def var32(self, limit: int) -> bytes:
        """A u32-length-prefixed byte string of at most ``limit`` bytes."""
        n = self.u32()
        if n > limit:
            raise DecodeError(f"{self._what} has a field longer than {limit} bytes")
        return self.take(n)

    def records(
        self, count: int, size: int, read: Callable[[Reader], _T], limit: int | None = None
    ) -> list[_T]:
        """``count`` records of ``size`` bytes each, each parsed by ``read`` from a reader of its
        own that it must consume exactly.

        Raises:
            DecodeError: ``count`` exceeds ``limit``, or ``read`` leaves bytes of a record over
                (and whatever ``read`` raises).
            TruncatedError: fewer than ``count * size`` bytes remain.
        """
        if limit is not None and count > limit:
            raise DecodeError(f"{self._what} holds more than {limit} records")
        # One bounds check for the whole run, before any per-record work.
        block = self.take(count * size)
        parsed: list[_T] = []
        for start in range(0, len(block), size):
            record = Reader(block[start : start + size], self._what)
            parsed.append(read(record))
            record.finish()
        return parsed

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def finish(self) -> None:
        """Raise `DecodeError` if any bytes are left over."""
        if self._pos != len(self._data):
            raise DecodeError(f"{self._what} has {self.remaining} trailing bytes")
