"""Attachment encryption: streaming, chunked, key-committing encrypt-then-MAC.

Format (docs/protocol.md is the normative text)::

    header = "TDAT" || u8(1) || u32(chunk_size) || nonce (32) || key_commitment (32)   -- 73 bytes
    okm    = HKDF-SHA256(IKM = attachment key, salt = nonce, info = "Tidings_Attachment_v1", 96)
    enc_key = okm[0:32]   mac_key = okm[32:64]   key_commitment = okm[64:96]
    ciphertext = header || record_0 || ... || record_last
    record_i   = c_i || HMAC-SHA256(mac_key, header || u64(i) || u8(final_i) || c_i)

``c_i`` is chunk ``i`` of the plaintext encrypted with AES-256-CTR under ``enc_key`` as one
continuous keystream starting at the all-zero counter block. Every record but the last holds
exactly ``chunk_size`` plaintext bytes and has ``final = 0``; the last holds 0..chunk_size bytes
(0 only for an empty attachment) and has ``final = 1``. There is always exactly one final record.

What each part prevents:

- the chunk index in every tag: reordering, dropping or duplicating records;
- the final flag: truncation at a record boundary (the last record received would have been
  MACed with ``final = 0``) and extension after the end;
- the whole header in every tag: splicing records between attachments or changing the chunk
  size, nonce or commitment;
- the key commitment: "invisible salamanders", one ciphertext that opens under two keys.

Why the construction is key-committing. To make one ciphertext open under keys k1 != k2, an
attacker needs (a) the header's ``key_commitment`` to equal HKDF(k1, nonce)[64:96] *and*
HKDF(k2, nonce)[64:96], and (b) every record tag to verify under both derived MAC keys. (a) is a
collision of HKDF-SHA256 (HMAC-SHA256 as a function of its key), about 2^128 work. (b) alone is
already such a collision: unlike GCM's GHASH or Poly1305, whose tags are linear in the key and
can be solved for, HMAC-SHA256 behaves as a collision-resistant hash of (key, message), so no
one can find two MAC keys giving the same tag over the same bytes. The commitment is therefore
belt and braces for the MACs, and it lets a decryptor reject a wrong key from the 73-byte
header, before any record.

Streaming: the encryptor holds at most one chunk of plaintext; the decryptor holds at most one
record of ciphertext and releases plaintext only from records whose tag has verified. A record
is known to be non-final only once a byte after it has arrived, so the last record's plaintext
is released by `AttachmentDecryptor.finalize`. Until ``finalize`` returns, the attachment as a
whole is unverified (it may still turn out truncated or have the wrong digest): write released
plaintext to a temporary place and use it only after ``finalize`` succeeds.

Nothing here reads a clock or keeps global state; the file helpers take already-open binary
streams. Errors are `tidings.errors` types and never contain key material or plaintext.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from tidings.crypto.primitives import (
    HMAC_SHA256_LEN,
    KEY_LEN,
    Aes256CtrStream,
    Sha256Stream,
    constant_time_equal,
    hkdf_sha256,
    hmac_sha256,
    random_bytes,
)
from tidings.errors import AttachmentError, InvalidKeyError
from tidings.wire.binary import u8, u32, u64

__all__ = [
    "ATTACHMENT_KDF_INFO",
    "ATTACHMENT_KEY_LEN",
    "DEFAULT_CHUNK_SIZE",
    "DIGEST_LEN",
    "FORMAT_VERSION",
    "HEADER_LEN",
    "MAGIC",
    "MAX_ATTACHMENT_BYTES",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "NONCE_LEN",
    "TAG_LEN",
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "EncryptedAttachment",
    "ciphertext_size",
    "decrypt_bytes",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_file",
    "encrypt_stream",
    "generate_key",
]

ATTACHMENT_KEY_LEN = KEY_LEN
"""32: the attachment key carried in AttachmentPointer.key."""

MAGIC = b"TDAT"
FORMAT_VERSION = 1
NONCE_LEN = 32
COMMITMENT_LEN = 32
TAG_LEN = HMAC_SHA256_LEN
DIGEST_LEN = 32
HEADER_LEN = len(MAGIC) + 1 + 4 + NONCE_LEN + COMMITMENT_LEN
"""73 bytes."""

ATTACHMENT_KDF_INFO = b"Tidings_Attachment_v1"

DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 256
"""Smaller chunks only add tag overhead and per-record work for the receiver."""
MAX_CHUNK_SIZE = 1024 * 1024
"""Bounds the decryptor's buffer: it holds one record (chunk + tag) at a time."""
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024
"""Largest plaintext an encryptor produces or a decryptor accepts (100 MiB)."""

