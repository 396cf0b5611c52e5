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


# McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256, 60-byte
# plaintext, 20-byte AAD); also NIST's gcmEncryptExtIV256 vectors.
GCM_TC16 = {
    "key": "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    "nonce": "cafebabefacedbaddecaf888",
    "plaintext": "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    "aad": "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    "ciphertext": "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    "tag": "76fc6ece0f4e1768cddf8853bb2d551b",
}

# draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305).
XCHACHA_A31 = {
    "key": "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    "nonce": "404142434445464748494a4b4c4d4e4f5051525354555657",
    "plaintext": b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip"
    b" for the future, sunscreen would be it.".hex(),
    "aad": "50515253c0c1c2c3c4c5c6c7",
    "ciphertext": "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e",
    "tag": "c0875924c1c7987947deafd8780acf49",
}


def _vector(v: dict[str, str]) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    return (
        bytes.fromhex(v["key"]),
        bytes.fromhex(v["nonce"]),
        bytes.fromhex(v["plaintext"]),
        bytes.fromhex(v["aad"]),
        bytes.fromhex(v["ciphertext"] + v["tag"]),
    )


def test_aes256_gcm_mcgrew_viega_test_case_16() -> None:
    key, nonce, plaintext, aad, sealed = _vector(GCM_TC16)
    assert p.aes256_gcm_encrypt(key, nonce, plaintext, aad) == sealed
    assert p.aes256_gcm_decrypt(key, nonce, sealed, aad) == plaintext
    with pytest.raises(DecryptionError):
        p.aes256_gcm_decrypt(key, nonce, sealed[: -p.AEAD_TAG_LEN], aad)  # tag cut off
    with pytest.raises(InvalidKeyError):
        p.aes256_gcm_decrypt(key, nonce[:-1], sealed, aad)


def test_xchacha20poly1305_draft_vector_a31() -> None:
    key, nonce, plaintext, aad, sealed = _vector(XCHACHA_A31)
    assert p.xchacha20poly1305_encrypt(key, nonce, plaintext, aad) == sealed
    assert p.xchacha20poly1305_decrypt(key, nonce, sealed, aad) == plaintext


def test_xchacha20poly1305_refuses_tampering_and_bad_lengths() -> None:
    key, nonce, plaintext, aad, sealed = _vector(XCHACHA_A31)
    flipped = sealed[:5] + bytes([sealed[5] ^ 0x80]) + sealed[6:]
    for k, n, body, ad in (
        (bytes(32), nonce, sealed, aad),  # wrong key
        (key, bytes(24), sealed, aad),  # wrong nonce
        (key, nonce, sealed, aad + b"x"),  # wrong associated data
        (key, nonce, flipped, aad),  # one ciphertext bit
        (key, nonce, sealed[:-1], aad),  # truncated tag
        (key, nonce, b"", aad),  # nothing at all
    ):
        with pytest.raises(DecryptionError):
            p.xchacha20poly1305_decrypt(k, n, body, ad)
    for k, n in ((key[:31], nonce), (key, nonce[:12]), (key + b"\0", nonce)):
        with pytest.raises(InvalidKeyError):
            p.xchacha20poly1305_encrypt(k, n, plaintext, aad)
        with pytest.raises(InvalidKeyError):
            p.xchacha20poly1305_decrypt(k, n, sealed, aad)


# Argon2id v1.3, one lane, 32-byte output, salt "ABCDEFGHIJKLMNOP": outputs of the reference
# implementation's CLI (`echo -n 123 | argon2 ABCDEFGHIJKLMNOP -id -v 13 -k 1024 -t 5`, and
# -k 8192 -t 2), an implementation independent of libsodium.
ARGON2ID_REFERENCE = [
    (5, 1024 * 1024, "3c5d010180ba0cf5b6b858cba23b318e42d33088983c404598599c3b029ecac6"),
    (2, 8 * 1024 * 1024, "3ee950488d26ce691657b1d753f562139857b61a58f234d6cb0ce84c4cc27328"),
]


@pytest.mark.parametrize(("ops", "mem", "out"), ARGON2ID_REFERENCE)
def test_argon2id_kdf_matches_the_reference_implementation(ops: int, mem: int, out: str) -> None:
    salt = b"ABCDEFGHIJKLMNOP"
    assert p.argon2id_kdf(b"123", salt, ops=ops, mem=mem, length=32).hex() == out


