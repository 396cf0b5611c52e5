"""The hazmat layer: thin, typed wrappers over `cryptography` and libsodium (PyNaCl).

Everything above this module (ratchet, handshake, sender keys, franking, attachments) uses these
functions and never a primitive library directly, so each primitive choice is made once, here.
Errors are `tidings.errors` exceptions; no function here logs or keeps state.

Choices, measured on the project machine (see docs/performance.md):
- Ed25519 through libsodium: verification is about twice as fast as through OpenSSL, and the
  signatures are identical (Ed25519 is deterministic).
- X25519 key generation through libsodium (`crypto_scalarmult_base`); X25519 agreement through
  libsodium as well, refusing the all-zero output.
- XChaCha20-Poly1305 (the client store's rows) and Argon2id (``crypto_pwhash``, the store's
  passphrase KDF) through libsodium: its 24-byte nonces are safe to draw at random.
- AES-256-GCM (evidence, staff TOTP secrets), AES-256-CBC / AES-256-CTR, HKDF-SHA256 and
  ML-KEM-768 through `cryptography`.
- HMAC-SHA256 is the standard construction (RFC 2104) written over the vetted SHA-256 of
  `hashlib` (CPython's own `hmac` module falls back to exactly this), not a new primitive:
  OpenSSL's one-shot HMAC pays an algorithm fetch and context set-up on every call (~1.5 us for
  a 1-byte MAC, more than the hashing), while `HmacSha256Key` computes a key's padded inner and
  outer SHA-256 states once and copies them per MAC (~0.6 us). The pads are built by integer
  XOR, never by a table indexed with key bytes (no key-dependent memory access). Checked against
  the RFC 4231 vectors and, on random inputs, against `hmac.digest`
  (tests/crypto/test_primitives.py); docs/performance.md has the figures.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import nacl.bindings as _sodium
import nacl.exceptions as _sodium_errors
import nacl.pwhash.argon2id as _argon2id
from cryptography.exceptions import InvalidTag as _InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM as _AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tidings.errors import DecryptionError, InvalidKeyError, InvalidSignatureError

KEY_LEN = 32
X25519_KEY_LEN = 32
ED25519_PUBLIC_KEY_LEN = 32
ED25519_SEED_LEN = 32
ED25519_SIGNATURE_LEN = 64
MLKEM768_SEED_LEN = 64
MLKEM768_PUBLIC_KEY_LEN = 1184
MLKEM768_CIPHERTEXT_LEN = 1088
MLKEM768_SHARED_SECRET_LEN = 32
AES_BLOCK_LEN = 16
AES_GCM_NONCE_LEN = 12
HMAC_SHA256_LEN = 32
XCHACHA20_POLY1305_NONCE_LEN = 24
AEAD_TAG_LEN = 16
"""The authentication tag both AEADs (AES-256-GCM, XChaCha20-Poly1305) append."""
ARGON2ID_SALT_LEN = 16
ARGON2ID_OPS_MIN = 1
ARGON2ID_MEM_MIN = 8192
"""The smallest Argon2id cost libsodium accepts: 1 pass over 8 KiB (tests only)."""

_ARGON2ID_OUTPUT_MIN = 16
_ZERO32 = bytes(32)

__all__ = [
    "AEAD_TAG_LEN",
    "ARGON2ID_MEM_MIN",
    "ARGON2ID_OPS_MIN",
    "ARGON2ID_SALT_LEN",
    "XCHACHA20_POLY1305_NONCE_LEN",
    "Aes256CtrStream",
    "HmacSha256Key",
    "Sha256Stream",
    "aes256_cbc_decrypt",
    "aes256_cbc_encrypt",
    "aes256_gcm_decrypt",
    "aes256_gcm_encrypt",
    "argon2id_kdf",
    "constant_time_equal",
    "ed25519_expand",
    "ed25519_generate",
    "ed25519_point_add",
    "ed25519_point_from_uniform",
    "ed25519_point_is_valid",
    "ed25519_point_sub",
    "ed25519_point_to_x25519",
    "ed25519_point_to_x25519_unchecked",
    "ed25519_public",
    "ed25519_scalar_from_wide",
    "ed25519_scalarmult",
    "ed25519_scalarmult_base",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "hmac_sha256",
    "mlkem768_decapsulate",
    "mlkem768_encapsulate",
    "mlkem768_generate",
    "mlkem768_public",
    "random_bytes",
    "sha256",
    "sha512",
    "shake256",
    "x25519",
    "x25519_generate",
    "x25519_public",
    "xchacha20poly1305_decrypt",
    "xchacha20poly1305_encrypt",
]


def random_bytes(n: int) -> bytes:
    """Return ``n`` bytes from the operating system's CSPRNG."""
    return os.urandom(n)