_INITIAL_COUNTER = bytes(16)
_BYTES_LIKE = (bytes, bytearray, memoryview)


def generate_key() -> bytes:
    """A fresh random 32-byte attachment key (one per attachment, never reused)."""
    return random_bytes(ATTACHMENT_KEY_LEN)


def _check_chunk_size(chunk_size: int) -> None:
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise AttachmentError(
            f"chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
        )


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact ciphertext length for ``plaintext_size`` bytes: header + plaintext + one 32-byte tag
    per record, with ``max(1, ceil(plaintext_size / chunk_size))`` records.

    Raises:
        AttachmentError: negative size or chunk size out of range.
    """
    _check_chunk_size(chunk_size)
    if plaintext_size < 0:
        raise AttachmentError("plaintext size is negative")
    records = max(1, -(-plaintext_size // chunk_size))
    return HEADER_LEN + plaintext_size + records * TAG_LEN


def _derive(key: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
    okm = hkdf_sha256(key, salt=nonce, info=ATTACHMENT_KDF_INFO, length=96)
    return okm[:32], okm[32:64], okm[64:]


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != ATTACHMENT_KEY_LEN:
        raise InvalidKeyError("attachment key must be 32 bytes")
    return bytes(key)


def _tag(
    mac_key: bytes, header: bytes, index: int, final: bool, ciphertext: bytes | memoryview
) -> bytes:
    return hmac_sha256(mac_key, b"".join((header, u64(index), u8(final), ciphertext)))


class _RecordStream:
    """What both stream directions keep: the buffered partial record, the record counter, the
    plaintext count, the running SHA-256 of the ciphertext and, once finalized, its digest."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._index = 0
        self._plaintext_size = 0
        self._hash = Sha256Stream()
        self._digest: bytes | None = None
        self._closed = False

    def _non_final_records(
        self,
        view: memoryview,
        pos: int,
        size: int,
        process: Callable[[bytes | bytearray | memoryview, bool], bytes],
    ) -> list[bytes]:
        """``process(record, False)`` for every ``size``-byte record of the buffer followed by
        ``view[pos:]`` that at least one more byte follows (only then is it known not to be the
        final record); the rest stays buffered. ``process`` must not keep the record it is
        given (the buffer is reused)."""
        out: list[bytes] = []
        buf = self._buf
        n = len(view)
        if len(buf) + (n - pos) > size:
            if buf:
                take = size - len(buf)
                buf += view[pos : pos + take]
                pos += take
                out.append(process(buf, False))
                buf.clear()
            while n - pos > size:
                out.append(process(view[pos : pos + size], False))
                pos += size
        buf += view[pos:]
        return out

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes so far: accepted (encryptor), or authenticated and released
        (decryptor)."""
        return self._plaintext_size

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole ciphertext (AttachmentPointer.digest), after a successful
        `finalize`.

        Raises:
            AttachmentError: called before `finalize` (or after a failed one).
        """
        if self._digest is None:
            raise AttachmentError("the digest is known only after finalize")
        return self._digest


