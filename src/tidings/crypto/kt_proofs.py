"""Key transparency proofs over the epoch tree (`tidings.crypto.kt_tree`), and signed epoch heads.

- **Lookup** (`make_lookup` / `verify_lookup`): the VRF proof of the account's label, then either
  its current entry with the compressed path to the root (membership) or the path to the leaf or
  node that excludes the label (non-membership)::

      VRF proof (80) || u8 member || [entry (80)] || u16 n || n x (u8 split bit || sibling (32))
      || [non-member: u8 0 (empty tree) | 1 || subtree preimage]

  Only the siblings of nodes on the path are sent (about log2(entries) of them), so at 10M
  entries a membership proof is about 1 KB.
- **History** (`verify_history`): an account's entries, newest first, each the previous one's
  successor in the hash chain, ending at version 1.
- **Audit** (`make_audit` / `verify_audit`): epoch n -> n+1: every changed label with its old
  and new entry, and the preimages of the unchanged subtrees; the auditor rebuilds both roots and
  checks every change chains (new entry's previous = old entry's hash, version + 1; an insertion
  starts at version 1).
- **Epoch head** (`sign_head` / `decode_head`, `check_successor`, `check_no_fork`): (epoch, root,
  time ms, previous head hash) signed by the server's Ed25519 key; **witness co-signatures**
  (`witness_sign`, `decode_cosignatures`, `verify_witnesses`: k of n trusted witnesses).

Every decoder raises only typed errors and has a size limit below. Pure and synchronous.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tidings.crypto import primitives as p
from tidings.crypto import vrf
from tidings.crypto.kt_device_list import SignedDeviceList
from tidings.crypto.kt_tree import (
    EMPTY_ROOT,
    ENTRY_LEN,
    HASH_LEN,
    LABEL_BITS,
    LABEL_LEN,
    NO_PREVIOUS,
    Entry,
    EpochTree,
    Subtree,
    bit_of,
    build_root,
    label_of,
    leaf_hash,
    node_hash,
    prefix_bytes,
    read_subtree,
)
from tidings.errors import (
    DecodeError,
    EpochForkError,
    InvalidSignatureError,
    KtProofError,
    OversizedError,
    WitnessQuorumError,
)
from tidings.wire.binary import Reader, u8, u16, u32, u64

VRF_ALPHA_PREFIX = b"tidings-kt-account-v1\x00"
MAX_PATH_LEN = LABEL_BITS
"""A path has at most one node per label bit."""
MAX_LOOKUP_PROOF_LEN = vrf.PROOF_LEN + 1 + ENTRY_LEN + 2 + MAX_PATH_LEN * (1 + HASH_LEN) + 1 + 98
MAX_HISTORY_LEN = 100_000
"""Versions of one account a history proof may hold."""
MAX_AUDIT_CHANGES = 1_000_000
"""Changed labels per epoch."""
MAX_AUDIT_SUBTREES = 64 * MAX_AUDIT_CHANGES
MAX_WITNESSES = 32
"""Co-signatures one epoch head may carry."""

HEAD_PREFIX = b"tidings-kt-epoch-head-v1\x00"
WITNESS_PREFIX = b"tidings-kt-witness-v1\x00"
SIGNATURE_LEN = p.ED25519_SIGNATURE_LEN
HEAD_LEN = len(HEAD_PREFIX) + 8 + HASH_LEN + 8 + HASH_LEN + SIGNATURE_LEN
COSIGNATURE_LEN = p.ED25519_PUBLIC_KEY_LEN + SIGNATURE_LEN


def vrf_alpha(account: str) -> bytes:
    return VRF_ALPHA_PREFIX + account.encode("utf-8")


def account_label(vrf_secret: bytes, account: str) -> tuple[bytes, bytes]:
    """(label, VRF proof) of ``account`` under the directory's VRF secret."""
    pi = vrf.prove(vrf_secret, vrf_alpha(account))
    return label_of(vrf.proof_to_hash(pi)), pi


# --- lookup ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lookup:
    """A verified lookup: the account's label and its current entry (None: not in the tree)."""

    label: bytes
    entry: Entry | None


def make_lookup(tree: EpochTree, vrf_secret: bytes, account: str) -> bytes:
    """The lookup proof of ``account`` against ``tree.root()``."""
    label, pi = account_label(vrf_secret, account)
    path = tree.path(label)
    parts = [pi, u8(1 if path.member else 0)]
    if path.member:
        entry = tree.current(label)
        assert entry is not None
        parts.append(entry.encode())
    parts.append(u16(len(path.siblings)))
    parts.extend(u8(bit) + sibling for bit, sibling in path.siblings)
    if not path.member:
        parts.append(b"\x00" if path.terminal is None else b"\x01" + path.terminal)
    return b"".join(parts)


