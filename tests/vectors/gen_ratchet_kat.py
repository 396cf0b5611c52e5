"""Generate tests/vectors/ratchet_kat.json: known answers for Tidings DR v1.

This is an independent, straight-line transcription of the Signal Double Ratchet specification
(section 3) with PROTOCOL.md's constants. It uses only `cryptography` (X25519, HKDF, HMAC,
AES-CBC, PKCS#7) and the standard library, and deliberately imports nothing from `tidings`, so
the vectors check the implementation rather than restate it.

Run from the repository root:  .venv/bin/python tests/vectors/gen_ratchet_kat.py
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUT = Path(__file__).with_name("ratchet_kat.json")

ROOT_INFO = b"Tidings_DR_Root_v1"
MESSAGE_KEYS_INFO = b"Tidings_DR_MessageKeys_v1"
AD = b"Tidings KAT associated data"


def _seed(label: str, i: int | None = None) -> bytes:
    suffix = b"" if i is None else b"/" + str(i).encode()
    return hashlib.sha256(b"Tidings DR v1 KAT/" + label.encode() + suffix).digest()


def dh_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def dh(private: bytes, public: bytes) -> bytes:
    out = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )
    assert out != bytes(32)
    return out


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=rk, info=ROOT_INFO).derive(dh_out)
    return okm[:32], okm[32:]


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    h = crypto_hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """Returns (next chain key, message key)."""
    return hmac_sha256(ck, b"\x02"), hmac_sha256(ck, b"\x01")


def expand(mk: bytes) -> tuple[bytes, bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=80, salt=bytes(32), info=MESSAGE_KEYS_INFO).derive(
        mk
    )
    return okm[:32], okm[32:64], okm[64:]


def encrypt(mk: bytes, plaintext: bytes, ad: bytes) -> bytes:
    enc_key, auth_key, iv = expand(mk)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return ciphertext + hmac_sha256(auth_key, ad + ciphertext)


def decrypt(mk: bytes, sealed: bytes, ad: bytes) -> bytes:
    enc_key, auth_key, iv = expand(mk)
    ciphertext, tag = sealed[:-32], sealed[-32:]
    assert hmac_sha256(auth_key, ad + ciphertext) == tag
    decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def header(dh_pub: bytes, pn: int, n: int) -> bytes:
    return dh_pub + struct.pack(">II", pn, n)


class Party:
    """Spec section 3 state, one field per spec variable."""

    def __init__(self, name: str, rng_outputs: list[bytes]) -> None:
        self.name = name
        self.rng = list(rng_outputs)
        self.DHs: tuple[bytes, bytes] | None = None  # (private, public)
        self.DHr: bytes | None = None
        self.RK = b""
        self.CKs: bytes | None = None
        self.CKr: bytes | None = None
        self.Ns = self.Nr = self.PN = 0
        self.MKSKIPPED: dict[tuple[bytes, int], bytes] = {}
        self.trace: list[dict[str, Any]] = []

    def generate_dh(self) -> tuple[bytes, bytes]:
        private = self.rng.pop(0)
        return private, dh_public(private)

    def snapshot(self) -> dict[str, Any]:
        assert self.DHs is not None
        return {
            "RK": self.RK.hex(),
            "DHs_public": self.DHs[1].hex(),
            "DHr": None if self.DHr is None else self.DHr.hex(),
            "CKs": None if self.CKs is None else self.CKs.hex(),
            "CKr": None if self.CKr is None else self.CKr.hex(),
            "Ns": self.Ns,
            "Nr": self.Nr,
            "PN": self.PN,
            "skipped": [[k[0].hex(), k[1]] for k in self.MKSKIPPED],
        }

    def init_alice(self, sk: bytes, bob_public: bytes) -> dict[str, Any]:
        self.DHs = self.generate_dh()
        self.DHr = bob_public
        dh_out = dh(self.DHs[0], self.DHr)
        self.RK, self.CKs = kdf_rk(sk, dh_out)
        return {
            "alice_ratchet_private": self.DHs[0].hex(),
            "alice_ratchet_public": self.DHs[1].hex(),
            "dh_out": dh_out.hex(),
            "kdf_rk": {"root_key": self.RK.hex(), "chain_key": self.CKs.hex()},
        }

    def init_bob(self, sk: bytes, bob_private: bytes) -> None:
        self.DHs = (bob_private, dh_public(bob_private))
        self.RK = sk

    def encrypt(self, plaintext: bytes, ad: bytes) -> dict[str, Any]:
        assert self.CKs is not None and self.DHs is not None
        ck_before = self.CKs
        self.CKs, mk = kdf_ck(self.CKs)
        hdr = header(self.DHs[1], self.PN, self.Ns)
        self.Ns += 1
        enc_key, auth_key, iv = expand(mk)
        return {
            "chain_key": ck_before.hex(),
            "kdf_ck": {"message_key": mk.hex(), "next_chain_key": self.CKs.hex()},
            "message_key_expansion": {
                "encryption_key": enc_key.hex(),
                "authentication_key": auth_key.hex(),
                "iv": iv.hex(),
            },
            "plaintext": plaintext.hex(),
            "associated_data": ad.hex(),
            "header": hdr.hex(),
            "ciphertext": encrypt(mk, plaintext, ad + hdr).hex(),
        }

    def decrypt(self, hdr: bytes, sealed: bytes, ad: bytes) -> tuple[bytes, dict[str, Any] | None]:
        dh_pub, (pn, n) = hdr[:32], struct.unpack(">II", hdr[32:])
        if (dh_pub, n) in self.MKSKIPPED:
            mk = self.MKSKIPPED.pop((dh_pub, n))
            return decrypt(mk, sealed, ad + hdr), None
        step = None
        if dh_pub != self.DHr:
            self.skip_message_keys(pn)
            step = self.dh_ratchet(dh_pub)
        self.skip_message_keys(n)
        assert self.CKr is not None
        self.CKr, mk = kdf_ck(self.CKr)
        self.Nr += 1
        return decrypt(mk, sealed, ad + hdr), step

    def skip_message_keys(self, until: int) -> None:
        if self.CKr is not None:
            while self.Nr < until:
                self.CKr, mk = kdf_ck(self.CKr)
                assert self.DHr is not None
                self.MKSKIPPED[(self.DHr, self.Nr)] = mk
                self.Nr += 1

    def dh_ratchet(self, dh_pub: bytes) -> dict[str, Any]:
        assert self.DHs is not None
        self.PN = self.Ns
        self.Ns = 0
        self.Nr = 0
        self.DHr = dh_pub
        root_in = self.RK
        recv_dh = dh(self.DHs[0], self.DHr)
        self.RK, self.CKr = kdf_rk(self.RK, recv_dh)
        mid = self.RK
        self.DHs = self.generate_dh()
        send_dh = dh(self.DHs[0], self.DHr)
        self.RK, self.CKs = kdf_rk(self.RK, send_dh)
        return {
            "remote_ratchet_public": dh_pub.hex(),
            "receiving": {
                "root_key_in": root_in.hex(),
                "dh_out": recv_dh.hex(),
                "kdf_rk": {"root_key": mid.hex(), "chain_key": self.CKr.hex()},
            },
            "new_ratchet_private": self.DHs[0].hex(),
            "new_ratchet_public": self.DHs[1].hex(),
            "sending": {
                "root_key_in": mid.hex(),
                "dh_out": send_dh.hex(),
                "kdf_rk": {"root_key": self.RK.hex(), "chain_key": self.CKs.hex()},
            },
        }


# (op, party, message label): a conversation with a skipped message in each direction and three
# DH ratchet steps.
SCRIPT: list[tuple[str, str, str]] = [
    ("encrypt", "alice", "a0"),
    ("encrypt", "alice", "a1"),
    ("encrypt", "alice", "a2"),
    ("decrypt", "bob", "a0"),
    ("decrypt", "bob", "a2"),
    ("decrypt", "bob", "a1"),
    ("encrypt", "bob", "b0"),
    ("encrypt", "bob", "b1"),
    ("decrypt", "alice", "b1"),
    ("decrypt", "alice", "b0"),
    ("encrypt", "alice", "a3"),
    ("decrypt", "bob", "a3"),
    ("encrypt", "bob", "b2"),
    ("decrypt", "alice", "b2"),
]


def build() -> dict[str, Any]:
    shared_secret = _seed("shared secret")
    bob_private = _seed("bob ratchet private key")
    alice_rng = [_seed("alice rng", i) for i in range(4)]
    bob_rng = [_seed("bob rng", i) for i in range(4)]
    parties = {"alice": Party("alice", alice_rng), "bob": Party("bob", bob_rng)}
    parties["bob"].init_bob(shared_secret, bob_private)
    alice_init = parties["alice"].init_alice(shared_secret, dh_public(bob_private))

    messages: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    for op, name, label in SCRIPT:
        party = parties[name]
        event: dict[str, Any] = {"op": op, "party": name, "message": label}
        if op == "encrypt":
            plaintext = f"Tidings KAT message {label}".encode()
            messages[label] = party.encrypt(plaintext, AD)
            event.update(messages[label])
        else:
            m = messages[label]
            plaintext, step = party.decrypt(
                bytes.fromhex(m["header"]),
                bytes.fromhex(m["ciphertext"]),
                bytes.fromhex(m["associated_data"]),
            )
            assert plaintext.hex() == m["plaintext"]
            event["plaintext"] = plaintext.hex()
            event["dh_ratchet"] = step
        event["state_after"] = party.snapshot()
        events.append(event)

    return {
        "description": (
            "Known-answer vectors for Tidings DR v1 (PROTOCOL.md, 'Double Ratchet'). Replay "
            "'events' in order; every party draws its new X25519 private keys, in order, from its "
            "rng_outputs list. All byte strings are hex."
        ),
        "generated_by": (
            "tests/vectors/gen_ratchet_kat.py: an independent straight-line transcription of the "
            "Signal Double Ratchet spec, section 3, using only the `cryptography` package (X25519, "
            "HKDF, HMAC, AES-CBC, PKCS7) and hashlib; it imports nothing from tidings"
        ),
        "constants": {
            "kdf_rk_info": ROOT_INFO.decode(),
            "message_keys_info": MESSAGE_KEYS_INFO.decode(),
            "kdf_ck_message_key_input": "01",
            "kdf_ck_chain_key_input": "02",
        },
        "inputs": {
            "shared_secret": shared_secret.hex(),
            "bob_ratchet_private": bob_private.hex(),
            "bob_ratchet_public": dh_public(bob_private).hex(),
            "alice_rng_outputs": [x.hex() for x in alice_rng],
            "bob_rng_outputs": [x.hex() for x in bob_rng],
        },
        "alice_init": alice_init,
        "events": events,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2) + "\n")


if __name__ == "__main__":
    main()
