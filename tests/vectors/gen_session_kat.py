"""Generates tests/vectors/session_kat.json: a fixed handshake and the first messages of a
session, as wire bytes.

This is a *regression* vector produced by this implementation (every randomness source fixed,
including the ML-KEM encapsulation, which is replaced by a stored result): it freezes the
composition -- prekey message layout, associated data with the franking commitment, the first
ratchet steps -- so that any change to the bytes on the wire is noticed. The independent checks
of the pieces are pqxdh_kat.json and ratchet_kat.json, computed without this implementation.

    .venv/bin/python tests/vectors/gen_session_kat.py > tests/vectors/session_kat.json
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

from tidings.crypto import primitives
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.session import Session, SessionRecord


def stream(label: str) -> Callable[[int], bytes]:
    """A deterministic byte source: SHAKE-256 of the label, read sequentially."""
    state = {"pos": 0}

    def read(n: int) -> bytes:
        start = state["pos"]
        state["pos"] += n
        return hashlib.shake_256(label.encode()).digest(state["pos"])[start:]

    return read


@contextmanager
def fixed_encapsulation(bob_prekeys: DevicePrekeys) -> Iterator[None]:
    """Make ML-KEM encapsulation deterministic: decapsulating a fixed ciphertext under the
    recipient's key gives the secret the initiator would have got for it."""
    kem = bob_prekeys.find_kem_prekey(bob_prekeys.kem_prekeys[0].id)
    ciphertext = hashlib.shake_256(b"kem ciphertext").digest(primitives.MLKEM768_CIPHERTEXT_LEN)
    secret = primitives.mlkem768_decapsulate(kem.seed, ciphertext)  # implicit rejection value
    with mock.patch.object(primitives, "mlkem768_encapsulate", lambda _pk: (secret, ciphertext)):
        yield


def build() -> dict[str, object]:
    alice = IdentityKeyPair.generate(rng=stream("alice identity"))
    bob = IdentityKeyPair.generate(rng=stream("bob identity"))
    bob_prekeys = DevicePrekeys.generate(
        bob, now_ms=1_700_000_000_000, one_time_count=1, kem_count=1, rng=stream("bob prekeys")
    )
    bundle = bob_prekeys.bundle(
        1, 2222, bob_prekeys.one_time_prekeys[0].id, bob_prekeys.kem_prekeys[0].id
    )
    bob_prekeys_before = bob_prekeys.to_bytes()  # the state the handshake starts from
    alice_record, bob_record = SessionRecord(), SessionRecord()
    messages = []
    with fixed_encapsulation(bob_prekeys):
        alice_record.promote(
            Session.initiate(
                alice, bundle, local_registration_id=1111, rng=stream("alice ephemerals")
            )
        )
    script = [
        ("alice", b"first message"),
        ("alice", b"second"),
        ("bob", b"reply"),
        ("alice", b"after the reply"),
    ]
    bob_rng = stream("bob ephemerals")
    for i, (sender, text) in enumerate(script):
        commitment = hashlib.sha256(b"commitment %d" % i).digest()
        record = alice_record if sender == "alice" else bob_record
        out = record.encrypt(text, commitment)
        receiver = bob_record if sender == "alice" else alice_record
        identity, prekeys = (bob, bob_prekeys) if sender == "alice" else (alice, None)
        result = receiver.decrypt(
            out.type,
            out.body,
            commitment,
            identity=identity,
            prekeys=prekeys or bob_prekeys,
            rng=bob_rng if sender == "alice" else None,
        )
        assert result.plaintext == text
        messages.append(
            {
                "from": sender,
                "type": out.type,
                "commitment": commitment.hex(),
                "plaintext": text.hex(),
                "body": out.body.hex(),
            }
        )
    return {
        "description": "A fixed PQXDH handshake and the first messages of a Tidings session "
        "(docs/protocol.md, Sessions). Randomness: SHAKE-256 streams named in the generator.",
        "generated_by": "tests/vectors/gen_session_kat.py with this implementation "
        "(a regression vector; pqxdh_kat.json and ratchet_kat.json are the independent ones)",
        "alice_identity": alice.to_bytes().hex(),
        "bob_identity": bob.to_bytes().hex(),
        "bob_prekeys": bob_prekeys_before.hex(),
        "bundle": bundle.encode().hex(),
        "messages": messages,
    }


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