def _climb(key: int, start: bytes, siblings: Sequence[tuple[int, bytes]]) -> bytes:
    node = start
    below = LABEL_BITS
    for bit, sibling in siblings:
        if bit >= below:
            raise KtProofError("a lookup path's split bits do not rise towards the leaf")
        prefix = prefix_bytes(key, bit)
        node = (
            node_hash(bit, prefix, sibling, node)
            if bit_of(key, bit)
            else node_hash(bit, prefix, node, sibling)
        )
        below = bit
    return node


def verify_lookup(vrf_public: bytes, account: str, root: bytes, proof: bytes) -> Lookup:
    """Check a lookup proof of ``account`` against ``root``.

    Raises:
        OversizedError: the proof is longer than `MAX_LOOKUP_PROOF_LEN`.
        TruncatedError, DecodeError: the proof does not decode.
        VrfProofError: the label's VRF proof does not verify.
        KtProofError: the path does not lead to ``root``, or a non-membership terminal does
            not exclude the label.
    """
    if isinstance(proof, bytes | bytearray | memoryview) and len(proof) > MAX_LOOKUP_PROOF_LEN:
        raise OversizedError("a lookup proof is too long")
    reader = Reader(proof, "lookup proof")
    pi = reader.take(vrf.PROOF_LEN)
    member = reader.flag()
    entry = Entry.read(reader) if member else None
    count = reader.u16()
    if count > MAX_PATH_LEN:
        raise DecodeError(f"a lookup path has at most {MAX_PATH_LEN} nodes")
    siblings = [(reader.u8(), reader.take(HASH_LEN)) for _ in range(count)]
    terminal: Subtree | None = None
    if not member and reader.flag():
        terminal = read_subtree(reader)
    reader.finish()
    label = label_of(vrf.verify(vrf_public, vrf_alpha(account), pi))
    key = int.from_bytes(label, "big")
    if entry is not None:
        start = leaf_hash(label, entry.value(label))
    elif terminal is None:
        if siblings or not p.constant_time_equal(root, EMPTY_ROOT):
            raise KtProofError("the tree is not empty")
        return Lookup(label, None)
    else:
        shift = LABEL_BITS - terminal.bits
        if terminal.bits == LABEL_BITS and terminal.key == key:
            raise KtProofError("the non-membership terminal is the label's own leaf")
        if terminal.bits < LABEL_BITS and (terminal.key >> shift) == (key >> shift):
            raise KtProofError("the non-membership terminal holds the label")
        if siblings and terminal.bits <= siblings[0][0]:
            raise KtProofError("the non-membership terminal is above its parent")
        start = terminal.hash
    if not p.constant_time_equal(_climb(key, start, siblings), root):
        raise KtProofError("the lookup path does not lead to the root")
    return Lookup(label, entry)


def check_device_list(entry: Entry, signed: SignedDeviceList) -> None:
    """Check that ``signed`` is the device list a verified lookup's ``entry`` commits to (the
    client then checks its chain with `kt_device_list.verify_chain`).

    Raises:
        KtProofError: the list's hash is not the entry's list hash.
    """
    if not p.constant_time_equal(entry.list_hash, signed.hash()):
        raise KtProofError("the device list is not the one the directory entry commits to")


# --- history ---------------------------------------------------------------------------------


def encode_history(entries: Sequence[Entry]) -> bytes:
    """u32 count || entries, newest first (as `EpochTree.history` returns them)."""
    return u32(len(entries)) + b"".join(entry.encode() for entry in entries)


def decode_history(data: bytes) -> list[Entry]:
    """Parse a history proof.

    Raises:
        TruncatedError, DecodeError: it does not decode, or holds more than `MAX_HISTORY_LEN`
            entries.
    """
    reader = Reader(data, "history proof")
    count = reader.u32()
    if count > MAX_HISTORY_LEN:
        raise DecodeError(f"a history proof holds at most {MAX_HISTORY_LEN} entries")
    entries = reader.records(count, ENTRY_LEN, Entry.read)
    reader.finish()
    return entries


def verify_history(label: bytes, current: Entry, entries: Sequence[Entry]) -> None:
    """Check that ``entries`` (newest first) is the whole hash chain ending at ``current``, the
    entry a verified lookup returned.

    Raises:
        KtProofError: the newest is not ``current``, a link breaks (previous hash, version - 1,
            earlier epoch), or the oldest is not a version 1.
    """
    if not entries or entries[0] != current:
        raise KtProofError("the history does not end at the current entry")
    for newer, older in itertools.pairwise(entries):
        if (
            newer.previous != older.value(label)
            or newer.version != older.version + 1
            or newer.epoch <= older.epoch
        ):
            raise KtProofError(f"the history breaks at version {newer.version}")
    oldest = entries[-1]
    if oldest.version != 1 or oldest.previous != NO_PREVIOUS:
        raise KtProofError("the history does not start at version 1")