class AttachmentEncryptor(_RecordStream):
    """Streaming encryptor. Feed plaintext with `update`, end with `finalize`; concatenate every
    returned piece (the first non-empty one starts with the header).

    Memory: one chunk of buffered plaintext plus what a single `update` call is given.

    Raises:
        InvalidKeyError: ``key`` is not 32 bytes (or ``nonce`` is given and not 32 bytes).
        AttachmentError: chunk size out of range; more than `MAX_ATTACHMENT_BYTES` of plaintext;
            use after `finalize`; non-bytes input.
    """

    ciphertext_size = staticmethod(ciphertext_size)

    def __init__(
        self, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE, *, nonce: bytes | None = None
    ) -> None:
        key = _check_key(key)
        _check_chunk_size(chunk_size)
        super().__init__()
        # ``nonce`` exists for known-answer tests. It is the HKDF salt, so even a reused
        # attachment key gets fresh subkeys per nonce; production callers leave it random.
        nonce = random_bytes(NONCE_LEN) if nonce is None else bytes(nonce)
        if len(nonce) != NONCE_LEN:
            raise InvalidKeyError("attachment nonce must be 32 bytes")
        enc_key, self._mac_key, commitment = _derive(key, nonce)
        self._ctr = Aes256CtrStream(enc_key, _INITIAL_COUNTER)
        self._chunk_size = chunk_size
        self._header = MAGIC + u8(FORMAT_VERSION) + u32(chunk_size) + nonce + commitment
        self._pending_header = True
        self._ciphertext_size = 0

    def __repr__(self) -> str:
        return f"AttachmentEncryptor(chunk_size={self._chunk_size}, <key hidden>)"

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    def _emit(self, parts: list[bytes]) -> bytes:
        out = b"".join(parts)
        self._hash.update(out)
        self._ciphertext_size += len(out)
        return out

    def _seal(self, chunk: bytes | bytearray | memoryview, final: bool) -> bytes:
        ciphertext = self._ctr.update(chunk)
        tag = _tag(self._mac_key, self._header, self._index, final, ciphertext)
        self._index += 1
        return ciphertext + tag

    def _start(self) -> list[bytes]:
        if self._pending_header:
            self._pending_header = False
            return [self._header]
        return []

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Encrypt more plaintext; returns the ciphertext now complete (possibly empty).

        A chunk is sealed only once a byte after it is known, because the last chunk must carry
        the final flag; so up to one chunk stays buffered until `finalize`.
        """
        if self._closed:
            raise AttachmentError("encryptor already finalized")
        if not isinstance(data, _BYTES_LIKE):
            raise AttachmentError("attachment data must be bytes")
        view = memoryview(data).cast("B")
        n = len(view)
        if self._plaintext_size + n > MAX_ATTACHMENT_BYTES:
            self._closed = True
            raise AttachmentError(f"attachment exceeds {MAX_ATTACHMENT_BYTES} bytes")
        self._plaintext_size += n
        parts = self._start()
        parts += self._non_final_records(view, 0, self._chunk_size, self._seal)
        return self._emit(parts)

    def finalize(self) -> bytes:
        """Seal the last (final) record and return the remaining ciphertext.

        Raises:
            AttachmentError: already finalized.
        """
        if self._closed:
            raise AttachmentError("encryptor already finalized")
        self._closed = True
        parts = self._start()
        parts.append(self._seal(self._buf, final=True))
        self._buf.clear()
        out = self._emit(parts)
        self._digest = self._hash.digest()
        return out


class AttachmentDecryptor(_RecordStream):
    """Streaming decryptor. Feed ciphertext in pieces of any size with `update` (which returns
    only plaintext whose record tag verified), then call `finalize` (which verifies the last
    record, the completeness of the stream and the digest, and returns the last plaintext).

    ``expected_digest`` (AttachmentPointer.digest), ``expected_size`` (AttachmentPointer.size)
    and ``expected_chunk_size`` (AttachmentPointer.chunk_size) are checked when given; a stream
    longer than ``expected_size`` allows is refused as soon as it is.

    After any error the decryptor is spent: every later call raises `AttachmentError`.

    Raises:
        InvalidKeyError: ``key`` is not 32 bytes.
        AttachmentError: (from `update` / `finalize`) bad header or version, wrong key, a record
            that fails authentication, truncation, trailing data, size or digest mismatch.
    """

    def __init__(
        self,
        key: bytes,
        expected_digest: bytes | None = None,
        *,
        expected_size: int | None = None,
        expected_chunk_size: int | None = None,
    ) -> None:
        self._key = _check_key(key)
        super().__init__()
        if expected_digest is not None and (
            not isinstance(expected_digest, bytes) or len(expected_digest) != DIGEST_LEN
        ):
            raise AttachmentError("expected digest must be 32 bytes")
        if expected_size is not None and (
            isinstance(expected_size, bool)
            or not isinstance(expected_size, int)
            or not 0 <= expected_size <= MAX_ATTACHMENT_BYTES
        ):
            raise AttachmentError(f"expected size is not between 0 and {MAX_ATTACHMENT_BYTES}")
        if expected_chunk_size is not None:
            _check_chunk_size(expected_chunk_size)
        self._expected_digest = expected_digest
        self._expected_size = expected_size
        self._expected_chunk_size = expected_chunk_size
        self._header: bytes | None = None
        self._mac_key = b""
        self._ctr: Aes256CtrStream | None = None
        self._chunk_size = 0
        self._record_size = 0
        self._max_ciphertext = 0
        self._received = 0

    def __repr__(self) -> str:
        return "AttachmentDecryptor(<key hidden>)"

    def _fail(self, reason: str) -> AttachmentError:
        self._closed = True
        self._buf = bytearray()
        return AttachmentError(reason)

    def _parse_header(self, header: bytes) -> None:
        if header[:4] != MAGIC:
            raise self._fail("not a Tidings attachment")
        if header[4] != FORMAT_VERSION:
            raise self._fail("unsupported attachment format version")
        chunk_size = int.from_bytes(header[5:9], "big")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise self._fail("attachment chunk size out of range")
        if self._expected_chunk_size is not None and chunk_size != self._expected_chunk_size:
            raise self._fail("attachment chunk size differs from the pointer")
        nonce = header[9 : 9 + NONCE_LEN]
        enc_key, mac_key, commitment = _derive(self._key, nonce)
        if not constant_time_equal(commitment, header[9 + NONCE_LEN :]):
            raise self._fail("attachment does not open under this key")
        self._header = header
        self._mac_key = mac_key
        self._ctr = Aes256CtrStream(enc_key, _INITIAL_COUNTER)
        self._chunk_size = chunk_size
        self._record_size = chunk_size + TAG_LEN
        limit = MAX_ATTACHMENT_BYTES if self._expected_size is None else self._expected_size
        self._max_ciphertext = ciphertext_size(limit, chunk_size)

    def _open(self, record: bytes | bytearray | memoryview, final: bool) -> bytes:
        assert self._header is not None and self._ctr is not None
        # Copy a bytearray (our own buffer, which the caller clears next); slice other input
        # through a memoryview so a full record from the caller's buffer is not copied twice.
        view = memoryview(bytes(record) if isinstance(record, bytearray) else record)
        ciphertext, tag = view[:-TAG_LEN], bytes(view[-TAG_LEN:])
        expected = _tag(self._mac_key, self._header, self._index, final, ciphertext)
        if not constant_time_equal(expected, tag):
            # Covers altered bytes, reordered/duplicated records (index), truncation at a
            # record boundary (final flag), and a header that was not the one MACed.
            raise self._fail(f"attachment record {self._index} failed authentication")
        self._index += 1
        self._plaintext_size += len(ciphertext)
        return self._ctr.update(ciphertext)

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume more ciphertext; return the plaintext of every record that is now complete,
        known to be non-final, and authenticated.

        Raises:
            AttachmentError: see the class.
        """
        if self._closed:
            raise AttachmentError("decryptor is finalized or has failed")
        if not isinstance(data, _BYTES_LIKE):
            raise self._fail("attachment data must be bytes")
        view = memoryview(data).cast("B")
        n = len(view)
        self._received += n
        self._hash.update(view)
        pos = 0
        if self._header is None:
            take = min(HEADER_LEN - len(self._buf), n)
            self._buf += view[:take]
            pos = take
            if len(self._buf) < HEADER_LEN:
                return b""
            header = bytes(self._buf)
            self._buf.clear()
            self._parse_header(header)
        if self._received > self._max_ciphertext:
            raise self._fail("attachment is longer than its size limit")
        plaintext = b"".join(self._non_final_records(view, pos, self._record_size, self._open))
        if self._expected_size is not None and self._plaintext_size > self._expected_size:
            raise self._fail("attachment is longer than its declared size")
        return plaintext

    def finalize(self) -> bytes:
        """Verify the final record and the whole stream; return the last plaintext.

        Raises:
            AttachmentError: truncated (no complete header or final record), the last record is
                not a final one, digest or size mismatch, or already finalized/failed.
        """
        if self._closed:
            raise AttachmentError("decryptor is finalized or has failed")
        if self._header is None:
            raise self._fail("attachment is truncated (incomplete header)")
        if len(self._buf) < TAG_LEN:
            raise self._fail("attachment is truncated")
        last = self._open(self._buf, final=True)
        self._closed = True
        self._buf = bytearray()
        digest = self._hash.digest()
        if self._expected_digest is not None and not constant_time_equal(
            digest, self._expected_digest
        ):
            raise AttachmentError("attachment digest does not match")
        if self._expected_size is not None and self._plaintext_size != self._expected_size:
            raise AttachmentError("attachment size differs from its declared size")
        self._digest = digest
        return last


