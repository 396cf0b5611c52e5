"""Generate tests/vectors/sender_keys_kat.json: known answers for Tidings sender keys v1.

An independent, straight-line transcription of docs/protocol.md. It uses only the
standard library (hashlib, hmac, struct) and `cryptography` (HKDF, AES-256-CBC, PKCS#7 padding,
Ed25519 through OpenSSL), hand-encodes the protobuf messages, and deliberately imports nothing
from `tidings` (nor PyNaCl, which the implementation signs with), so the vectors check the
implementation rather than restate it.

Run from the repository root:  .venv/bin/python tests/vectors/gen_sender_keys_kat.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUT = Path(__file__).with_name("sender_keys_kat.json")

VERSION = 1
SIGNING_LABEL = b"Tidings_SenderKey_v1"
MESSAGE_KEYS_INFO = b"Tidings_SenderKey_MessageKeys_v1"
CHAIN_STEPS = 6


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"Tidings sender keys v1 KAT/" + label.encode()).digest()


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """(message key, next chain key)."""
    return hmac.new(ck, b"\x01", hashlib.sha256).digest(), hmac.new(
        ck, b"\x02", hashlib.sha256
    ).digest()


def layout(distribution_id: bytes, chain_id: int, iteration: int, ad: bytes) -> bytes:
    return (
        SIGNING_LABEL
        + bytes((VERSION,))
        + distribution_id
        + struct.pack(">I", chain_id)
        + struct.pack(">I", iteration)
        + struct.pack(">I", len(ad))
        + ad
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb(fields: list[tuple[int, int | bytes]]) -> bytes:
    """Deterministic proto3 encoding: fields in number order, defaults (0, empty) left out."""
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            if value:
                out += _varint(number << 3 | 0) + _varint(value)
        elif value:
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return out


def generate() -> dict[str, Any]:
    distribution_id = _seed("distribution_id")[:16]
    chain_id = 0x9E3779B9
    chain_key = _seed("chain_key")
    signing_seed = _seed("signing_seed")
    private = Ed25519PrivateKey.from_private_bytes(signing_seed)
    signing_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )

    chain = []
    ck = chain_key
    for i in range(CHAIN_STEPS):
        mk, next_ck = kdf_ck(ck)
        chain.append({"iteration": i, "chain_key": ck.hex(), "message_key": mk.hex()})
        ck = next_ck

    distribution = _pb(
        [
            (1, VERSION),
            (2, distribution_id),
            (3, chain_id),
            (4, 0),
            (5, chain_key),
            (6, signing_public),
        ]
    )

    plaintexts = [b"", b"Hello, group!", bytes(range(48))]
    ads = [b"", _seed("commitment"), b"\x00" * 3]
    messages = []
    ck = chain_key
    for iteration, (plaintext, ad) in enumerate(zip(plaintexts, ads, strict=True)):
        mk, ck = kdf_ck(ck)
        okm = HKDF(
            algorithm=hashes.SHA256(), length=80, salt=bytes(32), info=MESSAGE_KEYS_INFO
        ).derive(mk)
        enc_key, auth_key, iv = okm[:32], okm[32:64], okm[64:]
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
        cbc = encryptor.update(padded) + encryptor.finalize()
        signed_ad = layout(distribution_id, chain_id, iteration, ad)
        tag = hmac.new(auth_key, signed_ad + cbc, hashlib.sha256).digest()
        sealed = cbc + tag
        signature = private.sign(signed_ad + sealed)
        encoded = _pb(
            [
                (1, VERSION),
                (2, distribution_id),
                (3, chain_id),
                (4, iteration),
                (5, sealed),
                (6, signature),
            ]
        )
        messages.append(
            {
                "iteration": iteration,
                "plaintext": plaintext.hex(),
                "associated_data": ad.hex(),
                "message_key": mk.hex(),
                "encryption_key": enc_key.hex(),
                "authentication_key": auth_key.hex(),
                "iv": iv.hex(),
                "signing_layout": signed_ad.hex(),
                "ciphertext": cbc.hex(),
                "tag": tag.hex(),
                "signature": signature.hex(),
                "encoded_message": encoded.hex(),
            }
        )

    return {
        "description": (
            "Known-answer vectors for Tidings sender keys v1 (docs/protocol.md). "
            "An OwnSenderKey built from 'inputs' at iteration 0 must produce 'messages' in "
            "order, byte for byte; a RemoteSenderKey created from 'encoded_distribution' must "
            "decrypt them. 'chain' lists the chain key and message key of each iteration. "
            "All byte strings are hex."
        ),
        "generated_by": (
            "tests/vectors/gen_sender_keys_kat.py: an independent straight-line transcription "
            "using only hashlib/hmac/struct and the `cryptography` package (HKDF-SHA256, "
            "AES-256-CBC, PKCS7, Ed25519 via OpenSSL), with hand-encoded protobuf; it imports "
            "nothing from tidings and not PyNaCl"
        ),
        "constants": {
            "version": VERSION,
            "signing_label": SIGNING_LABEL.decode(),
            "message_keys_info": MESSAGE_KEYS_INFO.decode(),
            "kdf_ck_message_key_input": "01",
            "kdf_ck_chain_key_input": "02",
        },
        "inputs": {
            "distribution_id": distribution_id.hex(),
            "chain_id": chain_id,
            "iteration": 0,
            "chain_key": chain_key.hex(),
            "signing_seed": signing_seed.hex(),
        },
        "signing_public": signing_public.hex(),
        "encoded_distribution": distribution.hex(),
        "chain": chain,
        "messages": messages,
    }


def main() -> None:
    OUT.write_text(json.dumps(generate(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
