"""What would close the gap? Measured prototypes of the ideas in the performance section.

    .venv/bin/python bench/ideas.py [--rounds R]

This is an experiment, not project code: inside this process only, it swaps the symmetric
building blocks that `tidings.crypto.ratchet` and `tidings.crypto.sender_keys` call
(`chain_step`, `seal`, `open_sealed`) for faster equivalents, checks on random inputs that each
equivalent returns exactly the bytes of the real function, and then runs the benchmark's
one-way and group cases (`bench/_tidings.py`, `bench/_peers.py`) interleaved with vodozemac.

Variants, each on top of the previous one:

- ``current``: the code as it is.
- ``hashlib-hmac``: HMAC-SHA256 (RFC 2104) written over `hashlib.sha256` one-shot calls instead of
  `hmac.digest`, for the chain step and the tag. `hmac.digest` pays OpenSSL 3's per-call HMAC
  fetch / context set-up (~1.5 us for a 1-byte message), a SHA-256 one-shot does not (~0.3 us).
- ``+hkdf``: the 80-byte message-key HKDF written the same way, with the zero-salt pads
  precomputed (1 extract + 3 expand HMACs).
- ``+fused``: `seal` / `open_sealed` as one function each (no per-primitive call layers, PKCS#7
  inline), still through the public `Cipher` API.
- ``+rust-ctx``: AES-CBC contexts made with `cryptography`'s internal Rust constructor instead of
  `Cipher(...)`, skipping its Python-level argument checks. Internal API: a ceiling, not advice.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers
import _tidings
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tidings.crypto import primitives, symmetric
from tidings.crypto import ratchet as tidings_ratchet
from tidings.crypto import sender_keys as tidings_sender_keys
from tidings.errors import DecryptionError

_sha256 = hashlib.sha256
_IPAD = bytes.maketrans(bytes(range(256)), bytes(x ^ 0x36 for x in range(256)))
_OPAD = bytes.maketrans(bytes(range(256)), bytes(x ^ 0x5C for x in range(256)))
_PAD32 = bytes(32)
_ZERO_KEY = bytes(64)
_ZERO_IPAD = _ZERO_KEY.translate(_IPAD)
_ZERO_OPAD = _ZERO_KEY.translate(_OPAD)


def hmac32(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 for a 32-byte key (every key the ratchet MACs with) over hashlib one-shots."""
    padded = key + _PAD32
    inner = _sha256(padded.translate(_IPAD) + data).digest()
    return _sha256(padded.translate(_OPAD) + inner).digest()


def chain_step_hashlib(chain_key: bytes) -> tuple[bytes, bytes]:
    padded = chain_key + _PAD32
    ipad, opad = padded.translate(_IPAD), padded.translate(_OPAD)
    return (
        _sha256(opad + _sha256(ipad + b"\x01").digest()).digest(),
        _sha256(opad + _sha256(ipad + b"\x02").digest()).digest(),
    )