_SHA256_BLOCK_LEN = 64
_IPAD = int.from_bytes(b"\x36" * _SHA256_BLOCK_LEN, "big")
_OPAD = int.from_bytes(b"\x5c" * _SHA256_BLOCK_LEN, "big")


def _padded_key(key: bytes) -> int:
    """RFC 2104 K0: the key hashed if longer than a block, then zero-padded to one block (as an
    integer, so that the pads are an XOR of whole words, not per-byte lookups)."""
    if len(key) > _SHA256_BLOCK_LEN:
        key = hashlib.sha256(key).digest()
    return int.from_bytes(key, "big") << (8 * (_SHA256_BLOCK_LEN - len(key)))


class HmacSha256Key:
    """An HMAC-SHA256 key (RFC 2104) ready for many MACs: the SHA-256 states after
    ``K0 ^ ipad`` and ``K0 ^ opad`` are computed once and copied for every `mac`. Use it where
    one key MACs several messages (a chain step's two outputs, HKDF-Expand's blocks, an
    attachment's records); `hmac_sha256` serves a single MAC. Holds key material: no repr."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        k0 = _padded_key(key)
        self._inner = hashlib.sha256((k0 ^ _IPAD).to_bytes(_SHA256_BLOCK_LEN, "big"))
        self._outer = hashlib.sha256((k0 ^ _OPAD).to_bytes(_SHA256_BLOCK_LEN, "big"))

    def __repr__(self) -> str:
        return "HmacSha256Key(<secret>)"

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` (32 bytes)."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key`` (32 bytes out), RFC 2104 over two SHA-256 calls."""
    k0 = _padded_key(key)
    inner = hashlib.sha256((k0 ^ _IPAD).to_bytes(_SHA256_BLOCK_LEN, "big") + data).digest()
    return hashlib.sha256((k0 ^ _OPAD).to_bytes(_SHA256_BLOCK_LEN, "big") + inner).digest()


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (32 bytes out). Also the server's hash of a high-entropy credential
    (a device secret, a provisioning code): those are random, so a slow hash adds nothing."""
    return hashlib.sha256(data).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two MACs / digests / tokens without leaking where they differ (only whether the
    lengths differ). Text is compared by its encoding: callers pass ``str.encode()``, which,
    unlike `hmac.compare_digest` on ``str``, never raises for non-ASCII input."""
    return hmac.compare_digest(a, b)


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract then expand) of ``length`` bytes.

    Through `cryptography` (OpenSSL): measured here, its one call (3.6 us for 80 bytes) beats
    the same HKDF over `hashlib` one-shots, even unrolled with precomputed zero-salt pads
    (3.9-4.2 us), so HMAC's fast path stops at HMAC (docs/performance.md).
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def _pkcs7_pad(data: bytes) -> bytes:
    n = AES_BLOCK_LEN - len(data) % AES_BLOCK_LEN
    return data + bytes((n,)) * n


def aes256_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding. The caller authenticates the result."""
    enc = Cipher(algorithms.AES256(key), modes.CBC(iv)).encryptor()
    return enc.update(_pkcs7_pad(plaintext)) + enc.finalize()


def aes256_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Inverse of `aes256_cbc_encrypt`. Call only after the MAC has verified.

    Raises:
        DecryptionError: the length is not whole blocks or the padding is malformed.
    """
    if not ciphertext or len(ciphertext) % AES_BLOCK_LEN:
        raise DecryptionError("ciphertext is not a whole number of blocks")
    dec = Cipher(algorithms.AES256(key), modes.CBC(iv)).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    n = padded[-1]
    # The MAC has already authenticated these bytes, so a padding check here cannot become a
    # padding oracle; it only catches a sender that produced garbage.
    if not 1 <= n <= AES_BLOCK_LEN or padded[-n:] != bytes((n,)) * n:
        raise DecryptionError("bad padding")
    return padded[:-n]