# --- audit -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    label: bytes
    old: Entry | None
    new: Entry


def make_audit(
    tree: EpochTree, changes: dict[bytes, bytes]
) -> tuple[bytes, dict[bytes, tuple[Entry | None, Entry]]]:
    """Apply ``changes`` (label -> list hash) to ``tree`` as its next epoch and return (the
    audit proof from the old root to the new one, what `EpochTree.update` returned)."""
    frontier = tree.frontier(changes)
    applied = tree.update(changes)
    parts = [u64(tree.epoch), u32(len(applied))]
    for label in sorted(applied):
        old, new = applied[label]
        parts.append(label + (b"\x00" if old is None else b"\x01" + old.encode()) + new.encode())
    parts.append(u32(len(frontier)))
    parts.extend(frontier)
    return b"".join(parts), applied


def decode_audit(data: bytes) -> tuple[int, list[Change], list[Subtree]]:
    """Parse an audit proof: (new epoch, changes sorted by label, unchanged subtrees).

    Raises:
        TruncatedError, DecodeError: it does not decode, labels are not strictly rising, or it
            holds more than `MAX_AUDIT_CHANGES` changes or `MAX_AUDIT_SUBTREES` subtrees.
    """
    reader = Reader(data, "audit proof")
    epoch = reader.u64()
    count = reader.u32()
    if count > MAX_AUDIT_CHANGES:
        raise DecodeError(f"an audit proof holds at most {MAX_AUDIT_CHANGES} changes")
    changes: list[Change] = []
    for _ in range(count):
        label = reader.take(LABEL_LEN)
        if changes and label <= changes[-1].label:
            raise DecodeError("an audit proof's labels are not strictly rising")
        old = Entry.read(reader) if reader.flag() else None
        changes.append(Change(label, old, Entry.read(reader)))
    subtree_count = reader.u32()
    if subtree_count > MAX_AUDIT_SUBTREES:
        raise DecodeError(f"an audit proof holds at most {MAX_AUDIT_SUBTREES} subtrees")
    subtrees = [read_subtree(reader) for _ in range(subtree_count)]
    reader.finish()
    return epoch, changes, subtrees


def verify_audit(old_root: bytes, new_root: bytes, new_epoch: int, proof: bytes) -> list[Change]:
    """Check that the tree of ``new_root`` is the tree of ``old_root`` with exactly the proof's
    changes applied at ``new_epoch``, each chained to its old entry. Returns the changes.

    Raises:
        TruncatedError, DecodeError: the proof does not decode.
        KtProofError: the epoch differs, a change does not chain, an unchanged subtree holds a
            changed label, or either root does not rebuild.
    """
    epoch, changes, subtrees = decode_audit(proof)
    if epoch != new_epoch:
        raise KtProofError("the audit proof is for another epoch")
    keys = [int.from_bytes(change.label, "big") for change in changes]
    for change in changes:
        old, new = change.old, change.new
        if new.epoch != new_epoch:
            raise KtProofError("a changed entry is not of the audited epoch")
        if old is None:
            if new.version != 1 or new.previous != NO_PREVIOUS:
                raise KtProofError("an inserted entry does not start at version 1")
        elif (
            new.version != old.version + 1
            or new.previous != old.value(change.label)
            or old.epoch >= new_epoch
        ):
            raise KtProofError("a changed entry does not chain to its old entry")
    unchanged: list[tuple[int, int, bytes]] = []
    for subtree in subtrees:
        shift = LABEL_BITS - subtree.bits
        low = (subtree.key >> shift) << shift
        high = low | ((1 << shift) - 1)
        if bisect.bisect_left(keys, low) != bisect.bisect_right(keys, high):
            raise KtProofError("an unchanged subtree holds a changed label")
        unchanged.append((subtree.key, subtree.bits, subtree.hash))
    old_items = unchanged + [
        (key, LABEL_BITS, leaf_hash(c.label, c.old.value(c.label)))
        for key, c in zip(keys, changes, strict=True)
        if c.old is not None
    ]
    new_items = unchanged + [
        (key, LABEL_BITS, leaf_hash(c.label, c.new.value(c.label)))
        for key, c in zip(keys, changes, strict=True)
    ]
    if not p.constant_time_equal(build_root(old_items), old_root):
        raise KtProofError("the audit proof does not rebuild the old root")
    if not p.constant_time_equal(build_root(new_items), new_root):
        raise KtProofError("the audit proof does not rebuild the new root")
    return changes