def expand80_hashlib(message_key: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF-SHA256(salt = 32 zero bytes, IKM = message key, info) -> 80 bytes, split 32/32/16."""
    prk = _sha256(_ZERO_OPAD + _sha256(_ZERO_IPAD + message_key).digest()).digest()
    padded = prk + _PAD32
    ipad, opad = padded.translate(_IPAD), padded.translate(_OPAD)
    t1 = _sha256(opad + _sha256(ipad + info + b"\x01").digest()).digest()
    t2 = _sha256(opad + _sha256(ipad + t1 + info + b"\x02").digest()).digest()
    t3 = _sha256(opad + _sha256(ipad + t2 + info + b"\x03").digest()).digest()
    return t1, t2, t3[:16]


def _expand_current(message_key: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    okm = primitives.hkdf_sha256(message_key, salt=_PAD32, info=info, length=80)
    return okm[:32], okm[32:64], okm[64:]


def _aes_public(key: bytes, iv: bytes, encrypt: bool) -> Any:
    cipher = Cipher(algorithms.AES256(key), modes.CBC(iv))
    return cipher.encryptor() if encrypt else cipher.decryptor()


def _aes_rust(key: bytes, iv: bytes, encrypt: bool) -> Any:
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl

    make = (
        rust_openssl.ciphers.create_encryption_ctx
        if encrypt
        else rust_openssl.ciphers.create_decryption_ctx
    )
    return make(algorithms.AES256(key), modes.CBC(iv))


SealFn = Callable[[bytes, bytes, bytes, bytes], bytes]


def make_fused(
    expand: Callable[[bytes, bytes], tuple[bytes, bytes, bytes]],
    mac: Callable[[bytes, bytes], bytes],
    aes: Callable[[bytes, bytes, bool], Any],
) -> tuple[SealFn, SealFn]:
    compare = hmac.compare_digest

    def seal(message_key: bytes, plaintext: bytes, associated_data: bytes, info: bytes) -> bytes:
        enc_key, auth_key, iv = expand(message_key, info)
        pad = 16 - len(plaintext) % 16
        ctx = aes(enc_key, iv, True)
        ciphertext: bytes = ctx.update(plaintext + bytes((pad,)) * pad) + ctx.finalize()
        return ciphertext + mac(auth_key, associated_data + ciphertext)

    def open_sealed(
        message_key: bytes, sealed: bytes, associated_data: bytes, info: bytes
    ) -> bytes:
        body = len(sealed) - 32
        if body < 16 or body % 16:
            raise DecryptionError("ciphertext has an impossible length")
        enc_key, auth_key, iv = expand(message_key, info)
        ciphertext = sealed[:body]
        if not compare(mac(auth_key, associated_data + ciphertext), sealed[body:]):
            raise DecryptionError("message authentication failed")
        ctx = aes(enc_key, iv, False)
        padded: bytes = ctx.update(ciphertext) + ctx.finalize()
        pad = padded[-1]
        if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
            raise DecryptionError("bad padding")
        return padded[:-pad]

    return seal, open_sealed


def _layered(mac: Callable[[bytes, bytes], bytes], hkdf_fast: bool) -> tuple[SealFn, SealFn]:
    """`symmetric.seal` / `open_sealed` as written, with only the MAC (and maybe HKDF) swapped."""
    expand = expand80_hashlib if hkdf_fast else _expand_current
    aes_enc, aes_dec = primitives.aes256_cbc_encrypt, primitives.aes256_cbc_decrypt
    compare = primitives.constant_time_equal

    def seal(message_key: bytes, plaintext: bytes, associated_data: bytes, info: bytes) -> bytes:
        enc_key, auth_key, iv = expand(message_key, info)
        ciphertext = aes_enc(enc_key, iv, plaintext)
        return ciphertext + mac(auth_key, associated_data + ciphertext)

    def open_sealed(
        message_key: bytes, sealed: bytes, associated_data: bytes, info: bytes
    ) -> bytes:
        body_len = len(sealed) - 32
        if body_len < 16 or body_len % 16:
            raise DecryptionError("ciphertext has an impossible length")
        enc_key, auth_key, iv = expand(message_key, info)
        ciphertext, tag = sealed[:body_len], sealed[body_len:]
        if not compare(mac(auth_key, associated_data + ciphertext), tag):
            raise DecryptionError("message authentication failed")
        return aes_dec(enc_key, iv, ciphertext)

    return seal, open_sealed


Variant = tuple[Callable[[bytes], tuple[bytes, bytes]], SealFn, SealFn]


def variants() -> dict[str, Variant]:
    current: Variant = (symmetric.chain_step, symmetric.seal, symmetric.open_sealed)
    return {
        "current": current,
        "hashlib-hmac": (chain_step_hashlib, *_layered(hmac32, hkdf_fast=False)),
        "+hkdf": (chain_step_hashlib, *_layered(hmac32, hkdf_fast=True)),
        "+fused": (chain_step_hashlib, *make_fused(expand80_hashlib, hmac32, _aes_public)),
        "+rust-ctx": (chain_step_hashlib, *make_fused(expand80_hashlib, hmac32, _aes_rust)),
    }


def check_equivalence(all_variants: dict[str, Variant]) -> None:
    """Every variant must produce exactly the bytes of the real functions."""
    info = symmetric.DR_MESSAGE_KEYS_INFO
    for _ in range(300):
        key = os.urandom(32)
        plaintext = os.urandom(os.urandom(1)[0] * 7)
        ad = os.urandom(70)
        sealed = symmetric.seal(key, plaintext, ad, info)
        for name, (chain_step, seal, open_sealed) in all_variants.items():
            assert chain_step(key) == symmetric.chain_step(key), name
            assert seal(key, plaintext, ad, info) == sealed, name
            assert open_sealed(key, sealed, ad, info) == plaintext, name


def install(variant: Variant) -> None:
    for module in (tidings_ratchet, tidings_sender_keys):
        for name, function in zip(("chain_step", "seal", "open_sealed"), variant, strict=True):
            setattr(module, name, function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="prototype speed-ups, measured")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if _peers.VODOZEMAC_MISSING is not None:
        print(_peers.VODOZEMAC_MISSING, file=sys.stderr)
        return 1
    all_variants = variants()
    check_equivalence(all_variants)
    plaintexts = [os.urandom(1024) for _ in range(64)]
    ad = os.urandom(_peers.AD_LEN)
    n_one_way, n_group = 8000, 4000
    one_way, group = _tidings.one_way(plaintexts, ad), _tidings.group(plaintexts)
    vz_one_way, vz_group = _peers.vodozemac_one_way(plaintexts), _peers.vodozemac_group(plaintexts)
    rates: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for name, variant in all_variants.items():
                install(variant)
                rates.setdefault(f"one-way {name}", []).append(n_one_way / one_way(n_one_way))
                rates.setdefault(f"group {name}", []).append(n_group / group(n_group))
            install(all_variants["current"])
            rates.setdefault("one-way vodozemac", []).append(n_one_way / vz_one_way(n_one_way))
            rates.setdefault("group vodozemac Megolm", []).append(n_group / vz_group(n_group))
    finally:
        install(all_variants["current"])
    medians = {key: statistics.median(values) for key, values in rates.items()}
    peer = {"one-way": medians["one-way vodozemac"], "group": medians["group vodozemac Megolm"]}
    print(f"{'variant':32} {'us/msg':>8} {'msg/s':>9} {'vs peer':>8}")
    for key, rate in medians.items():
        scenario = key.split()[0]
        print(f"{key:32} {1e6 / rate:8.1f} {rate:9,.0f} {rate / peer[scenario]:7.2f}x")
    print(f"medians over {args.rounds} interleaved rounds; outputs checked equal to the real code")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
