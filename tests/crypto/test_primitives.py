"""The hazmat layer: HMAC/HKDF against RFC vectors and the library implementations, and the
typed errors of every wrapper."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import primitives as p
from tidings.errors import DecryptionError, InvalidKeyError, InvalidSignatureError

# RFC 4231, test cases 1-4, 6 and 7 (case 5 truncates the output, which we never do).
RFC4231 = [
    ("0b" * 20, b"Hi There".hex(),
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(),
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, "dd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    ("0102030405060708090a0b0c0d0e0f10111213141516171819", "cd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data."
     b" The key needs to be hashed before being used by the HMAC algorithm.".hex(),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]

# RFC 5869, test cases 1-3 (SHA-256).
RFC5869 = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    ("".join(f"{i:02x}" for i in range(0x00, 0x50)),
     "".join(f"{i:02x}" for i in range(0x60, 0xB0)),
     "".join(f"{i:02x}" for i in range(0xB0, 0x100)), 82,
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e"
     "590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
    ("0b" * 22, "", "", 42,
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]


@pytest.mark.parametrize(("key", "data", "mac"), RFC4231)
def test_hmac_sha256_rfc4231(key: str, data: str, mac: str) -> None:
    assert p.hmac_sha256(bytes.fromhex(key), bytes.fromhex(data)).hex() == mac


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=200), data=st.binary(max_size=2000))
def test_hmac_sha256_matches_the_standard_library(key: bytes, data: bytes) -> None:
    assert p.hmac_sha256(key, data) == hmac.digest(key, data, "sha256")


@pytest.mark.parametrize(("key", "data", "mac"), RFC4231)
def test_hmac_key_states_rfc4231(key: str, data: str, mac: str) -> None:
    k = p.HmacSha256Key(bytes.fromhex(key))
    # The copied states are not consumed: the same key gives the same MAC again.
    assert k.mac(bytes.fromhex(data)).hex() == mac
    assert k.mac(bytes.fromhex(data)).hex() == mac


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=200), messages=st.lists(st.binary(max_size=300), max_size=5))
def test_hmac_key_states_match_the_standard_library(key: bytes, messages: list[bytes]) -> None:
    k = p.HmacSha256Key(key)
    assert [k.mac(m) for m in messages] == [hmac.digest(key, m, "sha256") for m in messages]


def test_hmac_key_repr_hides_the_key() -> None:
    assert "aa" not in repr(p.HmacSha256Key(b"\xaa" * 32))


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
def test_hkdf_sha256_rfc5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    out = p.hkdf_sha256(
        bytes.fromhex(ikm), salt=bytes.fromhex(salt), info=bytes.fromhex(info), length=length
    )
    assert out.hex() == okm


@settings(max_examples=200, deadline=None)
@given(
    ikm=st.binary(max_size=100),
    salt=st.binary(max_size=100),
    info=st.binary(max_size=100),
    length=st.integers(1, 300),
)
def test_hkdf_sha256_matches_cryptography(
    ikm: bytes, salt: bytes, info: bytes, length: int
) -> None:
    expected = HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)
    assert p.hkdf_sha256(ikm, salt=salt, info=info, length=length) == expected


def test_hkdf_length_bounds() -> None:
    with pytest.raises(ValueError):
        p.hkdf_sha256(b"k", salt=b"", info=b"", length=255 * 32 + 1)


def test_x25519_refuses_bad_lengths_and_low_order_points() -> None:
    private, public = p.x25519_generate()
    with pytest.raises(InvalidKeyError):
        p.x25519(private[:31], public)
    with pytest.raises(InvalidKeyError):
        p.x25519(private, bytes(32))  # the identity point gives the all-zero secret
    other_private, other_public = p.x25519_generate()
    assert p.x25519(private, other_public) == p.x25519(other_private, public)


def test_ed25519_sign_verify_and_refusals() -> None:
    seed, public = p.ed25519_generate()
    signature = p.ed25519_sign(seed, b"message")
    assert p.ed25519_sign(p.ed25519_expand(seed), b"message") == signature
    p.ed25519_verify(public, b"message", signature)
    for args in [
        (public, b"massage", signature),
        (public, b"message", signature[:-1] + bytes([signature[-1] ^ 1])),
        (public[:31], b"message", signature),
        (public, b"message", signature[:63]),
    ]:
        with pytest.raises(InvalidSignatureError):
            p.ed25519_verify(*args)
    with pytest.raises(InvalidKeyError):
        p.ed25519_sign(b"short", b"m")


def test_mlkem768_round_trip_and_refusals() -> None:
    seed, public = p.mlkem768_generate()
    secret, ciphertext = p.mlkem768_encapsulate(public)
    assert p.mlkem768_decapsulate(seed, ciphertext) == secret
    with pytest.raises(InvalidKeyError):
        p.mlkem768_encapsulate(public[:-1])
    with pytest.raises(InvalidKeyError):
        p.mlkem768_decapsulate(seed, ciphertext[:-1])
    with pytest.raises(InvalidKeyError):
        p.mlkem768_decapsulate(seed[:32], ciphertext)


def test_cbc_padding_is_checked() -> None:
    key, iv = bytes(32), bytes(16)
    for n in range(0, 40):
        assert p.aes256_cbc_decrypt(key, iv, p.aes256_cbc_encrypt(key, iv, bytes(n))) == bytes(n)
    with pytest.raises(DecryptionError):
        p.aes256_cbc_decrypt(key, iv, bytes(15))
    with pytest.raises(DecryptionError):
        p.aes256_cbc_decrypt(key, iv, bytes(16))  # decrypts to garbage padding


def test_aes256_gcm_round_trip_binds_key_nonce_and_aad() -> None:
    # NIST SP 800-38D test case 13 (AES-256, zero key and nonce, empty plaintext): the tag.
    tag = p.aes256_gcm_encrypt(bytes(32), bytes(12), b"", b"")
    assert tag.hex() == "530f8afbc74536b9a963b4f1c4cb738b"
    key, nonce = bytes(range(32)), bytes(range(12))
    sealed = p.aes256_gcm_encrypt(key, nonce, b"JBSWY3DPEHPK3PXP", b"staff_1")
    assert p.aes256_gcm_decrypt(key, nonce, sealed, b"staff_1") == b"JBSWY3DPEHPK3PXP"
    for k, n, body, aad in (
        (bytes(32), nonce, sealed, b"staff_1"),
        (key, bytes(12), sealed, b"staff_1"),
        (key, nonce, sealed, b"staff_2"),
        (key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"staff_1"),
    ):
        with pytest.raises(DecryptionError):
            p.aes256_gcm_decrypt(k, n, body, aad)
    with pytest.raises(InvalidKeyError):
        p.aes256_gcm_encrypt(b"short", nonce, b"x", b"")
