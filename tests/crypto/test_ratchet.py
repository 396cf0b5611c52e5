"""Tidings DR v1: known answers, limits, failure atomicity, storage, randomized conversations."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tidings.crypto import symmetric
from tidings.crypto.primitives import x25519_public
from tidings.crypto.ratchet import (
    DR_ROOT_INFO,
    HEADER_LEN,
    MAX_COUNTER,
    MAX_RECEIVING_CHAINS,
    MAX_SKIP,
    MAX_STORED_SKIPPED_KEYS,
    STATE_VERSION,
    DoubleRatchet,
    Header,
)
from tidings.errors import (
    ChainExhaustedError,
    DecodeError,
    DecryptionError,
    DuplicateMessageError,
    InvalidKeyError,
    OversizedError,
    ProtocolError,
    TidingsError,
    TooManySkippedMessagesError,
    TruncatedError,
    UnsupportedVersionError,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KAT = json.loads((VECTORS / "ratchet_kat.json").read_text())
AD = b"associated data"


def counter_rng(label: bytes) -> Callable[[int], bytes]:
    """A deterministic rng, so failures reproduce and hypothesis can shrink."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        return hashlib.sha256(label + next(counter).to_bytes(8, "big")).digest()[:n]

    return rng


def make_pair(label: bytes = b"pair") -> tuple[DoubleRatchet, DoubleRatchet]:
    sk = hashlib.sha256(label + b"/sk").digest()
    bob_private = hashlib.sha256(label + b"/bob").digest()
    alice = DoubleRatchet.init_alice(
        sk, x25519_public(bob_private), rng=counter_rng(label + b"/alice-rng")
    )
    bob = DoubleRatchet.init_bob(sk, bob_private, rng=counter_rng(label + b"/bob-rng"))
    return alice, bob


def exchange(sender: DoubleRatchet, receiver: DoubleRatchet, body: bytes = b"hello") -> None:
    header, ciphertext = sender.encrypt(body, AD)
    assert receiver.decrypt(header, ciphertext, AD) == body


def assert_fails_unchanged(
    party: DoubleRatchet,
    error: type[TidingsError] | tuple[type[TidingsError], ...],
    header: Header,
    ciphertext: bytes,
    ad: bytes = AD,
) -> None:
    before = party.to_bytes()
    with pytest.raises(error):
        party.decrypt(header, ciphertext, ad)
    assert party.to_bytes() == before


# --- known answers --------------------------------------------------------------------------------


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def list_rng(outputs: list[str]) -> Callable[[int], bytes]:
    queue = [h(x) for x in outputs]

    def rng(n: int) -> bytes:
        assert n == 32
        return queue.pop(0)

    return rng