# --- signed epoch heads and witnesses --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochHead:
    """A signed epoch head. `hash` is what the next head and witnesses sign over."""

    epoch: int
    root: bytes
    time_ms: int
    previous: bytes
    signature: bytes

    def body(self) -> bytes:
        return HEAD_PREFIX + u64(self.epoch) + self.root + u64(self.time_ms) + self.previous

    def encode(self) -> bytes:
        return self.body() + self.signature

    def hash(self) -> bytes:
        return p.sha256(self.body())


def sign_head(
    server_key: bytes, epoch: int, root: bytes, time_ms: int, previous: EpochHead | None
) -> EpochHead:
    """The head of ``epoch`` signed with the server's 32-byte Ed25519 seed (or its expansion).

    Raises:
        DecodeError: the root is not 32 bytes.
    """
    if len(root) != HASH_LEN:
        raise DecodeError("an epoch root is 32 bytes")
    previous_hash = NO_PREVIOUS if previous is None else previous.hash()
    unsigned = EpochHead(epoch, root, time_ms, previous_hash, b"")
    return EpochHead(
        epoch, root, time_ms, previous_hash, p.ed25519_sign(server_key, unsigned.body())
    )


def decode_head(server_public: bytes, data: bytes) -> EpochHead:
    """Parse and verify a signed epoch head.

    Raises:
        TruncatedError, DecodeError: not `HEAD_LEN` bytes of a head.
        InvalidSignatureError: the server's signature does not verify.
    """
    reader = Reader(data, "epoch head")
    if reader.take(len(HEAD_PREFIX)) != HEAD_PREFIX:
        raise DecodeError("not a Tidings epoch head")
    head = EpochHead(
        reader.u64(),
        reader.take(HASH_LEN),
        reader.u64(),
        reader.take(HASH_LEN),
        reader.take(SIGNATURE_LEN),
    )
    reader.finish()
    p.ed25519_verify(server_public, head.body(), head.signature)
    return head


def check_successor(previous: EpochHead, head: EpochHead) -> None:
    """Check that ``head`` is the next epoch after ``previous`` and commits to it.

    Raises:
        EpochForkError: the epoch is not the next one, the previous hash differs, or time runs
            backwards.
    """
    if head.epoch != previous.epoch + 1 or head.previous != previous.hash():
        raise EpochForkError(f"epoch head {head.epoch} does not extend epoch {previous.epoch}")
    if head.time_ms < previous.time_ms:
        raise EpochForkError(f"epoch head {head.epoch} is older than its predecessor")


def check_no_fork(a: EpochHead, b: EpochHead) -> None:
    """Two validly signed heads of one epoch must be the same head.

    Raises:
        EpochForkError: they are for one epoch and differ.
    """
    if a.epoch == b.epoch and a.body() != b.body():
        raise EpochForkError(f"two different heads for epoch {a.epoch}")


def witness_sign(witness_key: bytes, head: EpochHead) -> bytes:
    """A witness's co-signature of ``head``: its Ed25519 public key (32) || signature (64)."""
    public = p.ed25519_public(witness_key[: p.ED25519_SEED_LEN])
    return public + p.ed25519_sign(witness_key, WITNESS_PREFIX + head.hash())


def decode_cosignatures(data: bytes) -> list[tuple[bytes, bytes]]:
    """Parse u8 count || count x co-signature: (witness public key, signature) pairs.

    Raises:
        TruncatedError, DecodeError: it does not decode, or holds more than `MAX_WITNESSES`.
    """
    reader = Reader(data, "witness co-signatures")
    count = reader.u8()
    pairs = reader.records(
        count,
        COSIGNATURE_LEN,
        lambda r: (r.take(p.ED25519_PUBLIC_KEY_LEN), r.take(SIGNATURE_LEN)),
        limit=MAX_WITNESSES,
    )
    reader.finish()
    return pairs


def encode_cosignatures(cosignatures: Sequence[bytes]) -> bytes:
    return u8(len(cosignatures)) + b"".join(cosignatures)


def verify_witnesses(
    head: EpochHead, cosignatures: Sequence[tuple[bytes, bytes]], trusted: Collection[bytes], k: int
) -> int:
    """The number of distinct ``trusted`` witnesses whose co-signature of ``head`` verifies;
    co-signatures by unknown keys or that do not verify are ignored.

    Raises:
        WitnessQuorumError: fewer than ``k``.
    """
    signed: set[bytes] = set()
    message = WITNESS_PREFIX + head.hash()
    for public, signature in cosignatures:
        if public in trusted and public not in signed:
            try:
                p.ed25519_verify(public, message, signature)
            except InvalidSignatureError:
                continue
            signed.add(public)
    if len(signed) < k:
        raise WitnessQuorumError(
            f"{len(signed)} of the required {k} witnesses co-signed epoch {head.epoch}"
        )
    return len(signed)
