"""Attachments: streaming round trips, tamper/truncation/reorder detection, key commitment,
constant memory, and an independent reference decoder for the documented format."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import attachment
from tidings.crypto.attachment import (
    DEFAULT_CHUNK_SIZE,
    HEADER_LEN,
    MIN_CHUNK_SIZE,
    TAG_LEN,
    AttachmentDecryptor,
    AttachmentEncryptor,
    ciphertext_size,
    decrypt_bytes,
    decrypt_file,
    decrypt_stream,
    encrypt_bytes,
    encrypt_file,
    encrypt_stream,
    generate_key,
)
from tidings.errors import AttachmentError, InvalidKeyError, TidingsError

KEY = hashlib.sha256(b"attachment test key").digest()
KEY2 = hashlib.sha256(b"another attachment key").digest()
NONCE = hashlib.sha256(b"attachment test nonce").digest()
SMALL = MIN_CHUNK_SIZE  # 256: small chunks keep exhaustive tests fast


def records(ciphertext: bytes, chunk_size: int) -> tuple[bytes, list[bytes]]:
    body = ciphertext[HEADER_LEN:]
    size = chunk_size + TAG_LEN
    return ciphertext[:HEADER_LEN], [body[i : i + size] for i in range(0, len(body), size)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


# --- independent reference implementation of the documented format ----------------------------


def ref_derive(key: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
    okm = HKDF(hashes.SHA256(), 96, salt=nonce, info=b"Tidings_Attachment_v1").derive(key)
    return okm[:32], okm[32:64], okm[64:]


def ref_encrypt(key: bytes, nonce: bytes, plaintext: bytes, chunk_size: int) -> bytes:
    enc, mac, commitment = ref_derive(key, nonce)
    header = b"TDAT" + bytes([1]) + struct.pack(">I", chunk_size) + nonce + commitment
    ctr = Cipher(algorithms.AES(enc), modes.CTR(bytes(16))).encryptor()
    chunks = [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]
    out = [header]
    for i, chunk in enumerate(chunks):
        final = i == len(chunks) - 1
        c = ctr.update(chunk)
        tag = hmac.new(mac, header + struct.pack(">QB", i, final) + c, "sha256").digest()
        out.append(c + tag)
    return b"".join(out)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 5 * SMALL + 3),
    chunk_size=st.sampled_from([SMALL, SMALL + 1, 1000, 4096]),
)
def test_matches_independent_reference(size: int, chunk_size: int) -> None:
    plaintext = os.urandom(size)
    encryptor = AttachmentEncryptor(KEY, chunk_size, nonce=NONCE)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    assert ciphertext == ref_encrypt(KEY, NONCE, plaintext, chunk_size)
    assert encryptor.digest == hashlib.sha256(ciphertext).digest()


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    chunk_size=st.sampled_from([SMALL, SMALL + 1, 300, 1024]),
    chunks=st.integers(0, 4),
    delta=st.integers(-2, 2),
    enc_cuts=st.lists(st.integers(0, 10_000), max_size=6),
    dec_cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_round_trip_around_chunk_boundaries(
    chunk_size: int, chunks: int, delta: int, enc_cuts: list[int], dec_cuts: list[int]
) -> None:
    size = max(0, chunks * chunk_size + delta)
    plaintext = os.urandom(size)
    encryptor = AttachmentEncryptor(KEY, chunk_size)
    ciphertext = b"".join(encryptor.update(p) for p in split(plaintext, enc_cuts))
    ciphertext += encryptor.finalize()
    assert len(ciphertext) == ciphertext_size(size, chunk_size)
    assert encryptor.plaintext_size == size

    decryptor = AttachmentDecryptor(
        KEY, encryptor.digest, expected_size=size, expected_chunk_size=chunk_size
    )
    out = b"".join(decryptor.update(p) for p in split(ciphertext, dec_cuts))
    # Plaintext released before finalize is whole authenticated chunks, never the last one.
    assert len(out) % chunk_size == 0 and len(out) < max(size, 1)
    out += decryptor.finalize()
    assert out == plaintext
    assert decryptor.digest == encryptor.digest


def test_empty_attachment() -> None:
    ciphertext, digest = encrypt_bytes(KEY, b"")
    assert len(ciphertext) == HEADER_LEN + TAG_LEN == ciphertext_size(0)
    assert decrypt_bytes(KEY, ciphertext, digest) == b""


def test_ciphertext_size_formula() -> None:
    assert ciphertext_size(0, SMALL) == HEADER_LEN + TAG_LEN
    assert ciphertext_size(SMALL, SMALL) == HEADER_LEN + SMALL + TAG_LEN
    assert ciphertext_size(SMALL + 1, SMALL) == HEADER_LEN + SMALL + 1 + 2 * TAG_LEN
    assert AttachmentEncryptor.ciphertext_size(10, SMALL) == ciphertext_size(10, SMALL)
    with pytest.raises(AttachmentError):
        ciphertext_size(-1)
    with pytest.raises(AttachmentError):
        ciphertext_size(10, SMALL - 1)


# --- tampering ------------------------------------------------------------------------------


PLAINTEXT = bytes(range(256)) * 3 + b"tail"  # three full 256-byte chunks and a short final one
CIPHERTEXT, DIGEST = encrypt_bytes(KEY, PLAINTEXT, chunk_size=SMALL)


def test_every_bit_flip_is_detected() -> None:
    for i in range(len(CIPHERTEXT)):
        for bit in (0x01, 0x80):
            tampered = bytearray(CIPHERTEXT)
            tampered[i] ^= bit
            with pytest.raises(AttachmentError):
                decrypt_bytes(KEY, bytes(tampered))


def test_every_truncation_is_detected() -> None:
    for end in range(len(CIPHERTEXT)):
        with pytest.raises(AttachmentError):
            decrypt_bytes(KEY, CIPHERTEXT[:end])


def test_truncation_at_each_record_boundary_is_detected_as_such() -> None:
    header, recs = records(CIPHERTEXT, SMALL)
    assert len(recs) == 4
    for keep in range(len(recs)):
        decryptor = AttachmentDecryptor(KEY)
        # All kept records verify as non-final ones ...
        released = decryptor.update(header + b"".join(recs[:keep]))
        assert len(released) == max(0, keep - 1) * SMALL
        # ... but the last kept one was MACed with final = 0, so finalize refuses it.
        with pytest.raises(AttachmentError):
            decryptor.finalize()


def test_extension_after_the_final_record_is_detected() -> None:
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, CIPHERTEXT + b"\x00")
    _header, recs = records(CIPHERTEXT, SMALL)
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, CIPHERTEXT + recs[-1])


def test_reordered_dropped_and_duplicated_records_are_detected() -> None:
    header, recs = records(CIPHERTEXT, SMALL)
    variants = [
        [recs[1], recs[0], recs[2], recs[3]],
        [recs[0], recs[2], recs[1], recs[3]],
        [recs[0], recs[2], recs[3]],
        [recs[0], recs[0], recs[1], recs[2], recs[3]],
        [recs[0], recs[1], recs[3]],
    ]
    for variant in variants:
        with pytest.raises(AttachmentError):
            decrypt_bytes(KEY, header + b"".join(variant))


def test_records_cannot_be_spliced_between_attachments() -> None:
    other, _ = encrypt_bytes(KEY, PLAINTEXT, chunk_size=SMALL)  # same key, fresh nonce
    header, recs = records(CIPHERTEXT, SMALL)
    other_header, other_recs = records(other, SMALL)
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, header + other_recs[0] + b"".join(recs[1:]))
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, other_header + b"".join(recs))


def test_digest_size_and_chunk_size_mismatches() -> None:
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, CIPHERTEXT, hashlib.sha256(b"other").digest())
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, CIPHERTEXT, DIGEST, expected_size=len(PLAINTEXT) + 1)
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, CIPHERTEXT, DIGEST, expected_size=len(PLAINTEXT) - 1)
    decryptor = AttachmentDecryptor(KEY, expected_chunk_size=DEFAULT_CHUNK_SIZE)
    with pytest.raises(AttachmentError):
        decryptor.update(CIPHERTEXT)
    # A stream longer than its declared size is refused before the end.
    decryptor = AttachmentDecryptor(KEY, expected_size=SMALL)
    with pytest.raises(AttachmentError):
        decryptor.update(CIPHERTEXT[: HEADER_LEN + 3 * (SMALL + TAG_LEN)])


def test_malformed_headers() -> None:
    header = CIPHERTEXT[:HEADER_LEN]
    for bad in (
        b"XXXX" + header[4:],
        header[:4] + b"\x02" + header[5:],
        header[:5] + struct.pack(">I", MIN_CHUNK_SIZE - 1) + header[9:],
        header[:5] + struct.pack(">I", 2**32 - 1) + header[9:],
    ):
        with pytest.raises(AttachmentError):
            decrypt_bytes(KEY, bad + CIPHERTEXT[HEADER_LEN:])


# --- keys and key commitment ----------------------------------------------------------------


def test_wrong_key_is_refused_from_the_header_alone() -> None:
    decryptor = AttachmentDecryptor(KEY2)
    with pytest.raises(AttachmentError):
        decryptor.update(CIPHERTEXT[:HEADER_LEN])


def test_one_ciphertext_never_opens_under_two_keys() -> None:
    """The invisible-salamander attempt: an attacker who knows both keys tries to build one
    ciphertext that opens under each. Every combination of the two keys' headers and records
    fails under at least one key (in fact, under both, unless it is the honest ciphertext)."""
    plaintext_1, plaintext_2 = b"a" * 600, b"b" * 600
    ct1 = AttachmentEncryptor(KEY, SMALL, nonce=NONCE)
    c1 = ct1.update(plaintext_1) + ct1.finalize()
    ct2 = AttachmentEncryptor(KEY2, SMALL, nonce=NONCE)  # same nonce: the attacker's best case
    c2 = ct2.update(plaintext_2) + ct2.finalize()
    h1, r1 = records(c1, SMALL)
    h2, r2 = records(c2, SMALL)
    # Same nonce, different keys: the committed values in the headers differ.
    assert h1[:-32] == h2[:-32] and h1[-32:] != h2[-32:]
    candidates = [h + b"".join(r) for h in (h1, h2) for r in (r1, r2)]
    candidates += [h1[:-32] + h2[-32:] + b"".join(r1), h2[:-32] + h1[-32:] + b"".join(r2)]
    mixed = [r1[0], r2[1], r1[2]]
    candidates += [h + b"".join(mixed) for h in (h1, h2)]
    for candidate in candidates:
        opened = []
        for key in (KEY, KEY2):
            try:
                decrypt_bytes(key, candidate)
                opened.append(key)
            except AttachmentError:
                pass
        assert len(opened) <= 1
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY2, c1)
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, c2)


def test_key_and_nonce_validation() -> None:
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(InvalidKeyError):
            AttachmentEncryptor(bad)
        with pytest.raises(InvalidKeyError):
            AttachmentDecryptor(bad)
    with pytest.raises(InvalidKeyError):
        AttachmentEncryptor(KEY, nonce=bytes(16))
    for bad_size in (0, MIN_CHUNK_SIZE - 1, attachment.MAX_CHUNK_SIZE + 1):
        with pytest.raises(AttachmentError):
            AttachmentEncryptor(KEY, bad_size)
    with pytest.raises(AttachmentError):
        AttachmentDecryptor(KEY, bytes(31))
    assert len(generate_key()) == 32 and generate_key() != generate_key()


def test_fresh_nonce_per_encryption() -> None:
    a, _ = encrypt_bytes(KEY, b"same")
    b, _ = encrypt_bytes(KEY, b"same")
    assert a[9 : 9 + 32] != b[9 : 9 + 32] and a != b


# --- API discipline -------------------------------------------------------------------------


def test_misuse_raises_attachment_error() -> None:
    encryptor = AttachmentEncryptor(KEY)
    with pytest.raises(AttachmentError):
        _ = encryptor.digest
    with pytest.raises(AttachmentError):
        encryptor.update("text")  # type: ignore[arg-type]
    encryptor.finalize()
    with pytest.raises(AttachmentError):
        encryptor.update(b"x")
    with pytest.raises(AttachmentError):
        encryptor.finalize()
    decryptor = AttachmentDecryptor(KEY)
    with pytest.raises(AttachmentError):
        decryptor.finalize()  # no header
    with pytest.raises(AttachmentError):
        decryptor.update(b"x")  # spent after a failure
    decryptor = AttachmentDecryptor(KEY)
    with pytest.raises(AttachmentError):
        _ = decryptor.digest


def test_failure_poisons_the_decryptor() -> None:
    tampered = bytearray(CIPHERTEXT)
    tampered[HEADER_LEN + 5] ^= 1
    decryptor = AttachmentDecryptor(KEY)
    with pytest.raises(AttachmentError):
        decryptor.update(bytes(tampered))
    with pytest.raises(AttachmentError):
        decryptor.update(CIPHERTEXT[HEADER_LEN:])
    with pytest.raises(AttachmentError):
        decryptor.finalize()


def test_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attachment, "MAX_ATTACHMENT_BYTES", 1000)
    encryptor = AttachmentEncryptor(KEY, SMALL)
    encryptor.update(bytes(1000))
    with pytest.raises(AttachmentError):
        encryptor.update(b"x")
    ciphertext, _ = encrypt_bytes(KEY, bytes(1000), chunk_size=SMALL)
    assert decrypt_bytes(KEY, ciphertext) == bytes(1000)
    monkeypatch.setattr(attachment, "MAX_ATTACHMENT_BYTES", 999)
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, ciphertext)


def test_no_key_or_plaintext_in_repr_or_errors() -> None:
    assert KEY.hex() not in repr(AttachmentEncryptor(KEY)) + repr(AttachmentDecryptor(KEY))
    assert repr(KEY) not in repr(AttachmentEncryptor(KEY))
    try:
        decrypt_bytes(KEY2, CIPHERTEXT)
    except AttachmentError as exc:
        assert KEY2.hex() not in str(exc) and "tail" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1200), cuts=st.lists(st.integers(0, 2000), max_size=4))
def test_decryptor_raises_only_typed_errors_on_random_input(data: bytes, cuts: list[int]) -> None:
    decryptor = AttachmentDecryptor(KEY)
    try:
        for piece in split(data, cuts):
            decryptor.update(piece)
        decryptor.finalize()
    except TidingsError:
        return
    raise AssertionError("random bytes decrypted")


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, len(CIPHERTEXT) - 1), value=st.integers(1, 255))
def test_random_byte_changes_are_detected(position: int, value: int) -> None:
    tampered = bytearray(CIPHERTEXT)
    tampered[position] ^= value
    with pytest.raises(AttachmentError):
        decrypt_bytes(KEY, bytes(tampered), DIGEST)


# --- convenience helpers --------------------------------------------------------------------


def test_stream_and_file_helpers() -> None:
    plaintext = os.urandom(3 * SMALL + 17)
    pieces = list(encrypt_stream(KEY, [plaintext[:100], plaintext[100:]], chunk_size=SMALL))
    ciphertext = b"".join(pieces)
    assert b"".join(decrypt_stream(KEY, [ciphertext[:50], ciphertext[50:]])) == plaintext

    src, dst = io.BytesIO(plaintext), io.BytesIO()
    info = encrypt_file(KEY, src, dst, chunk_size=SMALL)
    assert info.plaintext_size == len(plaintext) and info.chunk_size == SMALL
    assert info.ciphertext_size == len(dst.getvalue()) == ciphertext_size(len(plaintext), SMALL)
    assert info.digest == hashlib.sha256(dst.getvalue()).digest()
    out = io.BytesIO()
    n = decrypt_file(
        KEY, io.BytesIO(dst.getvalue()), out, expected_digest=info.digest, read_size=77
    )
    assert n == len(plaintext) and out.getvalue() == plaintext

    gen = decrypt_stream(KEY, [dst.getvalue()[:-1]])
    with pytest.raises(AttachmentError):
        list(gen)


# --- constant memory ------------------------------------------------------------------------


def _generated(total: int, piece: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"memory test").digest() * (piece // 32)
    for i in range(total // piece):
        yield struct.pack(">Q", i) + block[8:]


def test_constant_memory_for_a_64_mib_stream() -> None:
    total, piece = 64 * 1024 * 1024, 64 * 1024
    plain_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    start = time.perf_counter()
    tracemalloc.start()
    try:
        encryptor = AttachmentEncryptor(KEY)
        decryptor = AttachmentDecryptor(KEY, expected_size=total)
        for data in _generated(total, piece):
            plain_hash.update(data)
            out_hash.update(decryptor.update(encryptor.update(data)))
        out_hash.update(decryptor.update(encryptor.finalize()))
        out_hash.update(decryptor.finalize())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert plain_hash.digest() == out_hash.digest()
    assert decryptor.plaintext_size == total
    assert decryptor.digest == encryptor.digest
    assert peak < 2 * 1024 * 1024, f"peak traced memory {peak} bytes"
    assert elapsed < 10
