"""A fixed handshake and first messages (tests/vectors/session_kat.json): the stored wire bytes
decrypt under the stored keys, and the generator still produces exactly the stored vector."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.session import PREKEY, RATCHET, SessionRecord

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KAT = json.loads((VECTORS / "session_kat.json").read_text())


def test_stored_messages_decrypt_under_stored_keys() -> None:
    bob = IdentityKeyPair.from_bytes(bytes.fromhex(KAT["bob_identity"]))
    prekeys = DevicePrekeys.from_bytes(bytes.fromhex(KAT["bob_prekeys"]))
    record = SessionRecord()
    alice_messages = [m for m in KAT["messages"] if m["from"] == "alice"]
    assert [m["type"] for m in alice_messages] == [PREKEY, PREKEY, RATCHET]
    for message in alice_messages[:2]:  # the two prekey messages before Bob's reply
        result = record.decrypt(
            message["type"],
            bytes.fromhex(message["body"]),
            bytes.fromhex(message["commitment"]),
            identity=bob,
            prekeys=prekeys,
        )
        assert result.plaintext == bytes.fromhex(message["plaintext"])
    assert prekeys.one_time_prekey_count == 0 and prekeys.kem_prekey_count == 0


def test_generator_reproduces_the_vector() -> None:
    sys.path.insert(0, str(VECTORS))
    try:
        from gen_session_kat import build
    finally:
        sys.path.remove(str(VECTORS))
    assert json.loads(json.dumps(build())) == KAT