# --- convenience ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptedAttachment:
    """What an AttachmentPointer needs after encrypting a file (the key is the caller's)."""

    digest: bytes
    plaintext_size: int
    ciphertext_size: int
    chunk_size: int


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def encrypt_stream(
    key: bytes, source: Iterable[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the ciphertext of the concatenated ``source`` pieces, piece by piece.

    Use `AttachmentEncryptor` directly when the digest is needed.
    """
    encryptor = AttachmentEncryptor(key, chunk_size)
    for piece in source:
        out = encryptor.update(piece)
        if out:
            yield out
    yield encryptor.finalize()


def decrypt_stream(
    key: bytes,
    source: Iterable[bytes],
    *,
    expected_digest: bytes | None = None,
    expected_size: int | None = None,
) -> Iterator[bytes]:
    """Yield authenticated plaintext as it becomes available. The generator raises
    `AttachmentError` at the point of failure, possibly after earlier pieces were yielded
    (truncation and the digest are known only at the end): treat output as provisional until
    the generator is exhausted without error."""
    decryptor = AttachmentDecryptor(key, expected_digest, expected_size=expected_size)
    for piece in source:
        out = decryptor.update(piece)
        if out:
            yield out
    last = decryptor.finalize()
    if last:
        yield last


def encrypt_file(
    key: bytes,
    source: _Readable,
    destination: _Writable,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EncryptedAttachment:
    """Encrypt an open binary stream into another; return digest and sizes for the pointer."""
    encryptor = AttachmentEncryptor(key, chunk_size)
    written = 0
    while piece := source.read(chunk_size):
        out = encryptor.update(piece)
        destination.write(out)
        written += len(out)
    out = encryptor.finalize()
    destination.write(out)
    written += len(out)
    return EncryptedAttachment(
        digest=encryptor.digest,
        plaintext_size=encryptor.plaintext_size,
        ciphertext_size=written,
        chunk_size=chunk_size,
    )


def decrypt_file(
    key: bytes,
    source: _Readable,
    destination: _Writable,
    *,
    expected_digest: bytes | None = None,
    expected_size: int | None = None,
    read_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Decrypt an open binary stream into another; return the plaintext size.

    On `AttachmentError` the destination may hold a verified prefix: discard it.
    """
    decryptor = AttachmentDecryptor(key, expected_digest, expected_size=expected_size)
    while piece := source.read(read_size):
        destination.write(decryptor.update(piece))
    destination.write(decryptor.finalize())
    return decryptor.plaintext_size


def encrypt_bytes(
    key: bytes, plaintext: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[bytes, bytes]:
    """One-shot encryption; returns (ciphertext, digest)."""
    encryptor = AttachmentEncryptor(key, chunk_size)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return ciphertext, encryptor.digest


def decrypt_bytes(
    key: bytes,
    ciphertext: bytes,
    expected_digest: bytes | None = None,
    *,
    expected_size: int | None = None,
) -> bytes:
    """One-shot decryption of a complete ciphertext.

    Raises:
        AttachmentError: see `AttachmentDecryptor`.
    """
    decryptor = AttachmentDecryptor(key, expected_digest, expected_size=expected_size)
    return decryptor.update(ciphertext) + decryptor.finalize()
