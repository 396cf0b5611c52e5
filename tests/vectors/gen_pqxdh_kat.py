"""Generate tests/vectors/pqxdh_kat.json -- independently of the `tidings` package.

Every value is computed with direct `cryptography` calls (X25519, Ed25519, ML-KEM-768, HKDF)
from the byte layouts in docs/protocol.md, so the known-answer test checks the
implementation against the specification, not against itself. The private inputs are fixed
(derived from labels by SHA-256/SHA-512); the ML-KEM ciphertexts and shared secrets come from a
real, random encapsulation and are stored: re-running this script changes them (and only them).

    .venv/bin/python tests/vectors/gen_pqxdh_kat.py > tests/vectors/pqxdh_kat.json
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"Tidings_PQXDH_X25519_SHA-256_ML-KEM-768_v1"
SPK_LABEL = b"Tidings_SignedPrekey_v1"
KEM_LABEL = b"Tidings_KemPrekey_v1"


def k32(label: str) -> bytes:
    return hashlib.sha256(b"tidings pqxdh kat " + label.encode()).digest()


def k64(label: str) -> bytes:
    return hashlib.sha512(b"tidings pqxdh kat " + label.encode()).digest()


def x_pub(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def dh(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )


def ed_pub(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def ed_sign(seed: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def kem_pub(seed: bytes) -> bytes:
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def identity_encoding(ed_seed: bytes, x_private: bytes) -> bytes:
    return b"\x01" + ed_pub(ed_seed) + x_pub(x_private)


def hkdf(ikm: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=INFO).derive(ikm)


def main() -> None:
    alice_ed, alice_x = k32("alice identity ed25519 seed"), k32("alice identity x25519")
    bob_ed, bob_x = k32("bob identity ed25519 seed"), k32("bob identity x25519")
    ephemeral = k32("alice ephemeral x25519")
    spk, opk = k32("bob signed prekey x25519"), k32("bob one-time prekey x25519")
    last_resort, kem_one_time = k64("bob last-resort ml-kem seed"), k64("bob one-time ml-kem seed")
    # Ids as DevicePrekeys.generate(one_time_count=1, kem_count=1) allocates them.
    spk_id, last_resort_id, opk_id, kem_one_time_id = 1, 2, 3, 4

    ik_a = identity_encoding(alice_ed, alice_x)
    ik_b = identity_encoding(bob_ed, bob_x)
    spk_pub, opk_pub, ek_pub = x_pub(spk), x_pub(opk), x_pub(ephemeral)
    lr_pub, kot_pub = kem_pub(last_resort), kem_pub(kem_one_time)

    spk_payload = SPK_LABEL + struct.pack(">I", spk_id) + spk_pub
    lr_payload = KEM_LABEL + struct.pack(">I", last_resort_id) + b"\x01" + lr_pub
    kot_payload = KEM_LABEL + struct.pack(">I", kem_one_time_id) + b"\x00" + kot_pub

    dh1 = dh(alice_x, spk_pub)
    dh2 = dh(ephemeral, ik_b[33:])
    dh3 = dh(ephemeral, spk_pub)
    dh4 = dh(ephemeral, opk_pub)
    # The responder computes the same values from its side; checked here once.
    assert dh1 == dh(spk, ik_a[33:]) and dh2 == dh(bob_x, ek_pub) and dh3 == dh(spk, ek_pub)
    assert dh4 == dh(opk, ek_pub)

    cases = []
    for name, kem_seed, kem_id, use_opk in (
        ("one_time_prekeys", kem_one_time, kem_one_time_id, True),
        ("last_resort_without_one_time_prekey", last_resort, last_resort_id, False),
    ):
        ss, ct = mlkem.MLKEM768PrivateKey.from_seed_bytes(kem_seed).public_key().encapsulate()
        assert mlkem.MLKEM768PrivateKey.from_seed_bytes(kem_seed).decapsulate(ct) == ss
        ikm = b"\xff" * 32 + dh1 + dh2 + dh3 + (dh4 if use_opk else b"") + ss
        cases.append(
            {
                "name": name,
                "one_time_prekey_id": opk_id if use_opk else None,
                "kem_prekey_id": kem_id,
                "kem_ciphertext": ct.hex(),
                "kem_shared_secret": ss.hex(),
                "ikm": ikm.hex(),
                "shared_secret": hkdf(ikm).hex(),
            }
        )

    vectors = {
        "generated_by": (
            "tests/vectors/gen_pqxdh_kat.py: direct `cryptography` "
            "(X25519, Ed25519, ML-KEM-768, HKDF-SHA256) calls, independent of tidings"
        ),
        "info": INFO.decode(),
        "inputs": {
            "alice_identity_ed25519_seed": alice_ed.hex(),
            "alice_identity_x25519_private": alice_x.hex(),
            "bob_identity_ed25519_seed": bob_ed.hex(),
            "bob_identity_x25519_private": bob_x.hex(),
            "alice_ephemeral_private": ephemeral.hex(),
            "bob_signed_prekey_private": spk.hex(),
            "bob_one_time_prekey_private": opk.hex(),
            "bob_last_resort_kem_seed": last_resort.hex(),
            "bob_one_time_kem_seed": kem_one_time.hex(),
            "signed_prekey_id": spk_id,
            "last_resort_kem_prekey_id": last_resort_id,
            "one_time_prekey_id": opk_id,
            "one_time_kem_prekey_id": kem_one_time_id,
            "now_ms": 1_700_000_000_000,
            "alice_registration_id": 4242,
        },
        "expected": {
            "alice_identity_key": ik_a.hex(),
            "bob_identity_key": ik_b.hex(),
            "alice_base_key": ek_pub.hex(),
            "signed_prekey_public": spk_pub.hex(),
            "one_time_prekey_public": opk_pub.hex(),
            "last_resort_kem_public_sha256": hashlib.sha256(lr_pub).hexdigest(),
            "one_time_kem_public_sha256": hashlib.sha256(kot_pub).hexdigest(),
            "signed_prekey_signature": ed_sign(bob_ed, spk_payload).hex(),
            "last_resort_kem_signature": ed_sign(bob_ed, lr_payload).hex(),
            "one_time_kem_signature": ed_sign(bob_ed, kot_payload).hex(),
            "dh1": dh1.hex(),
            "dh2": dh2.hex(),
            "dh3": dh3.hex(),
            "dh4": dh4.hex(),
            "associated_data": (ik_a + ik_b).hex(),
        },
        "cases": cases,
    }
    json.dump(vectors, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