def aes256_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: ciphertext || 16-byte tag. ``nonce`` (12 bytes) must never repeat under
    ``key`` (callers use random nonces on low-volume data).

    Raises:
        InvalidKeyError: the key is not 32 bytes or the nonce not 12.
    """
    if len(key) != KEY_LEN or len(nonce) != AES_GCM_NONCE_LEN:
        raise InvalidKeyError("AES-256-GCM needs a 32-byte key and a 12-byte nonce")
    return _AESGCM(key).encrypt(nonce, plaintext, aad)


def aes256_gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of `aes256_gcm_encrypt`.

    Raises:
        InvalidKeyError: the key is not 32 bytes or the nonce not 12.
        DecryptionError: the tag does not verify (wrong key, wrong aad, tampered bytes).
    """
    if len(key) != KEY_LEN or len(nonce) != AES_GCM_NONCE_LEN:
        raise InvalidKeyError("AES-256-GCM needs a 32-byte key and a 12-byte nonce")
    try:
        return _AESGCM(key).decrypt(nonce, ciphertext, aad)
    except _InvalidTag:
        raise DecryptionError("AES-256-GCM authentication failed") from None


# --- XChaCha20-Poly1305 and Argon2id (the client store) -------------------------------------


def _check_xchacha(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_LEN or len(nonce) != XCHACHA20_POLY1305_NONCE_LEN:
        raise InvalidKeyError("XChaCha20-Poly1305 needs a 32-byte key and a 24-byte nonce")


def xchacha20poly1305_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 (libsodium's IETF construction): ciphertext || 16-byte tag. The
    24-byte ``nonce`` is long enough to be drawn at random for every message under one key.

    Raises:
        InvalidKeyError: the key is not 32 bytes or the nonce not 24.
    """
    _check_xchacha(key, nonce)
    return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key))


def xchacha20poly1305_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of `xchacha20poly1305_encrypt`.

    Raises:
        InvalidKeyError: the key is not 32 bytes or the nonce not 24.
        DecryptionError: the tag does not verify (wrong key, wrong aad, tampered or truncated
            bytes).
    """
    _check_xchacha(key, nonce)
    if len(ciphertext) < AEAD_TAG_LEN:  # libsodium's binding would fail on the length instead
        raise DecryptionError("XChaCha20-Poly1305 ciphertext is shorter than its tag")
    try:
        return bytes(
            _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
        )
    except _sodium_errors.CryptoError:
        raise DecryptionError("XChaCha20-Poly1305 authentication failed") from None


def argon2id_kdf(passphrase: bytes, salt: bytes, *, ops: int, mem: int, length: int) -> bytes:
    """Argon2id v1.3 (libsodium ``crypto_pwhash`` ALG_ARGON2ID13, one lane): ``length`` bytes
    derived from ``passphrase`` with ``ops`` passes over ``mem`` bytes of memory.

    Raises:
        InvalidKeyError: the salt is not 16 bytes, ``length`` is under 16, ``ops``/``mem`` are
            outside libsodium's range (at least 1 pass and 8 KiB), or the memory cannot be had.
    """
    if len(salt) != ARGON2ID_SALT_LEN:
        raise InvalidKeyError("Argon2id needs a 16-byte salt")
    if ops < ARGON2ID_OPS_MIN or mem < ARGON2ID_MEM_MIN or length < _ARGON2ID_OUTPUT_MIN:
        raise InvalidKeyError("Argon2id parameters are below libsodium's minimum")
    try:
        return bytes(_argon2id.kdf(length, passphrase, salt, opslimit=ops, memlimit=mem))
    except (_sodium_errors.CryptoError, ValueError, MemoryError) as exc:
        raise InvalidKeyError("Argon2id parameters are not usable") from exc


# --- X25519 ---------------------------------------------------------------------------------


def x25519_generate() -> tuple[bytes, bytes]:
    """Return a fresh (private, public) X25519 key pair as raw 32-byte strings."""
    private = os.urandom(X25519_KEY_LEN)
    return private, _sodium.crypto_scalarmult_base(private)


def x25519_public(private: bytes) -> bytes:
    """The public key of a raw X25519 private key (clamping is applied by X25519 itself)."""
    if len(private) != X25519_KEY_LEN:
        raise InvalidKeyError("X25519 private key must be 32 bytes")
    return bytes(_sodium.crypto_scalarmult_base(private))


def x25519(private: bytes, public: bytes) -> bytes:
    """X25519 agreement. Raises `InvalidKeyError` on a bad length or an all-zero output."""
    if len(private) != X25519_KEY_LEN or len(public) != X25519_KEY_LEN:
        raise InvalidKeyError("X25519 keys must be 32 bytes")
    try:
        out = bytes(_sodium.crypto_scalarmult(private, public))
    except _sodium_errors.RuntimeError as exc:  # libsodium refuses low-order points
        raise InvalidKeyError("X25519 agreement with a low-order public key") from exc
    if hmac.compare_digest(out, _ZERO32):
        raise InvalidKeyError("X25519 agreement produced the all-zero secret")
    return out


# --- Ed25519 --------------------------------------------------------------------------------


def ed25519_generate() -> tuple[bytes, bytes]:
    """Return a fresh (seed, public) Ed25519 key pair; the 32-byte seed is the private key."""
    seed = os.urandom(ED25519_SEED_LEN)
    return seed, ed25519_public(seed)


def ed25519_public(seed: bytes) -> bytes:
    if len(seed) != ED25519_SEED_LEN:
        raise InvalidKeyError("Ed25519 seed must be 32 bytes")
    public, _ = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(public)


def ed25519_expand(seed: bytes) -> bytes:
    """The 64-byte libsodium signing key for ``seed``; cache it where one key signs often."""
    if len(seed) != ED25519_SEED_LEN:
        raise InvalidKeyError("Ed25519 seed must be 32 bytes")
    _, secret = _sodium.crypto_sign_seed_keypair(seed)
    return bytes(secret)


def ed25519_sign(signing_key: bytes, message: bytes) -> bytes:
    """Sign ``message``. ``signing_key`` is a 32-byte seed or its 64-byte expansion."""
    if len(signing_key) == ED25519_SEED_LEN:
        signing_key = ed25519_expand(signing_key)
    elif len(signing_key) != 2 * ED25519_SEED_LEN:
        raise InvalidKeyError("Ed25519 signing key must be 32 or 64 bytes")
    return bytes(_sodium.crypto_sign(message, signing_key)[:ED25519_SIGNATURE_LEN])


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature. Raises `InvalidSignatureError` if it does not verify."""
    if len(public) != ED25519_PUBLIC_KEY_LEN or len(signature) != ED25519_SIGNATURE_LEN:
        raise InvalidSignatureError("malformed Ed25519 key or signature")
    try:
        _sodium.crypto_sign_open(signature + message, public)
    except (_sodium_errors.BadSignatureError, _sodium_errors.RuntimeError, ValueError) as exc:
        raise InvalidSignatureError("signature does not verify") from exc


# --- ML-KEM-768 -----------------------------------------------------------------------------


def mlkem768_generate() -> tuple[bytes, bytes]:
    """Return a fresh (seed, public) ML-KEM-768 pair; the 64-byte seed is the private key."""
    seed = os.urandom(MLKEM768_SEED_LEN)
    return seed, mlkem768_public(seed)


def _mlkem_private(seed: bytes) -> mlkem.MLKEM768PrivateKey:
    if len(seed) != MLKEM768_SEED_LEN:
        raise InvalidKeyError("ML-KEM-768 seed must be 64 bytes")
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)


def mlkem768_public(seed: bytes) -> bytes:
    return _mlkem_private(seed).public_key().public_bytes_raw()


def mlkem768_encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to ``public``; return (shared secret, ciphertext)."""
    if len(public) != MLKEM768_PUBLIC_KEY_LEN:
        raise InvalidKeyError("ML-KEM-768 public key must be 1184 bytes")
    try:
        key = mlkem.MLKEM768PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise InvalidKeyError("ML-KEM-768 public key is malformed") from exc
    shared, ciphertext = key.encapsulate()
    return bytes(shared), bytes(ciphertext)


def mlkem768_decapsulate(seed: bytes, ciphertext: bytes) -> bytes:
    """Decapsulate ``ciphertext``. ML-KEM never fails on a wrong ciphertext (implicit
    rejection): it returns an unrelated secret, and the handshake's first MAC then fails."""
    if len(ciphertext) != MLKEM768_CIPHERTEXT_LEN:
        raise InvalidKeyError("ML-KEM-768 ciphertext must be 1088 bytes")
    try:
        return bytes(_mlkem_private(seed).decapsulate(ciphertext))
    except (ValueError, _InvalidTag) as exc:
        raise InvalidKeyError("ML-KEM-768 ciphertext is malformed") from exc


# --- streaming AES-256-CTR, SHA-256 and one-shot SHA-512 (attachments, safety numbers) -------


class Aes256CtrStream:
    """AES-256-CTR over a sequence of `update` calls, as one continuous keystream.

    The 16-byte ``initial_counter_block`` is the first counter block; it is incremented as a
    128-bit big-endian integer per block, and partial blocks carry over between calls, so
    ``update(a) + update(b) == update(a + b)``. Encryption and decryption are the same
    operation. CTR is malleable: the caller authenticates the ciphertext (encrypt-then-MAC) and
    decrypts only what has verified.
    """

    __slots__ = ("_ctx",)

    def __init__(self, key: bytes, initial_counter_block: bytes) -> None:
        if len(key) != KEY_LEN:
            raise InvalidKeyError("AES-256 key must be 32 bytes")
        if len(initial_counter_block) != AES_BLOCK_LEN:
            raise InvalidKeyError("AES-CTR counter block must be 16 bytes")
        self._ctx = Cipher(algorithms.AES256(key), modes.CTR(initial_counter_block)).encryptor()

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """XOR the next ``len(data)`` keystream bytes into ``data``."""
        return self._ctx.update(data)

    def __repr__(self) -> str:
        return "Aes256CtrStream(<key hidden>)"


class Sha256Stream:
    """Incremental SHA-256 (for digests of data that is never held in memory at once)."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()


def sha512(data: bytes) -> bytes:
    """SHA-512 of ``data`` (64 bytes out)."""
    return hashlib.sha512(data).digest()


def shake256(data: bytes, length: int) -> bytes:
    """SHAKE-256 (FIPS 202) of ``data``, ``length`` bytes out: the PSI layer's deterministic
    derivations (LSH bit positions, OKVS slot indices) draw from it."""
    return hashlib.shake_256(data).digest(length)


# --- edwards25519 group operations (private threshold matching, crypto/psi.py) ---------------
# libsodium's crypto_core_ed25519_* and crypto_scalarmult_ed25519_*: the vetted group law; the
# PSI layer never touches a coordinate itself. Points are 32-byte compressed encodings.

ED25519_POINT_LEN = 32
ED25519_SCALAR_LEN = 32
ED25519_WIDE_SCALAR_LEN = 64


def ed25519_point_from_uniform(uniform: bytes) -> bytes:
    """The Elligator 2 map of 32 uniform bytes to a point of the prime-order subgroup
    (libsodium ``crypto_core_ed25519_from_uniform``: the cofactor is cleared)."""
    if len(uniform) != ED25519_POINT_LEN:
        raise InvalidKeyError("from_uniform needs 32 bytes")
    return bytes(_sodium.crypto_core_ed25519_from_uniform(uniform))


def ed25519_point_is_valid(point: bytes) -> bool:
    """True when ``point`` is a canonical encoding of a point of the prime-order subgroup other
    than a small-order point (libsodium ``crypto_core_ed25519_is_valid_point``)."""
    return len(point) == ED25519_POINT_LEN and bool(
        _sodium.crypto_core_ed25519_is_valid_point(point)
    )


def ed25519_point_add(p: bytes, q: bytes) -> bytes:
    """``p + q``. Raises `InvalidKeyError` when either is not a point on the curve."""
    try:
        return bytes(_sodium.crypto_core_ed25519_add(p, q))
    except (_sodium_errors.RuntimeError, _sodium_errors.TypeError, ValueError) as exc:
        raise InvalidKeyError("not an edwards25519 point") from exc


def ed25519_point_sub(p: bytes, q: bytes) -> bytes:
    """``p - q``. Raises `InvalidKeyError` when either is not a point on the curve."""
    try:
        return bytes(_sodium.crypto_core_ed25519_sub(p, q))
    except (_sodium_errors.RuntimeError, _sodium_errors.TypeError, ValueError) as exc:
        raise InvalidKeyError("not an edwards25519 point") from exc


def ed25519_scalar_from_wide(wide: bytes) -> bytes:
    """A scalar mod L from 64 uniform bytes (``crypto_core_ed25519_scalar_reduce``): the bias is
    below 2^-250."""
    if len(wide) != ED25519_WIDE_SCALAR_LEN:
        raise InvalidKeyError("a wide scalar is 64 bytes")
    return bytes(_sodium.crypto_core_ed25519_scalar_reduce(wide))


def ed25519_scalarmult(scalar: bytes, point: bytes) -> bytes:
    """``scalar · point`` without clamping (``crypto_scalarmult_ed25519_noclamp``). libsodium
    refuses a point outside the prime-order subgroup, a small-order point and an identity
    result; each of those raises `InvalidKeyError`."""
    if len(scalar) != ED25519_SCALAR_LEN or len(point) != ED25519_POINT_LEN:
        raise InvalidKeyError("scalar and point are 32 bytes each")
    try:
        return bytes(_sodium.crypto_scalarmult_ed25519_noclamp(scalar, point))
    except (_sodium_errors.RuntimeError, _sodium_errors.TypeError, ValueError) as exc:
        raise InvalidKeyError("scalar multiplication refused the point") from exc


def ed25519_scalarmult_base(scalar: bytes) -> bytes:
    """``scalar · G`` without clamping (``crypto_scalarmult_ed25519_base_noclamp``). Raises
    `InvalidKeyError` for a zero scalar (identity result) or a bad length."""
    if len(scalar) != ED25519_SCALAR_LEN:
        raise InvalidKeyError("a scalar is 32 bytes")
    try:
        return bytes(_sodium.crypto_scalarmult_ed25519_base_noclamp(scalar))
    except (_sodium_errors.RuntimeError, _sodium_errors.TypeError, ValueError) as exc:
        raise InvalidKeyError("base multiplication gave the identity") from exc


_P25519 = 2**255 - 19


def ed25519_point_to_x25519_unchecked(point: bytes) -> bytes:
    """The Montgomery u-coordinate ``(1 + y) / (1 - y) mod 2^255 - 19`` of an edwards25519
    point encoding (RFC 7748 section 4.1's birational map), *without* libsodium's check that the
    point is of prime order.

    Only for points whose order does not matter to the caller: outputs of
    `ed25519_point_from_uniform` (prime order by construction), or points multiplied by a
    clamped X25519 scalar (a multiple of the cofactor 8, which clears any small-order part;
    Curve25519 is twist-secure, so an encoding off the curve leaks nothing of the scalar
    either). Written here because libsodium's only conversion,
    ``crypto_sign_ed25519_pk_to_curve25519``, always runs that subgroup check, a scalar
    multiplication that cost 47 us of a voucher element's 240 (bench/psi_costs.py). The
    result equals libsodium's on every valid point (tests/crypto/test_primitives.py).

    Raises:
        InvalidKeyError: not 32 bytes, a non-canonical y, or y = 1 (the neutral point, which
            has no u-coordinate).
    """
    if len(point) != ED25519_POINT_LEN:
        raise InvalidKeyError("a point is 32 bytes")
    y = int.from_bytes(point, "little") & ((1 << 255) - 1)  # the top bit is x's sign
    if y >= _P25519 or y == 1:
        raise InvalidKeyError("not an edwards25519 point with a u-coordinate")
    u = (1 + y) * pow(1 - y, -1, _P25519) % _P25519
    return u.to_bytes(32, "little")


def ed25519_point_to_x25519(point: bytes) -> bytes:
    """The Montgomery u-coordinate ``(1 + y) / (1 - y)`` of an edwards25519 point
    (``crypto_sign_ed25519_pk_to_curve25519``), so that ``x25519(k, u(P)) == u(k · P)``.
    libsodium checks the point is canonical, of prime order and not small order; a point that
    fails raises `InvalidKeyError`."""
    if len(point) != ED25519_POINT_LEN:
        raise InvalidKeyError("a point is 32 bytes")
    try:
        return bytes(_sodium.crypto_sign_ed25519_pk_to_curve25519(point))
    except (_sodium_errors.RuntimeError, _sodium_errors.TypeError, ValueError) as exc:
        raise InvalidKeyError("not a valid prime-order edwards25519 point") from exc


# --- edwards25519 points of any order (the VRF, crypto/vrf.py) -------------------------------
# RFC 9381's ECVRF decodes points without a subgroup check (string_to_point is RFC 8032's
# decoding) and clears the cofactor itself. libsodium's scalar multiplications refuse points
# outside the prime-order subgroup, but ``crypto_core_ed25519_add``/``_sub`` accept any point on
# the curve (small-order and mixed-order ones included; only an encoding that is not on the
# curve fails), so the helpers below are built from those additions and libsodium's
# prime-order multiplication, never from coordinates.

ED25519_IDENTITY = b"\x01" + bytes(31)
"""The encoding of the neutral element (x = 0, y = 1)."""

ED25519_BASEPOINT = bytes.fromhex(
    "5866666666666666666666666666666666666666666666666666666666666666"
)
"""The encoding of RFC 8032's base point B."""

ED25519_GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the prime-order subgroup (RFC 8032 section 5.1)."""


def ed25519_point_decode_any(point: bytes) -> bytes:
    """``point`` if it is a valid RFC 8032 (section 5.1.3) encoding of a point on the curve, of
    any order: canonical y below 2^255 - 19, on the curve, and not x = 0 with the sign bit set.

    libsodium decodes with ``crypto_core_ed25519_add(point, identity)`` (which fails for an
    encoding off the curve) and re-encodes canonically; the encoding is accepted only when the
    round trip returns it unchanged, which refuses a non-canonical y and a negative zero x.

    Raises:
        InvalidKeyError: not 32 bytes, or not a canonical encoding of a curve point.
    """
    if len(point) != ED25519_POINT_LEN:
        raise InvalidKeyError("a point is 32 bytes")
    try:
        again = bytes(_sodium.crypto_core_ed25519_add(point, ED25519_IDENTITY))
    except (_sodium_errors.RuntimeError, _sodium_errors.TypeError, ValueError) as exc:
        raise InvalidKeyError("not an edwards25519 point") from exc
    if not hmac.compare_digest(again, point):
        raise InvalidKeyError("not a canonical edwards25519 point encoding")
    return point


def ed25519_point_mul_cofactor(point: bytes) -> bytes:
    """``8 · point`` for a point of any order, by three libsodium doublings (``P + P``). The
    result is in the prime-order subgroup; it is the identity exactly when ``point`` has small
    order. Raises `InvalidKeyError` when ``point`` is not on the curve."""
    for _ in range(3):
        point = ed25519_point_add(point, point)
    return point


def ed25519_scalarmult_any(scalar: int, point: bytes) -> bytes:
    """``scalar · point`` for a point of any order (small, mixed or prime) and ``0 <= scalar <
    2^256``; the identity is a valid result.

    Writes ``scalar = 8q + r`` (0 <= r < 8), so ``scalar · P = q · (8P) + r · P``: ``8P`` lies in
    the prime-order subgroup, where libsodium's ``crypto_scalarmult_ed25519_noclamp`` takes
    ``q mod L``; ``r · P`` is at most seven libsodium additions. Variable time in ``r`` and
    in whether a term is the identity: only for *public* scalars (VRF verification).

    Raises:
        InvalidKeyError: ``point`` is not on the curve, or ``scalar`` is out of range.
    """
    if not 0 <= scalar < 2**256:
        raise InvalidKeyError("scalar out of range")
    high, low = divmod(scalar, 8)
    cleared = ed25519_point_mul_cofactor(point)
    q = high % ED25519_GROUP_ORDER
    if q == 0 or hmac.compare_digest(cleared, ED25519_IDENTITY):
        result = ED25519_IDENTITY
    else:
        result = ed25519_scalarmult(q.to_bytes(ED25519_SCALAR_LEN, "little"), cleared)
    for _ in range(low):
        result = ed25519_point_add(result, point)
    return result


def ed25519_scalar_add(a: bytes, b: bytes) -> bytes:
    """``a + b mod L`` (``crypto_core_ed25519_scalar_add``); 32-byte little-endian scalars."""
    if len(a) != ED25519_SCALAR_LEN or len(b) != ED25519_SCALAR_LEN:
        raise InvalidKeyError("a scalar is 32 bytes")
    return bytes(_sodium.crypto_core_ed25519_scalar_add(a, b))


def ed25519_scalar_mul(a: bytes, b: bytes) -> bytes:
    """``a · b mod L`` (``crypto_core_ed25519_scalar_mul``); 32-byte little-endian scalars."""
    if len(a) != ED25519_SCALAR_LEN or len(b) != ED25519_SCALAR_LEN:
        raise InvalidKeyError("a scalar is 32 bytes")
    return bytes(_sodium.crypto_core_ed25519_scalar_mul(a, b))
