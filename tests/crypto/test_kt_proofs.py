"""The epoch tree and its proofs (`tidings.crypto.kt_tree`, `tidings.crypto.kt_proofs`): lookup
(membership and non-membership), history, append-only audit, signed epoch heads (forks) and
witness quorums; tampering refused; hypothesis properties over random update batches."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import kt_device_list as dl
from tidings.crypto import kt_proofs as kp
from tidings.crypto import kt_tree as t
from tidings.crypto import primitives as p
from tidings.crypto import vrf
from tidings.crypto.identity import IdentityKeyPair
from tidings.errors import (
    DecodeError,
    EpochForkError,
    InvalidSignatureError,
    KtProofError,
    TidingsError,
    WitnessQuorumError,
)

VRF_SECRET = bytes(range(32))
VRF_PUBLIC = vrf.vrf_keygen(VRF_SECRET)
SERVER_KEY = bytes([7]) * 32
SERVER_PUBLIC = p.ed25519_public(SERVER_KEY)
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "kt_kat.json").read_text())


def _label(n: int) -> bytes:
    return p.sha256(b"label" + n.to_bytes(4, "big"))


def _list_hash(n: int, version: int) -> bytes:
    return p.sha256(b"list" + n.to_bytes(4, "big") + version.to_bytes(4, "big"))


def _directory(accounts: list[str], batches: int = 3) -> tuple[t.EpochTree, list[bytes]]:
    tree = t.EpochTree()
    proofs = []
    rng = random.Random(5)
    for epoch in range(batches):
        chosen = accounts if epoch == 0 else rng.sample(accounts, len(accounts) // 3)
        changes = {kp.account_label(VRF_SECRET, a)[0]: rng.randbytes(32) for a in chosen}
        proofs.append(kp.make_audit(tree, changes)[0])
    return tree, proofs


ACCOUNTS = [f"user{i}" for i in range(40)]


def test_known_answers() -> None:
    """Roots and entry hashes from the independent transcription in gen_kt_kat.py."""
    tree = t.EpochTree()
    for batch in VECTORS["epochs"]:
        changes = {
            bytes.fromhex(c["label"]): bytes.fromhex(c["list_hash"]) for c in batch["changes"]
        }
        applied = tree.update(changes)
        for c in batch["changes"]:
            label = bytes.fromhex(c["label"])
            assert applied[label][1].value(label).hex() == c["entry_hash"]
        assert tree.root().hex() == batch["root"]
    assert t.EMPTY_ROOT.hex() == VECTORS["empty_root"]


def test_known_answer_heads() -> None:
    previous = None
    for data, batch, time_ms in zip(
        VECTORS["heads"], VECTORS["epochs"], (1_000, 2_000), strict=False
    ):
        head = kp.sign_head(
            SERVER_KEY, batch["epoch"], bytes.fromhex(batch["root"]), time_ms, previous
        )
        assert head.encode().hex() == data
        assert kp.decode_head(SERVER_PUBLIC, bytes.fromhex(data)) == head
        previous = head


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.integers(0, 12), max_size=8), min_size=1, max_size=3))
def test_random_batches_lookups_verify_against_the_root(batches: list[list[int]]) -> None:
    tree = t.EpochTree()
    for batch in batches:
        changes = {
            kp.account_label(VRF_SECRET, f"a{n}")[0]: _list_hash(n, tree.epoch) for n in batch
        }
        tree.update(changes)
        for n in range(13):
            found = kp.verify_lookup(
                VRF_PUBLIC, f"a{n}", tree.root(), kp.make_lookup(tree, VRF_SECRET, f"a{n}")
            )
            assert found.entry == tree.current(found.label)


def test_lookup_membership_and_history() -> None:
    tree, _ = _directory(ACCOUNTS)
    root = tree.root()
    for account in ACCOUNTS:
        proof = kp.make_lookup(tree, VRF_SECRET, account)
        found = kp.verify_lookup(VRF_PUBLIC, account, root, proof)
        assert found.entry == tree.current(found.label)
        assert found.entry is not None
        history = kp.decode_history(kp.encode_history(tree.history(found.label)))
        kp.verify_history(found.label, found.entry, history)


def test_a_lookup_binds_the_device_list() -> None:
    phone = IdentityKeyPair(bytes([1]) * 32, bytes([2]) * 32)
    first = dl.sign_device_list("alice", 1, [(1, phone.public)], signer=1, signer_key=phone)
    second = dl.sign_device_list(
        "alice",
        2,
        [(1, phone.public), (2, phone.public)],
        signer=1,
        signer_key=phone,
        previous=first,
    )
    tree = t.EpochTree()
    label = kp.account_label(VRF_SECRET, "alice")[0]
    tree.update({label: first.hash()})
    found = kp.verify_lookup(
        VRF_PUBLIC, "alice", tree.root(), kp.make_lookup(tree, VRF_SECRET, "alice")
    )
    assert found.entry is not None
    kp.check_device_list(found.entry, first)
    with pytest.raises(KtProofError):
        kp.check_device_list(found.entry, second)


def test_lookup_non_membership() -> None:
    empty = t.EpochTree()
    assert (
        kp.verify_lookup(
            VRF_PUBLIC, "nobody", empty.root(), kp.make_lookup(empty, VRF_SECRET, "nobody")
        ).entry
        is None
    )
    tree, _ = _directory(ACCOUNTS)
    for account in ("nobody", "carol", "user40", "user999"):
        proof = kp.make_lookup(tree, VRF_SECRET, account)
        assert kp.verify_lookup(VRF_PUBLIC, account, tree.root(), proof).entry is None


def test_a_proof_for_another_account_or_root_is_refused() -> None:
    tree, _ = _directory(ACCOUNTS)
    proof = kp.make_lookup(tree, VRF_SECRET, "user1")
    with pytest.raises(TidingsError):
        kp.verify_lookup(VRF_PUBLIC, "user2", tree.root(), proof)
    with pytest.raises(KtProofError):
        kp.verify_lookup(VRF_PUBLIC, "user1", bytes(32), proof)


def test_every_bit_flip_of_a_lookup_proof_is_refused() -> None:
    tree, _ = _directory(ACCOUNTS)
    for account in ("user3", "nobody"):
        proof = kp.make_lookup(tree, VRF_SECRET, account)
        for i in range(len(proof) * 8):
            flipped = bytearray(proof)
            flipped[i // 8] ^= 1 << (i % 8)
            with pytest.raises(TidingsError):
                kp.verify_lookup(VRF_PUBLIC, account, tree.root(), bytes(flipped))


def test_history_breaks_are_refused() -> None:
    tree, _ = _directory(ACCOUNTS, batches=4)
    label = next(
        kp.account_label(VRF_SECRET, a)[0]
        for a in ACCOUNTS
        if len(tree.history(kp.account_label(VRF_SECRET, a)[0])) >= 2
    )
    history = tree.history(label)
    current = history[0]
    with pytest.raises(KtProofError):
        kp.verify_history(label, current, history[1:])
    with pytest.raises(KtProofError):
        kp.verify_history(label, current, history[:-1] if len(history) > 2 else history[:1])
    with pytest.raises(KtProofError):
        kp.verify_history(label, current, [history[0], t.Entry(9, bytes(32), bytes(32), 0)])


def test_audit_proofs_chain_epochs() -> None:
    tree = t.EpochTree()
    roots = [tree.root()]
    proofs = []
    rng = random.Random(9)
    labels = [_label(i) for i in range(60)]
    for _ in range(4):
        changes = {label: rng.randbytes(32) for label in rng.sample(labels, 20)}
        proofs.append(kp.make_audit(tree, changes)[0])
        roots.append(tree.root())
    for epoch, proof in enumerate(proofs, start=1):
        kp.verify_audit(roots[epoch - 1], roots[epoch], epoch, proof)
    with pytest.raises(KtProofError):
        kp.verify_audit(roots[0], roots[2], 1, proofs[0])
    with pytest.raises(KtProofError):
        kp.verify_audit(roots[1], roots[2], 3, proofs[1])


def test_every_byte_of_an_audit_proof_is_bound() -> None:
    tree = t.EpochTree()
    kp.make_audit(tree, {_label(i): _list_hash(i, 1) for i in range(12)})
    old = tree.root()
    proof, _ = kp.make_audit(tree, {_label(i): _list_hash(i, 2) for i in (1, 5, 20)})
    new = tree.root()
    for i in range(len(proof)):
        flipped = bytearray(proof)
        flipped[i] ^= 1 << (i % 8)
        with pytest.raises(TidingsError):
            kp.verify_audit(old, new, 2, bytes(flipped))


def test_an_audit_hiding_a_changed_label_or_a_rewrite_is_refused() -> None:
    tree = t.EpochTree()
    kp.make_audit(tree, {_label(i): _list_hash(i, 1) for i in range(8)})
    old = tree.root()
    # A server that rewrites entry 3 without chaining it (a fresh version 1) builds a tree
    # whose root an honest audit proof of "no change to label 3" cannot reach.
    rogue = t.EpochTree()
    kp.make_audit(rogue, {_label(i): _list_hash(i, 1) for i in range(8) if i != 3})
    kp.make_audit(rogue, {_label(3): _list_hash(3, 99)})
    honest_proof, _ = kp.make_audit(tree, {_label(0): _list_hash(0, 2)})
    with pytest.raises(KtProofError):
        kp.verify_audit(old, rogue.root(), 2, honest_proof)


def _heads(count: int) -> list[kp.EpochHead]:
    heads: list[kp.EpochHead] = []
    for epoch in range(1, count + 1):
        heads.append(
            kp.sign_head(
                SERVER_KEY, epoch, _label(epoch), 1000 * epoch, heads[-1] if heads else None
            )
        )
    return heads


def test_heads_round_trip_and_chain() -> None:
    heads = _heads(3)
    for head in heads:
        assert kp.decode_head(SERVER_PUBLIC, head.encode()) == head
        assert len(head.encode()) == kp.HEAD_LEN
    kp.check_successor(heads[0], heads[1])
    kp.check_successor(heads[1], heads[2])
    with pytest.raises(EpochForkError):
        kp.check_successor(heads[0], heads[2])
    with pytest.raises(InvalidSignatureError):
        kp.decode_head(p.ed25519_public(bytes(32)), heads[0].encode())
    data = heads[0].encode()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(TidingsError):
            kp.decode_head(SERVER_PUBLIC, bytes(flipped))


def test_a_fork_is_detected() -> None:
    heads = _heads(2)
    fork = kp.sign_head(SERVER_KEY, 2, _label(77), 2000, heads[0])
    kp.check_successor(heads[0], fork)  # each branch alone is well formed ...
    with pytest.raises(EpochForkError):
        kp.check_no_fork(heads[1], fork)  # ... but two heads for one epoch are a fork
    kp.check_no_fork(heads[1], heads[1])
    with pytest.raises(EpochForkError):
        kp.check_successor(fork, kp.sign_head(SERVER_KEY, 3, _label(3), 3000, heads[1]))


def test_witness_quorum() -> None:
    head = _heads(1)[0]
    witnesses = [bytes([i]) * 32 for i in range(1, 5)]
    trusted = {p.ed25519_public(w) for w in witnesses[:3]}
    cosigs = [kp.witness_sign(w, head) for w in witnesses]
    decoded = kp.decode_cosignatures(kp.encode_cosignatures([*cosigs, cosigs[0]]))
    assert kp.verify_witnesses(head, decoded, trusted, 3) == 3  # duplicate and untrusted ignored
    with pytest.raises(WitnessQuorumError):
        kp.verify_witnesses(head, decoded, trusted, 4)
    other = _heads(2)[1]
    with pytest.raises(WitnessQuorumError):
        kp.verify_witnesses(other, decoded, trusted, 1)
    with pytest.raises(DecodeError):
        kp.decode_cosignatures(bytes([kp.MAX_WITNESSES + 1]) + bytes(96 * (kp.MAX_WITNESSES + 1)))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 80), st.binary(min_size=32, max_size=32)), max_size=25),
        min_size=1,
        max_size=4,
    )
)
def test_random_batches_audit_and_lookup(batches: list[list[tuple[int, bytes]]]) -> None:
    tree = t.EpochTree()
    for batch in batches:
        old = tree.root()
        proof, applied = kp.make_audit(tree, {_label(n): h for n, h in batch})
        changes = kp.verify_audit(old, tree.root(), tree.epoch, proof)
        assert {c.label for c in changes} == set(applied)
    leaves = [
        (int.from_bytes(_label(n), "big"), t.LABEL_BITS, t.leaf_hash(_label(n), e.value(_label(n))))
        for n in range(81)
        if (e := tree.current(_label(n))) is not None
    ]
    assert t.build_root(leaves) == tree.root()
    for n in range(0, 81, 7):
        path = tree.path(_label(n))
        assert path.member == (tree.current(_label(n)) is not None)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400))
def test_decoders_give_only_typed_errors(data: bytes) -> None:
    for decode in (
        lambda d: kp.verify_lookup(VRF_PUBLIC, "user1", t.EMPTY_ROOT, d),
        kp.decode_audit,
        kp.decode_history,
        kp.decode_cosignatures,
        lambda d: kp.decode_head(SERVER_PUBLIC, d),
    ):
        try:
            decode(data)
        except TidingsError:
            pass