def test_argon2id_kdf_depends_on_every_input_and_refuses_bad_parameters() -> None:
    salt = bytes(range(16))
    cheap = {"ops": p.ARGON2ID_OPS_MIN, "mem": p.ARGON2ID_MEM_MIN}
    base = p.argon2id_kdf(b"pass", salt, length=32, **cheap)
    assert len(base) == 32
    assert p.argon2id_kdf(b"pass", salt, length=32, **cheap) == base  # deterministic
    assert p.argon2id_kdf(b"pasS", salt, length=32, **cheap) != base
    assert p.argon2id_kdf(b"pass", bytes(16), length=32, **cheap) != base
    assert p.argon2id_kdf(b"pass", salt, ops=2, mem=p.ARGON2ID_MEM_MIN, length=32) != base
    assert p.argon2id_kdf(b"pass", salt, ops=1, mem=2 * p.ARGON2ID_MEM_MIN, length=32) != base
    for bad_salt in (b"", bytes(15), bytes(17)):
        with pytest.raises(InvalidKeyError, match="salt"):
            p.argon2id_kdf(b"pass", bad_salt, length=32, **cheap)
    for ops, mem, length in ((0, p.ARGON2ID_MEM_MIN, 32), (1, p.ARGON2ID_MEM_MIN - 1, 32),
                             (1, p.ARGON2ID_MEM_MIN, 15)):
        with pytest.raises(InvalidKeyError):
            p.argon2id_kdf(b"pass", salt, ops=ops, mem=mem, length=length)
    with pytest.raises(InvalidKeyError):  # beyond what libsodium accepts (4 TiB + 1 KiB)
        p.argon2id_kdf(b"pass", salt, ops=1, mem=(1 << 42) + 1024, length=32)


def test_sha256_and_constant_time_equal() -> None:
    # FIPS 180-2 appendix B.1 ("abc").
    assert p.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert p.constant_time_equal(b"same", b"same")
    assert not p.constant_time_equal(b"same", b"Same")
    assert not p.constant_time_equal(b"same", b"same!")  # a length difference is no error
    arabic_indic_123456 = "".join(chr(0x0661 + i) for i in range(6))
    assert not p.constant_time_equal(arabic_indic_123456.encode(), b"123456")  # no TypeError


def test_aes256_gcm_refuses_a_ciphertext_shorter_than_its_tag() -> None:
    for body in (b"", bytes(15)):
        with pytest.raises(DecryptionError):
            p.aes256_gcm_decrypt(bytes(32), bytes(12), body, b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_the_unchecked_montgomery_map_is_libsodiums_on_prime_order_points(uniform: bytes) -> None:
    """Cross-implementation: RFC 7748's map computed here equals libsodium's
    ``crypto_sign_ed25519_pk_to_curve25519`` on every point of the prime-order subgroup (from
    Elligator and Ed25519 public keys), and X25519 on it agrees with the edwards25519 scalar
    multiplication."""
    point = p.ed25519_point_from_uniform(uniform)
    if point == (1).to_bytes(32, "little"):  # Elligator met a small-order point: cleared to 0
        with pytest.raises(InvalidKeyError):
            p.ed25519_point_to_x25519(point)
        with pytest.raises(InvalidKeyError):
            p.ed25519_point_to_x25519_unchecked(point)
    else:
        assert p.ed25519_point_to_x25519_unchecked(point) == p.ed25519_point_to_x25519(point)
    public = p.ed25519_public(uniform)
    assert p.ed25519_point_to_x25519_unchecked(public) == p.ed25519_point_to_x25519(public)


def test_the_unchecked_montgomery_map_refuses_what_has_no_u_coordinate() -> None:
    identity = (1).to_bytes(32, "little")
    non_canonical = (2**255 - 19 + 3).to_bytes(32, "little")
    for bad in (identity, non_canonical, b"\x00" * 31):
        with pytest.raises(InvalidKeyError):
            p.ed25519_point_to_x25519_unchecked(bad)
    # The sign bit of x does not change u (u depends on y only).
    point = p.ed25519_point_from_uniform(bytes(range(32)))
    flipped = point[:31] + bytes([point[31] ^ 0x80])
    assert p.ed25519_point_to_x25519_unchecked(flipped) == p.ed25519_point_to_x25519(point)