def test_kat_file_matches_its_independent_generator() -> None:
    spec = importlib.util.spec_from_file_location("gen_ratchet_kat", VECTORS / "gen_ratchet_kat.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.build() == KAT
    source = (VECTORS / "gen_ratchet_kat.py").read_text().splitlines()
    assert not [line for line in source if line.startswith(("import tidings", "from tidings"))]


def test_kat_constants_are_protocol_constants() -> None:
    assert KAT["constants"]["kdf_rk_info"].encode() == DR_ROOT_INFO
    assert KAT["constants"]["message_keys_info"].encode() == symmetric.DR_MESSAGE_KEYS_INFO


def test_kat_symmetric_steps() -> None:
    """KDF_CK and ENCRYPT, step by step, against every encrypt event."""
    encrypts = [e for e in KAT["events"] if e["op"] == "encrypt"]
    assert len(encrypts) >= 6
    for event in encrypts:
        mk, next_ck = symmetric.chain_step(h(event["chain_key"]))
        assert mk.hex() == event["kdf_ck"]["message_key"]
        assert next_ck.hex() == event["kdf_ck"]["next_chain_key"]
        ad = h(event["associated_data"]) + h(event["header"])
        sealed = symmetric.seal(mk, h(event["plaintext"]), ad, symmetric.DR_MESSAGE_KEYS_INFO)
        assert sealed.hex() == event["ciphertext"]


def _state(party: DoubleRatchet) -> dict[str, Any]:
    def opt(value: bytes | None) -> str | None:
        return None if value is None else value.hex()

    return {
        "RK": party._rk.hex(),
        "DHs_public": party._dhs_pub.hex(),
        "DHr": opt(party._dhr),
        "CKs": opt(party._cks),
        "CKr": opt(party._ckr),
        "Ns": party._ns,
        "Nr": party._nr,
        "PN": party._pn,
        "skipped": [[dh.hex(), n] for dh, n in party._skipped],
    }


def test_kat_conversation() -> None:
    """Replays the vector conversation: every header, ciphertext, plaintext and the full state
    (root, chain and ratchet keys, counters, skipped keys) after each step match."""
    inputs = KAT["inputs"]
    alice = DoubleRatchet.init_alice(
        h(inputs["shared_secret"]),
        h(inputs["bob_ratchet_public"]),
        rng=list_rng(inputs["alice_rng_outputs"]),
    )
    bob = DoubleRatchet.init_bob(
        h(inputs["shared_secret"]),
        h(inputs["bob_ratchet_private"]),
        rng=list_rng(inputs["bob_rng_outputs"]),
    )
    init = KAT["alice_init"]
    assert alice._dhs_pub.hex() == init["alice_ratchet_public"]
    assert alice._rk.hex() == init["kdf_rk"]["root_key"]
    assert alice._cks is not None and alice._cks.hex() == init["kdf_rk"]["chain_key"]

    parties = {"alice": alice, "bob": bob}
    wire: dict[str, tuple[Header, bytes, bytes]] = {}
    ratchet_steps = 0
    for event in KAT["events"]:
        party = parties[event["party"]]
        if event["op"] == "encrypt":
            header, ciphertext = party.encrypt(h(event["plaintext"]), h(event["associated_data"]))
            assert header.encode().hex() == event["header"]
            assert ciphertext.hex() == event["ciphertext"]
            wire[event["message"]] = (header, ciphertext, h(event["associated_data"]))
        else:
            header, ciphertext, ad = wire[event["message"]]
            received = Header.decode(header.encode())
            assert party.decrypt(received, ciphertext, ad).hex() == event["plaintext"]
            ratchet_steps += event["dh_ratchet"] is not None
        assert _state(party) == event["state_after"], event["message"]
    assert ratchet_steps == 4


# --- header ---------------------------------------------------------------------------------------


def test_header_layout() -> None:
    header = Header(bytes(range(32)), 0x01020304, 0xA0B0C0D0)
    encoded = header.encode()
    assert len(encoded) == HEADER_LEN
    assert encoded == bytes(range(32)) + bytes.fromhex("01020304a0b0c0d0")
    assert Header.decode(encoded) == header
    assert hash(Header.decode(encoded)) == hash(header)
    assert Header(bytes(32), 0, MAX_COUNTER).encode()[-4:] == b"\xff" * 4


def test_header_is_immutable() -> None:
    header = Header(bytes(32), 1, 2)
    with pytest.raises(AttributeError):
        header.n = 3
    with pytest.raises(AttributeError):
        del header.dh
    assert header.n == 2


@pytest.mark.parametrize(
    ("dh", "pn", "n"),
    [
        (bytes(31), 0, 0),
        (bytes(33), 0, 0),
        (bytearray(32), 0, 0),
        (bytes(32), -1, 0),
        (bytes(32), 0, MAX_COUNTER + 1),
        (bytes(32), 0, 1.0),
    ],
)
def test_header_rejects_bad_fields(dh: Any, pn: Any, n: Any) -> None:
    with pytest.raises(DecodeError):
        Header(dh, pn, n)


@given(st.binary(max_size=100))
def test_header_decode_never_crashes(data: bytes) -> None:
    try:
        header = Header.decode(data)
    except TidingsError as exc:
        assert len(data) != HEADER_LEN
        assert isinstance(exc, TruncatedError if len(data) < HEADER_LEN else DecodeError)
    else:
        assert header.encode() == data


# --- initialisation and basic use -------------------------------------------------------------


def test_basic_ping_pong_and_ratchet_keys_change() -> None:
    alice, bob = make_pair()
    keys = set()
    for i in range(4):
        header, ct = alice.encrypt(b"a%d" % i, AD)
        keys.add(header.dh)
        assert bob.decrypt(header, ct, AD) == b"a%d" % i
        header, ct = bob.encrypt(b"b%d" % i, AD)
        keys.add(header.dh)
        assert alice.decrypt(header, ct, AD) == b"b%d" % i
    assert len(keys) == 8


def test_empty_and_large_plaintexts() -> None:
    alice, bob = make_pair()
    for body in (b"", b"x" * 15, b"x" * 16, b"x" * 100_000):
        exchange(alice, bob, body)
        exchange(bob, alice, body)


def test_bob_cannot_send_first() -> None:
    _, bob = make_pair()
    before = bob.to_bytes()
    with pytest.raises(ProtocolError):
        bob.encrypt(b"hi", AD)
    assert bob.to_bytes() == before


def test_init_rejects_bad_keys() -> None:
    good = bytes(range(32))
    with pytest.raises(InvalidKeyError):
        DoubleRatchet.init_alice(bytes(31), x25519_public(good))
    with pytest.raises(InvalidKeyError):
        DoubleRatchet.init_alice(good, bytes(33))
    with pytest.raises(InvalidKeyError):
        DoubleRatchet.init_alice(good, bytes(32))  # low order: all-zero DH output
    with pytest.raises(InvalidKeyError):
        DoubleRatchet.init_bob(good, bytes(16))
    with pytest.raises(InvalidKeyError):
        DoubleRatchet.init_alice(good, x25519_public(good), rng=lambda n: bytes(n - 1))
    with pytest.raises(TypeError):
        DoubleRatchet()


def test_default_rng_gives_fresh_keys() -> None:
    bob_private = bytes(range(32))
    a1 = DoubleRatchet.init_alice(bytes(32), x25519_public(bob_private))
    a2 = DoubleRatchet.init_alice(bytes(32), x25519_public(bob_private))
    assert a1.encrypt(b"", b"")[0].dh != a2.encrypt(b"", b"")[0].dh


def test_repr_shows_no_key_material() -> None:
    alice, bob = make_pair()
    exchange(alice, bob)
    exchange(bob, alice)
    for party in (alice, bob):
        text = repr(party)
        for secret in (party._rk, party._dhs_priv, party._dhs_pub, party._cks, party._ckr):
            assert secret is not None
            assert secret.hex()[:8] not in text
        assert "b'" not in text and 'b"' not in text
        assert "sent=" in text


def test_associated_data_is_bound() -> None:
    alice, bob = make_pair()
    header, ct = alice.encrypt(b"hi", b"ad-1")
    assert_fails_unchanged(bob, DecryptionError, header, ct, b"ad-2")
    assert bob.decrypt(header, ct, b"ad-1") == b"hi"


def test_rng_failure_after_authentication_leaves_state_unchanged() -> None:
    sk, bob_private = bytes(range(32)), bytes(range(1, 33))
    alice = DoubleRatchet.init_alice(sk, x25519_public(bob_private))
    bob = DoubleRatchet.init_bob(sk, bob_private, rng=lambda n: b"short")
    header, ct = alice.encrypt(b"hi", AD)
    assert_fails_unchanged(bob, InvalidKeyError, header, ct)


# --- duplicates, tampering, atomicity ----------------------------------------------------------


def test_duplicates_in_every_position() -> None:
    alice, bob = make_pair()
    msgs = [alice.encrypt(b"m%d" % i, AD) for i in range(4)]
    assert bob.decrypt(*msgs[2], AD) == b"m2"  # skips 0 and 1
    assert_fails_unchanged(bob, DuplicateMessageError, *msgs[2])  # current chain, n < Nr
    assert bob.decrypt(*msgs[0], AD) == b"m0"  # from skipped keys
    assert_fails_unchanged(bob, DuplicateMessageError, *msgs[0])  # skipped key consumed
    exchange(bob, alice)
    exchange(alice, bob)  # Bob now on Alice's second chain
    assert_fails_unchanged(bob, DuplicateMessageError, *msgs[2])  # earlier chain, key gone
    assert bob.decrypt(*msgs[1], AD) == b"m1"  # earlier chain, stored key
    assert bob.decrypt(*msgs[3], AD) == b"m3"
    assert_fails_unchanged(bob, DuplicateMessageError, *msgs[3])


def test_message_from_bobs_initial_key_is_refused() -> None:
    alice, _ = make_pair()
    bob_initial = alice._dhr
    assert bob_initial is not None
    fake = Header(bob_initial, 0, 0)
    assert_fails_unchanged(alice, DecryptionError, fake, bytes(48))


def _expected_for_header_bit(receiver: DoubleRatchet, header: Header, bit: int) -> type:
    if bit < 256:
        return DecryptionError  # unknown ratchet key: DH ratchet attempt, MAC fails
    if bit < 288:
        return DecryptionError  # pn is authenticated as associated data
    n = int.from_bytes(_flip(header.encode(), bit)[36:], "big")
    if n < receiver._nr:
        return DuplicateMessageError
    if n - receiver._nr > MAX_SKIP:
        return TooManySkippedMessagesError
    return DecryptionError


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def test_every_flipped_header_bit_is_refused_with_the_right_error() -> None:
    alice, bob = make_pair()
    for _ in range(3):
        exchange(alice, bob)
    header, ct = alice.encrypt(b"target", AD)
    for bit in range(HEADER_LEN * 8):
        bad = Header.decode(_flip(header.encode(), bit))
        assert_fails_unchanged(bob, _expected_for_header_bit(bob, header, bit), bad, ct)
    assert bob.decrypt(header, ct, AD) == b"target"


@pytest.mark.parametrize("stage", ["current", "skipped", "ratchet"])
def test_flipped_ciphertext_and_ad_bits_are_refused(stage: str) -> None:
    alice, bob = make_pair()
    exchange(alice, bob)
    if stage == "ratchet":
        header, ct = bob.encrypt(b"target" * 5, AD)
        receiver = alice
    else:
        skipped = alice.encrypt(b"target" * 5, AD)
        later = alice.encrypt(b"later", AD)
        receiver = bob
        if stage == "skipped":
            assert bob.decrypt(*later, AD) == b"later"
        header, ct = skipped
    for bit in range(0, len(ct) * 8, 7):
        assert_fails_unchanged(receiver, DecryptionError, header, _flip(ct, bit))
    for bit in range(len(AD) * 8):
        assert_fails_unchanged(receiver, DecryptionError, header, ct, _flip(AD, bit))
    for bad in (ct[:-1], ct + b"\0", ct[:16], b"", ct[:-32]):
        assert_fails_unchanged(receiver, DecryptionError, header, bad)
    assert receiver.decrypt(header, ct, AD) == b"target" * 5


# --- limits ---------------------------------------------------------------------------------------


def test_gap_limit_in_the_current_chain() -> None:
    alice, bob = make_pair()
    exchange(alice, bob)  # Bob now has Alice's chain; Nr = 1
    msgs = [alice.encrypt(b"%d" % i, AD) for i in range(MAX_SKIP + 2)]
    # msgs[i] has n = i + 1; reaching n = MAX_SKIP + 2 from Nr = 1 skips MAX_SKIP + 1 keys.
    assert_fails_unchanged(bob, TooManySkippedMessagesError, *msgs[MAX_SKIP + 1])
    assert bob.decrypt(*msgs[MAX_SKIP], AD) == b"%d" % MAX_SKIP  # exactly MAX_SKIP skipped
    assert len(bob._skipped) == MAX_SKIP
    assert bob.decrypt(*msgs[0], AD) == b"0"


def test_gap_limit_on_a_new_chain() -> None:
    alice, bob = make_pair()
    msgs = [alice.encrypt(b"%d" % i, AD) for i in range(MAX_SKIP + 2)]
    assert_fails_unchanged(bob, TooManySkippedMessagesError, *msgs[MAX_SKIP + 1])
    assert bob.decrypt(*msgs[MAX_SKIP], AD) == b"%d" % MAX_SKIP
    assert len(bob._skipped) == MAX_SKIP


@pytest.mark.parametrize("sent", [MAX_SKIP + 1, MAX_SKIP + 2])
def test_gap_limit_at_the_end_of_the_previous_chain(sent: int) -> None:
    alice, bob = make_pair()
    exchange(alice, bob)
    for _ in range(sent - 1):
        alice.encrypt(b"lost", AD)  # Alice's chain ends with pn = sent; Bob has Nr = 1
    exchange(bob, alice)
    header, ct = alice.encrypt(b"new chain", AD)
    assert header.pn == sent
    if sent - 1 > MAX_SKIP:
        assert_fails_unchanged(bob, TooManySkippedMessagesError, header, ct)
    else:
        assert bob.decrypt(header, ct, AD) == b"new chain"
        assert len(bob._skipped) == sent - 1


def test_stored_skipped_keys_are_capped_and_oldest_evicted() -> None:
    alice, bob = make_pair()
    exchange(alice, bob)  # Nr = 1 on Alice's chain; msgs below have n = i + 1
    msgs = [alice.encrypt(b"%d" % i, AD) for i in range(2600)]
    for i in (1000, 2000, 2599):  # gaps of 1000, 999, 598 keys
        assert bob.decrypt(*msgs[i], AD) == b"%d" % i
    assert len(bob._skipped) == MAX_STORED_SKIPPED_KEYS
    evicted = 1000 + 999 + 598 - MAX_STORED_SKIPPED_KEYS
    # The oldest keys (lowest n) went first: msgs[0 .. evicted-1] are lost, the rest decrypt.
    assert_fails_unchanged(bob, DuplicateMessageError, *msgs[evicted - 1])
    assert bob.decrypt(*msgs[evicted], AD) == b"%d" % evicted
    assert bob.decrypt(*msgs[2598], AD) == b"2598"
    assert len(bob._skipped) == MAX_STORED_SKIPPED_KEYS - 2
    restored = DoubleRatchet.from_bytes(bob.to_bytes())
    assert restored.decrypt(*msgs[1500], AD) == b"1500"


def test_only_the_most_recent_receiving_chains_keep_skipped_keys() -> None:
    alice, bob = make_pair()
    held_back = []
    for _ in range(MAX_RECEIVING_CHAINS + 2):
        held_back.append(alice.encrypt(b"late", AD))  # one message per Alice chain, undelivered
        exchange(alice, bob)
        exchange(bob, alice)
    assert len(bob._chains) == MAX_RECEIVING_CHAINS
    chain_keys = [hdr.dh for hdr, _ in held_back]
    assert bob._chains == chain_keys[-MAX_RECEIVING_CHAINS:]
    assert {dh for dh, _ in bob._skipped} == set(bob._chains)
    # Chains older than the kept five are forgotten: their messages look like a new ratchet key.
    for header, ct in held_back[:-MAX_RECEIVING_CHAINS]:
        assert_fails_unchanged(bob, DecryptionError, header, ct)
    for header, ct in held_back[-MAX_RECEIVING_CHAINS:]:
        assert bob.decrypt(header, ct, AD) == b"late"
    assert not bob._skipped


def test_counter_exhaustion_is_a_typed_error() -> None:
    alice, bob = make_pair()
    exchange(alice, bob)
    alice._ns = MAX_COUNTER
    header, _ = alice.encrypt(b"last", AD)
    assert header.n == MAX_COUNTER
    before = alice.to_bytes()
    with pytest.raises(ChainExhaustedError):
        alice.encrypt(b"one too many", AD)
    assert alice.to_bytes() == before
    # pn = 2**32 cannot be sent either, until the next ratchet step resets it.
    exchange(bob, alice)
    with pytest.raises(ChainExhaustedError):
        alice.encrypt(b"pn too large", AD)
    assert DoubleRatchet.from_bytes(alice.to_bytes()).to_bytes() == alice.to_bytes()


# --- storage --------------------------------------------------------------------------------------


Pending = list[tuple[str, Header, bytes]]


def _mid_conversation() -> tuple[DoubleRatchet, DoubleRatchet, Pending]:
    """Three rounds, each leaving one message per direction undelivered (so skipped keys)."""
    alice, bob = make_pair(b"storage")
    pending: Pending = []
    for round_ in range(3):
        pending.append(("alice", *alice.encrypt(b"late a%d" % round_, AD)))
        exchange(alice, bob)
        pending.append(("bob", *bob.encrypt(b"late b%d" % round_, AD)))
        exchange(bob, alice)
    return alice, bob, pending


def test_serialization_round_trip_at_every_stage() -> None:
    alice, bob = make_pair()
    for party in (alice, bob):  # fresh Alice, fresh Bob
        assert DoubleRatchet.from_bytes(party.to_bytes()).to_bytes() == party.to_bytes()
    alice, bob, pending = _mid_conversation()
    for party in (alice, bob):
        data = party.to_bytes()
        assert data[:4] == b"TDRS" and data[4] == STATE_VERSION
        restored = DoubleRatchet.from_bytes(data)
        assert restored.to_bytes() == data
    alice2 = DoubleRatchet.from_bytes(alice.to_bytes(), rng=counter_rng(b"x"))
    bob2 = DoubleRatchet.from_bytes(bob.to_bytes(), rng=counter_rng(b"y"))
    assert len(alice2._skipped) == len(bob2._skipped) == 3
    for sender, header, ct in pending:
        receiver = bob2 if sender == "alice" else alice2
        assert receiver.decrypt(header, ct, AD).startswith(b"late")
    exchange(alice2, bob2)
    exchange(bob2, alice2)


def test_from_bytes_refuses_bad_framing() -> None:
    data = _mid_conversation()[1].to_bytes()
    with pytest.raises(DecodeError):
        DoubleRatchet.from_bytes(b"XDRS" + data[4:])
    with pytest.raises(UnsupportedVersionError):
        DoubleRatchet.from_bytes(data[:4] + bytes((STATE_VERSION + 1,)) + data[5:])
    with pytest.raises(TruncatedError):
        DoubleRatchet.from_bytes(data[:-1])
    with pytest.raises(DecodeError):
        DoubleRatchet.from_bytes(data + b"\0")
    with pytest.raises(OversizedError):
        DoubleRatchet.from_bytes(data + bytes(200_000))
    with pytest.raises(DecodeError):
        DoubleRatchet.from_bytes("text")  # type: ignore[arg-type]
    for flags in (1, 2, 4, 5, 6, 8, 0x87):
        with pytest.raises(DecodeError):
            DoubleRatchet.from_bytes(data[:5] + bytes((flags,)) + data[6:])


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_from_bytes_random_input_raises_only_typed_errors(data: bytes) -> None:
    with pytest.raises(TidingsError):
        DoubleRatchet.from_bytes(data)
    with pytest.raises(TidingsError):
        DoubleRatchet.from_bytes(b"TDRS\x01" + data)


_STATE = _mid_conversation()[1].to_bytes()
_FRESH_STATES = [p.to_bytes() for p in make_pair()]


@given(
    base=st.sampled_from([_STATE, *_FRESH_STATES]),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "delete"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_state_loads_canonically_or_fails_typed(
    base: bytes, edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(base)
    for kind, pos, value in edits:
        pos %= len(data) + 1
        if kind == "flip" and pos < len(data):
            data[pos] ^= value or 1
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = bytes((value,))
        elif kind == "delete" and pos < len(data):
            del data[pos]
        if not data:
            data = bytearray(b"T")
    try:
        party = DoubleRatchet.from_bytes(bytes(data))
    except TidingsError:
        return
    assert party.to_bytes() == bytes(data)  # the encoding is canonical
    # A state that loads is internally consistent: using it raises nothing untyped.
    try:
        party.encrypt(b"x", AD)
    except TidingsError:
        pass
    try:
        party.decrypt(Header(bytes(range(32)), 0, 1), bytes(48), AD)
    except TidingsError:
        pass


# --- randomized conversations (stateful) --------------------------------------------------------


@dataclass
class Sent:
    sender: str
    header: Header
    ciphertext: bytes
    ad: bytes
    plaintext: bytes
    delivered: bool = False


OTHER = {"alice": "bob", "bob": "alice"}


class Conversation(RuleBasedStateMachine):
    """Two parties, sends in both directions interleaved at random; the network loses, reorders,
    duplicates and corrupts messages. The model predicts exactly which error each delivery gets."""

    def __init__(self) -> None:
        super().__init__()
        alice, bob = make_pair(b"stateful")
        self.parties = {"alice": alice, "bob": bob}
        self.sent: list[Sent] = []
        # Sender ratchet keys in the order each receiver ratcheted to them.
        self.ratcheted: dict[str, list[bytes]] = {"alice": [], "bob": []}
        self.restores = 0

    @initialize(body=st.binary(max_size=20))
    def first_message(self, body: bytes) -> None:
        self.send("alice", body)

    @rule(sender=st.sampled_from(["alice", "bob"]), body=st.binary(max_size=40))
    def send(self, sender: str, body: bytes) -> None:
        party = self.parties[sender]
        if sender == "bob" and not self.ratcheted["bob"]:
            with pytest.raises(ProtocolError):
                party.encrypt(body, AD)
            return
        ad = AD + body[:3]
        header, ct = party.encrypt(body, ad)
        self.sent.append(Sent(sender, header, ct, ad, body))

    @rule(sender=st.sampled_from(["alice", "bob"]), body=st.binary(max_size=40))
    def send_and_deliver(self, sender: str, body: bytes) -> None:
        """A prompt reply: alternating these makes many DH ratchet steps."""
        count = len(self.sent)
        self.send(sender, body)
        if len(self.sent) > count:
            self._deliver(self.sent[-1])

    def _expected(self, m: Sent) -> type[TidingsError] | None:
        receiver = OTHER[m.sender]
        seen = self.ratcheted[receiver]
        kept = seen[-MAX_RECEIVING_CHAINS:]
        if m.header.dh in seen and m.header.dh not in kept:
            return DecryptionError  # chain forgotten: treated as a new ratchet key
        if m.delivered:
            return DuplicateMessageError
        return None

    def _deliver(self, m: Sent) -> None:
        receiver = self.parties[OTHER[m.sender]]
        expected = self._expected(m)
        if expected is None:
            assert receiver.decrypt(m.header, m.ciphertext, m.ad) == m.plaintext
            m.delivered = True
            seen = self.ratcheted[OTHER[m.sender]]
            if m.header.dh not in seen:
                seen.append(m.header.dh)
        else:
            assert_fails_unchanged(receiver, expected, m.header, m.ciphertext, m.ad)

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def deliver_any(self, data: st.DataObject) -> None:
        """Any message at all: out of order, late, or again (duplicate)."""
        self._deliver(data.draw(st.sampled_from(self.sent)))

    @precondition(lambda self: any(not m.delivered for m in self.sent))
    @rule(data=st.data())
    def deliver_undelivered(self, data: st.DataObject) -> None:
        self._deliver(data.draw(st.sampled_from([m for m in self.sent if not m.delivered])))

    @precondition(lambda self: self.sent)
    @rule(sender=st.sampled_from(["alice", "bob"]))
    def deliver_newest(self, sender: str) -> None:
        """Drives DH ratchet steps: the latest message of a sender, usually on a new chain."""
        mine = [m for m in self.sent if m.sender == sender]
        if mine:
            self._deliver(mine[-1])

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), where=st.sampled_from(["header", "ciphertext", "ad"]))
    def deliver_corrupted(self, data: st.DataObject, where: str) -> None:
        m = data.draw(st.sampled_from(self.sent))
        receiver = self.parties[OTHER[m.sender]]
        header, ct, ad = m.header.encode(), m.ciphertext, m.ad
        if where == "header":
            header = _flip(header, data.draw(st.integers(0, len(header) * 8 - 1)))
        elif where == "ciphertext":
            ct = _flip(ct, data.draw(st.integers(0, len(ct) * 8 - 1)))
        else:
            ad = _flip(ad, data.draw(st.integers(0, len(ad) * 8 - 1)))
        assert_fails_unchanged(
            receiver,
            (DecryptionError, DuplicateMessageError, TooManySkippedMessagesError),
            Header.decode(header),
            ct,
            ad,
        )

    @rule(who=st.sampled_from(["alice", "bob"]))
    def save_and_restore(self, who: str) -> None:
        data = self.parties[who].to_bytes()
        self.restores += 1
        restored = DoubleRatchet.from_bytes(
            data, rng=counter_rng(b"restored/%s/%d" % (who.encode(), self.restores))
        )
        assert restored.to_bytes() == data
        self.parties[who] = restored

    @invariant()
    def limits_hold(self) -> None:
        for party in self.parties.values():
            assert len(party._skipped) <= MAX_STORED_SKIPPED_KEYS
            assert len(party._chains) <= MAX_RECEIVING_CHAINS
            assert {dh for dh, _ in party._skipped} <= set(party._chains)


TestConversation = Conversation.TestCase
TestConversation.settings = settings(
    max_examples=200, stateful_step_count=100, deadline=None
)
