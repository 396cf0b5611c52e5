"""Symmetric building blocks shared by the Double Ratchet and sender keys.

- `chain_step`: the chain-key KDF (PROTOCOL.md KDF_CK): message key = HMAC-SHA256(ck, 0x01),
  next chain key = HMAC-SHA256(ck, 0x02).
- `seal` / `open_sealed`: the message encryption (PROTOCOL.md ENCRYPT): HKDF-SHA256(salt = 32
  zero bytes, IKM = message key, info) -> 80 bytes = encryption key (32) | authentication key
  (32) | IV (16); AES-256-CBC with PKCS#7; tag = HMAC-SHA256(authentication key, ad | ciphertext),
  32 bytes, appended to the ciphertext.

`open_sealed` checks the tag in constant time before any decryption, so a forged ciphertext
costs one HMAC and reveals nothing about padding.
"""

from __future__ import annotations

from tidings.crypto.primitives import (
    AES_BLOCK_LEN,
    HMAC_SHA256_LEN,
    HmacSha256Key,
    aes256_cbc_decrypt,
    aes256_cbc_encrypt,
    constant_time_equal,
    hkdf_sha256,
    hmac_sha256,
)
from tidings.errors import DecryptionError

_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"
_ZERO_SALT = bytes(32)

DR_MESSAGE_KEYS_INFO = b"Tidings_DR_MessageKeys_v1"
"""HKDF info of the Double Ratchet's message-key expansion (PROTOCOL.md)."""

TAG_LEN = HMAC_SHA256_LEN
MIN_SEALED_LEN = AES_BLOCK_LEN + TAG_LEN


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """Advance a symmetric chain: return (message key, next chain key)."""
    key = HmacSha256Key(chain_key)  # one key set-up for the two MACs
    return key.mac(_MESSAGE_KEY_SEED), key.mac(_CHAIN_KEY_SEED)


def _expand(message_key: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    okm = hkdf_sha256(message_key, salt=_ZERO_SALT, info=info, length=80)
    return okm[:32], okm[32:64], okm[64:]


def seal(message_key: bytes, plaintext: bytes, associated_data: bytes, info: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``; returns ciphertext | 32-byte tag."""
    enc_key, auth_key, iv = _expand(message_key, info)
    ciphertext = aes256_cbc_encrypt(enc_key, iv, plaintext)
    return ciphertext + hmac_sha256(auth_key, associated_data + ciphertext)


def open_sealed(message_key: bytes, sealed: bytes, associated_data: bytes, info: bytes) -> bytes:
    """Verify and decrypt the output of `seal`.

    Raises:
        DecryptionError: wrong length, wrong key, wrong associated data, or altered bytes.
    """
    body_len = len(sealed) - TAG_LEN
    if body_len < AES_BLOCK_LEN or body_len % AES_BLOCK_LEN:
        raise DecryptionError("ciphertext has an impossible length")
    enc_key, auth_key, iv = _expand(message_key, info)
    ciphertext, tag = sealed[:body_len], sealed[body_len:]
    if not constant_time_equal(hmac_sha256(auth_key, associated_data + ciphertext), tag):
        raise DecryptionError("message authentication failed")
    return aes256_cbc_decrypt(enc_key, iv, ciphertext)
