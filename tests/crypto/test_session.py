"""1:1 sessions: handshake + ratchet + commitment binding, and multi-device bookkeeping."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.session import (
    MAX_ARCHIVED_SESSIONS,
    PREKEY,
    RATCHET,
    Session,
    SessionRecord,
)
from tidings.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessageError,
    NoSessionError,
    TidingsError,
    UnknownPrekeyError,
    UntrustedIdentityError,
)
from tidings.wire import codec, decode, encode, pb


@dataclass
class Device:
    """One device: its identity, prekeys, and a session record per remote device."""

    name: str
    registration_id: int
    identity: IdentityKeyPair = field(default_factory=IdentityKeyPair.generate)
    prekeys: DevicePrekeys = field(init=False)
    records: dict[str, SessionRecord] = field(default_factory=dict)
    claimed: set[int] = field(default_factory=set)  # what the server handed out already

    def __post_init__(self) -> None:
        self.prekeys = DevicePrekeys.generate(
            self.identity, now_ms=0, one_time_count=4, kem_count=4
        )

    def bundle(self, *, one_time: bool = True) -> PrekeyBundle:
        """A bundle as the server hands it out: each one-time key is claimed at most once."""
        one_time_id = next(
            (k.id for k in self.prekeys.one_time_prekeys if k.id not in self.claimed), None
        )
        kem_id = next((k.id for k in self.prekeys.kem_prekeys if k.id not in self.claimed), None)
        if not one_time:
            one_time_id = None
        self.claimed.update(i for i in (one_time_id, kem_id) if i is not None)
        return self.prekeys.bundle(1, self.registration_id, one_time_id, kem_id)

    def record(self, peer: str) -> SessionRecord:
        return self.records.setdefault(peer, SessionRecord())

    def send(self, peer: Device, plaintext: bytes) -> tuple[int, bytes, bytes]:
        record = self.record(peer.name)
        if record.current is None:
            record.promote(
                Session.initiate(
                    self.identity, peer.bundle(), local_registration_id=self.registration_id
                )
            )
        commitment = os.urandom(32)
        out = record.encrypt(plaintext, commitment)
        return out.type, out.body, commitment

    def receive(self, peer: str, message: tuple[int, bytes, bytes]) -> bytes:
        kind, body, commitment = message
        result = self.record(peer).decrypt(
            kind, body, commitment, identity=self.identity, prekeys=self.prekeys
        )
        return result.plaintext

    def snapshot(self) -> tuple[bytes, bytes]:
        # An empty record is what a harness lookup creates; it holds no state.
        return self.prekeys.to_bytes(), b"".join(
            r.to_bytes() for _, r in sorted(self.records.items()) if r.current or r.archived
        )


def test_prekey_messages_until_reply_then_ratchet_messages() -> None:
    alice, bob = Device("alice", 11), Device("bob", 22)
    first = [alice.send(bob, f"m{i}".encode()) for i in range(3)]
    assert [m[0] for m in first] == [PREKEY] * 3
    one_time_before = bob.prekeys.one_time_prekey_count
    kem_before = bob.prekeys.kem_prekey_count
    assert [bob.receive("alice", m) for m in first] == [b"m0", b"m1", b"m2"]
    # Exactly one one-time X25519 and one one-time KEM prekey were consumed, once.
    assert bob.prekeys.one_time_prekey_count == one_time_before - 1
    assert bob.prekeys.kem_prekey_count == kem_before - 1
    reply = bob.send(alice, b"hello back")
    assert reply[0] == RATCHET
    assert alice.receive("bob", reply) == b"hello back"
    assert alice.record("bob").current is not None
    assert not alice.record("bob").current.awaiting_reply
    assert alice.send(bob, b"now ratchet")[0] == RATCHET


def test_session_without_one_time_prekey_uses_last_resort_kem_key() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    bundle = bob.prekeys.bundle(1, 2)  # no one-time keys: last-resort KEM key
    alice.record("bob").promote(Session.initiate(alice.identity, bundle, local_registration_id=1))
    msg = alice.send(bob, b"hi")
    kem_before = bob.prekeys.kem_prekey_count
    assert bob.receive("alice", msg) == b"hi"
    assert bob.prekeys.kem_prekey_count == kem_before  # last resort is never consumed


def test_commitment_is_bound_and_failure_changes_nothing() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    kind, body, commitment = alice.send(bob, b"secret")
    before = bob.snapshot()
    with pytest.raises(DecryptionError):
        bob.receive("alice", (kind, body, bytes(32)))
    assert bob.snapshot() == before  # no session created, no prekey burned
    assert bob.receive("alice", (kind, body, commitment)) == b"secret"
    reply = bob.send(alice, b"r")
    before = alice.snapshot()
    with pytest.raises(DecryptionError):
        alice.receive("bob", (reply[0], reply[1], os.urandom(32)))
    assert alice.snapshot() == before


def test_forged_prekey_message_burns_no_prekeys() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    kind, body, commitment = alice.send(bob, b"x")
    message = decode(pb.PrekeyMessage, body)
    message.kem_ciphertext = os.urandom(1088)  # implicit rejection: a different SK
    before = bob.snapshot()
    with pytest.raises(DecryptionError):
        bob.receive("alice", (kind, encode(message), commitment))
    assert bob.snapshot() == before


def test_replayed_prekey_message_is_a_duplicate_or_unknown_prekey() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    msg = alice.send(bob, b"once")
    assert bob.receive("alice", msg) == b"once"
    with pytest.raises(DuplicateMessageError):
        bob.receive("alice", msg)
    # Delivered to a record that does not know the handshake, the consumed keys are gone.
    with pytest.raises(UnknownPrekeyError):
        SessionRecord().decrypt(msg[0], msg[1], msg[2], identity=bob.identity, prekeys=bob.prekeys)


def test_expected_identity_is_enforced_both_ways() -> None:
    alice, bob, mallory = Device("alice", 1), Device("bob", 2), Device("mallory", 3)
    with pytest.raises(UntrustedIdentityError):
        Session.initiate(
            alice.identity,
            mallory.bundle(),
            local_registration_id=1,
            expected_identity=bob.identity.public,
        )
    msg = mallory.send(bob, b"i am alice")
    with pytest.raises(UntrustedIdentityError):
        bob.record("alice").decrypt(
            *msg,
            identity=bob.identity,
            prekeys=bob.prekeys,
            expected_identity=alice.identity.public,
        )


def test_reregistered_device_gets_new_session_and_old_is_not_reused() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    bob.receive("alice", alice.send(bob, b"hello"))
    alice.receive("bob", bob.send(alice, b"hi"))
    in_flight = bob.send(alice, b"sent before re-registering")

    new_bob = Device("bob", 3)  # same account and device id, new identity and registration
    record = alice.record("bob")
    assert record.needs_new_session(new_bob.bundle())
    old = record.current
    record.promote(Session.initiate(alice.identity, new_bob.bundle(), local_registration_id=1))
    assert record.archived[0] is old
    # Messages in flight from the old registration still decrypt from the archive...
    assert alice.receive("bob", in_flight) == b"sent before re-registering"
    # ...but the old session is not promoted or reused to encrypt.
    assert record.current is not old
    out = alice.send(new_bob, b"to the new device")
    assert new_bob.receive("alice", out) == b"to the new device"
    # (It names the new device's prekeys, which the old device does not hold.)
    with pytest.raises((UnknownPrekeyError, DecryptionError)):
        bob.receive("alice", alice.send(bob, b"old device must not read this"))


def test_identity_change_is_reported_on_receive() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    bob.receive("alice", alice.send(bob, b"hello"))
    new_alice = Device("alice", 9)
    kind, body, commitment = new_alice.send(bob, b"new phone")
    result = bob.record("alice").decrypt(
        kind, body, commitment, identity=bob.identity, prekeys=bob.prekeys
    )
    assert result.new_session and result.identity_changed
    assert result.remote_identity == new_alice.identity.public


def test_simultaneous_initiation_converges_on_one_session() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    a_msg = alice.send(bob, b"from alice")
    b_msg = bob.send(alice, b"from bob")
    assert alice.receive("bob", b_msg) == b"from bob"
    assert bob.receive("alice", a_msg) == b"from alice"
    for i in range(3):
        assert bob.receive("alice", alice.send(bob, b"a%d" % i)) == b"a%d" % i
        assert alice.receive("bob", bob.send(alice, b"b%d" % i)) == b"b%d" % i
    a_current, b_current = alice.record("bob").current, bob.record("alice").current
    assert a_current is not None and b_current is not None
    assert a_current.base_key == b_current.base_key


def test_archive_is_bounded() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    record = alice.record("bob")
    bob.prekeys.generate_one_time_prekeys(MAX_ARCHIVED_SESSIONS + 5)
    for _ in range(MAX_ARCHIVED_SESSIONS + 3):
        record.promote(
            Session.initiate(alice.identity, bob.prekeys.bundle(1, 2), local_registration_id=1)
        )
    assert len(record.archived) == MAX_ARCHIVED_SESSIONS


def test_no_session_and_bad_inputs_are_typed() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    with pytest.raises(NoSessionError):
        SessionRecord().encrypt(b"x", bytes(32))
    msg = alice.send(bob, b"x")
    with pytest.raises(DecodeError):
        alice.record("bob").encrypt(b"x", bytes(31))
    with pytest.raises(NoSessionError):
        bob.record("alice").decrypt(
            RATCHET,
            codec.encode(decode(pb.PrekeyMessage, msg[1]).message),
            msg[2],
            identity=bob.identity,
            prekeys=bob.prekeys,
        )
    with pytest.raises(DecodeError):
        bob.record("alice").decrypt(
            pb.Envelope.SENDER_KEY, msg[1], msg[2], identity=bob.identity, prekeys=bob.prekeys
        )
    with pytest.raises(DecodeError):
        bob.record("alice").decrypt(
            RATCHET, b"\xff\x00", msg[2], identity=bob.identity, prekeys=bob.prekeys
        )


def test_serialization_round_trip_mid_conversation() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    pending = [alice.send(bob, b"p%d" % i) for i in range(3)]
    bob.receive("alice", pending[0])
    for name, device in (("bob", alice), ("alice", bob)):
        blob = device.records[name].to_bytes()
        device.records[name] = SessionRecord.from_bytes(blob)
        assert device.records[name].to_bytes() == blob
    current = alice.records["bob"].current
    assert current is not None
    assert Session.from_bytes(current.to_bytes()).to_bytes() == current.to_bytes()
    assert bob.receive("alice", pending[2]) == b"p2"
    assert bob.receive("alice", pending[1]) == b"p1"
    assert alice.receive("bob", bob.send(alice, b"ok")) == b"ok"


def test_repr_shows_no_key_material() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    alice.send(bob, b"x")
    record = alice.record("bob")
    text = repr(record)
    assert "Session(" in text
    current = record.current
    assert current is not None
    for secret in (current.to_bytes()[-200:], alice.identity.to_bytes()):
        assert secret.hex() not in text and repr(secret) not in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_record_decoder_gives_only_typed_errors(data: bytes) -> None:
    try:
        SessionRecord.from_bytes(data)
    except TidingsError:
        pass


def test_record_decoder_truncations_and_mutations() -> None:
    alice, bob = Device("alice", 1), Device("bob", 2)
    bob.receive("alice", alice.send(bob, b"x"))
    alice.receive("bob", bob.send(alice, b"y"))
    blob = alice.record("bob").to_bytes()
    for cut in range(0, len(blob), 7):
        with pytest.raises(TidingsError):
            SessionRecord.from_bytes(blob[:cut])
    with pytest.raises(TidingsError):
        SessionRecord.from_bytes(blob + b"\x00")
    rng = random.Random(1)
    for _ in range(300):
        mutated = bytearray(blob)
        mutated[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        try:
            SessionRecord.from_bytes(bytes(mutated))
        except TidingsError:
            pass


# --- conversations across devices with loss, reordering, duplication, interleaving ---------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), devices=st.sampled_from([2, 3]))
def test_random_network_across_devices(seed: int, devices: int) -> None:
    """Every device sends to every other device (a 1:1 chat plus multi-device sync). The
    network loses, duplicates and reorders. Each non-duplicate delivery must decrypt to what
    was sent; each duplicate must raise DuplicateMessageError and change nothing."""
    rng = random.Random(seed)
    names = ["alice-1", "bob-1", "alice-2"][:devices]
    party = {name: Device(name, i + 1) for i, name in enumerate(names)}
    # Plenty of one-time keys so that repeated first contacts never run out.
    for device in party.values():
        device.prekeys.generate_one_time_prekeys(20)
    in_flight: list[tuple[str, str, tuple[int, bytes, bytes], bytes]] = []
    delivered: set[tuple[str, str, bytes]] = set()
    counter = 0
    for _ in range(60):
        action = rng.random()
        if action < 0.45 or not in_flight:
            src = rng.choice(names)
            for dst in names:
                if dst == src:
                    continue
                counter += 1
                plaintext = f"{src}->{dst}#{counter}".encode()
                message = party[src].send(party[dst], plaintext)
                if rng.random() < 0.15:
                    continue  # lost
                in_flight.append((src, dst, message, plaintext))
                if rng.random() < 0.15:
                    in_flight.append((src, dst, message, plaintext))  # duplicated
        else:
            src, dst, message, plaintext = in_flight.pop(rng.randrange(len(in_flight)))
            key = (src, dst, message[1])
            if key in delivered:
                before = party[dst].snapshot()
                with pytest.raises(DuplicateMessageError):
                    party[dst].receive(src, message)
                assert party[dst].snapshot() == before
            else:
                assert party[dst].receive(src, message) == plaintext
                delivered.add(key)
    # The schedule really exercised the sessions (60 steps, at most 45% sends).
    assert len(delivered) >= 10
