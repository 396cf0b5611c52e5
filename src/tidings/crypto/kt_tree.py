"""Key transparency's epoch tree: a compressed sparse Merkle prefix tree over 256-bit labels.

Each account has one *label* (`label_of`, a hash of its VRF output) and one *entry*: the version
of its signed device list, that list's hash, the previous entry's hash and the epoch the entry
changed in. The entry hash is the tree's leaf value, so an account's versions form a hash chain
that every audit of an epoch pins (docs/key-transparency.md, "Design")::

    entry hash = SHA-256("tidings-kt-entry-v1" 0x00 || label || u64 version || list hash (32)
                         || previous entry hash (32; zeros for version 1) || u64 epoch)
    leaf       = SHA-256(0x00 || label (32) || entry hash (32))
    node       = SHA-256(0x01 || u8 split bit b || prefix (32; the first b bits, rest zero)
                         || left child (32) || right child (32))
    empty tree = SHA-256(0x02 || "tidings-kt-empty-v1")

The tree is compressed: an internal node exists only where two labels first differ, at bit
``b`` (bit 0 is the most significant bit of the label); its children hold the labels with bit
``b`` = 0 (left) and 1 (right). A node commits to its split bit and prefix, so a path proof
fixes where each sibling sits, and a subtree's hash fixes its whole shape.

`build_root` recomputes a root from disjoint subtrees given by their preimages; the audit proof
(`tidings.crypto.kt_proofs`) uses it to rebuild the roots before and after an epoch. Pure and
synchronous; hashes through `tidings.crypto.primitives`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tidings.crypto import primitives as p
from tidings.errors import DecodeError, KtProofError
from tidings.wire.binary import U64_MAX, Reader, u8, u64

LABEL_LEN = 32
HASH_LEN = 32
LABEL_BITS = 8 * LABEL_LEN
ENTRY_LEN = 8 + HASH_LEN + HASH_LEN + 8
"""Encoded `Entry`: u64 version || list hash || previous entry hash || u64 epoch."""

NO_PREVIOUS = bytes(HASH_LEN)
"""The previous entry hash of an account's first entry."""

_ENTRY_PREFIX = b"tidings-kt-entry-v1\x00"
_LABEL_PREFIX = b"tidings-kt-label-v1\x00"
_LEAF = b"\x00"
_NODE = b"\x01"
EMPTY_ROOT = p.sha256(b"\x02tidings-kt-empty-v1")
"""The root of the tree with no entries."""

_FULL = (1 << LABEL_BITS) - 1


def label_of(vrf_output: bytes) -> bytes:
    """The 32-byte tree label of an account: SHA-256 of its 64-byte VRF output (`vrf.verify`).

    Raises:
        DecodeError: ``vrf_output`` is not 64 bytes.
    """
    if not isinstance(vrf_output, bytes) or len(vrf_output) != 64:
        raise DecodeError("a VRF output is 64 bytes")
    return p.sha256(_LABEL_PREFIX + vrf_output)


def leaf_hash(label: bytes, value: bytes) -> bytes:
    return p.sha256(_LEAF + label + value)


def node_hash(bit: int, prefix: bytes, left: bytes, right: bytes) -> bytes:
    return p.sha256(_NODE + u8(bit) + prefix + left + right)


def prefix_bytes(key: int, bits: int) -> bytes:
    """The first ``bits`` bits of the 256-bit ``key``, the rest zero, as 32 bytes."""
    shift = LABEL_BITS - bits
    return ((key >> shift) << shift).to_bytes(LABEL_LEN, "big")


def bit_of(key: int, bit: int) -> int:
    return (key >> (LABEL_BITS - 1 - bit)) & 1


def first_difference(a: int, b: int) -> int:
    """The index of the first bit where two distinct 256-bit keys differ."""
    return LABEL_BITS - (a ^ b).bit_length()


@dataclass(frozen=True, slots=True)
class Entry:
    """One version of an account's directory entry (the preimage of its leaf value)."""

    version: int
    list_hash: bytes
    previous: bytes
    epoch: int

    def encode(self) -> bytes:
        return u64(self.version) + self.list_hash + self.previous + u64(self.epoch)

    @classmethod
    def read(cls, reader: Reader) -> Entry:
        """Parse an encoded entry from ``reader``.

        Raises:
            TruncatedError: the input ends inside the entry.
            DecodeError: the version is 0.
        """
        version = reader.u64()
        if version == 0:
            raise DecodeError("a directory entry's version starts at 1")
        return cls(version, reader.take(HASH_LEN), reader.take(HASH_LEN), reader.u64())

    def value(self, label: bytes) -> bytes:
        """The entry hash: the leaf value the tree stores for ``label``."""
        return p.sha256(_ENTRY_PREFIX + label + self.encode())


class _Leaf:
    __slots__ = ("hash", "key", "label", "value")

    def __init__(self, key: int, label: bytes, value: bytes) -> None:
        self.key = key
        self.label = label
        self.value = value
        self.hash = leaf_hash(label, value)


class _Node:
    __slots__ = ("bit", "hash", "key", "left", "right")

    def __init__(self, bit: int, key: int, left: _Leaf | _Node, right: _Leaf | _Node) -> None:
        self.bit = bit
        self.key = key  # the prefix, lower bits zero
        self.left = left
        self.right = right
        self.hash: bytes | None = None  # None: a child changed since the last `root`


def _covers(node: _Leaf | _Node, key: int) -> bool:
    if isinstance(node, _Leaf):
        return node.key == key
    shift = LABEL_BITS - node.bit
    return (key >> shift) == (node.key >> shift)


def _hash(node: _Leaf | _Node) -> bytes:
    if node.hash is None:
        assert isinstance(node, _Node)
        node.hash = node_hash(
            node.bit, prefix_bytes(node.key, node.bit), _hash(node.left), _hash(node.right)
        )
    return node.hash


@dataclass(frozen=True, slots=True)
class Path:
    """Where a label's lookup ends: the siblings from the leaf up (split bit, sibling hash),
    and the node it reached -- its own leaf (member) or the leaf or node that excludes it."""

    siblings: tuple[tuple[int, bytes], ...]
    terminal: bytes | None
    """None for the empty tree, else `encode_subtree` of the node where the path stopped."""
    member: bool


def encode_subtree(node: _Leaf | _Node) -> bytes:
    """A subtree's preimage: 0x00 || label || value for a leaf, 0x01 || u8 bit || prefix ||
    left hash || right hash for a node."""
    if isinstance(node, _Leaf):
        return _LEAF + node.label + node.value
    return (
        _NODE
        + u8(node.bit)
        + prefix_bytes(node.key, node.bit)
        + _hash(node.left)
        + _hash(node.right)
    )


SUBTREE_LEAF_LEN = 1 + LABEL_LEN + HASH_LEN
SUBTREE_NODE_LEN = 1 + 1 + LABEL_LEN + 2 * HASH_LEN


@dataclass(frozen=True, slots=True)
class Subtree:
    """A decoded subtree preimage: its key (label, or prefix with zero tail), how many leading
    bits of the key are fixed (256 for a leaf), its hash, and for a leaf its label and value."""

    key: int
    bits: int
    hash: bytes
    leaf: tuple[bytes, bytes] | None


def read_subtree(reader: Reader) -> Subtree:
    """Parse one `encode_subtree` preimage and hash it.

    Raises:
        TruncatedError: the input ends inside it.
        DecodeError: an unknown type byte, or a node's prefix has bits set past its split bit.
    """
    kind = reader.take(1)
    if kind == _LEAF:
        label = reader.take(LABEL_LEN)
        value = reader.take(HASH_LEN)
        return Subtree(
            int.from_bytes(label, "big"), LABEL_BITS, leaf_hash(label, value), (label, value)
        )
    if kind != _NODE:
        raise DecodeError("a subtree is neither a leaf nor a node")
    bit = reader.u8()
    prefix = reader.take(LABEL_LEN)
    key = int.from_bytes(prefix, "big")
    if prefix_bytes(key, bit) != prefix:
        raise DecodeError("a subtree's prefix has bits set past its split bit")
    left = reader.take(HASH_LEN)
    right = reader.take(HASH_LEN)
    return Subtree(key, bit, node_hash(bit, prefix, left, right), None)


def build_root(items: Iterable[tuple[int, int, bytes]]) -> bytes:
    """The root of the tree made of disjoint subtrees, each (key, fixed bits, hash).

    Raises:
        KtProofError: two subtrees overlap (equal keys, or one lies inside the other).
    """
    ordered = sorted(items)
    if not ordered:
        return EMPTY_ROOT
    keys = [key for key, _, _ in ordered]

    def build(lo: int, hi: int, parent_bit: int) -> bytes:
        key, bits, digest = ordered[lo]
        if bits <= parent_bit:
            raise KtProofError("a subtree lies inside another")
        if hi - lo == 1:
            return digest
        last = ordered[hi - 1][0]
        if last == key:
            raise KtProofError("two subtrees share a position")
        bit = first_difference(key, last)
        shift = LABEL_BITS - bit
        split_key = ((key >> shift) << shift) | (1 << (LABEL_BITS - 1 - bit))
        mid = bisect.bisect_left(keys, split_key, lo, hi)
        return node_hash(bit, prefix_bytes(key, bit), build(lo, mid, bit), build(mid, hi, bit))

    return build(0, len(ordered), -1)


class EpochTree:
    """The directory at one epoch: every account's entry history and the tree of the current
    entries. `update` applies one epoch's batch; `root` is the epoch's root."""

    __slots__ = ("_entries", "_root", "epoch")

    def __init__(self) -> None:
        self._root: _Leaf | _Node | None = None
        self._entries: dict[bytes, list[Entry]] = {}
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def labels(self) -> list[bytes]:
        """Every label with an entry."""
        return list(self._entries)

    def root(self) -> bytes:
        return EMPTY_ROOT if self._root is None else _hash(self._root)

    def history(self, label: bytes) -> list[Entry]:
        """Every entry of ``label``, newest first (empty if the label has none)."""
        return list(reversed(self._entries.get(label, [])))

    def current(self, label: bytes) -> Entry | None:
        versions = self._entries.get(label)
        return versions[-1] if versions else None

    def update(self, changes: Mapping[bytes, bytes]) -> dict[bytes, tuple[Entry | None, Entry]]:
        """Advance to the next epoch with ``changes`` (label -> new signed-list hash): each
        changed label gets the next version, chained to its previous entry.

        Returns (old entry or None, new entry) per changed label.

        Raises:
            DecodeError: a label or list hash is not 32 bytes, or the epoch counter is full.
        """
        if self.epoch >= U64_MAX:
            raise DecodeError("the epoch counter is full")
        for label, list_hash in changes.items():
            if len(label) != LABEL_LEN or len(list_hash) != HASH_LEN:
                raise DecodeError("labels and list hashes are 32 bytes")
        epoch = self.epoch + 1
        applied: dict[bytes, tuple[Entry | None, Entry]] = {}
        for label, list_hash in changes.items():
            old = self.current(label)
            new = (
                Entry(1, list_hash, NO_PREVIOUS, epoch)
                if old is None
                else Entry(old.version + 1, list_hash, old.value(label), epoch)
            )
            self._entries.setdefault(label, []).append(new)
            self._set(label, new.value(label))
            applied[label] = (old, new)
        self.epoch = epoch
        return applied

    def _set(self, label: bytes, value: bytes) -> None:
        key = int.from_bytes(label, "big")
        leaf = _Leaf(key, label, value)
        if self._root is None:
            self._root = leaf
            return
        parent: _Node | None = None
        node = self._root
        while isinstance(node, _Node) and _covers(node, key):
            node.hash = None
            parent = node
            node = node.right if bit_of(key, node.bit) else node.left
        if isinstance(node, _Leaf) and node.key == key:
            replacement: _Leaf | _Node = leaf
        else:
            bit = first_difference(key, node.key)
            shift = LABEL_BITS - bit
            pair = (node, leaf) if bit_of(key, bit) else (leaf, node)
            replacement = _Node(bit, (key >> shift) << shift, *pair)
        if parent is None:
            self._root = replacement
        elif parent.left is node:
            parent.left = replacement
        else:
            parent.right = replacement

    def path(self, label: bytes) -> Path:
        """The lookup path of ``label`` in the current tree."""
        if self._root is None:
            return Path((), None, False)
        key = int.from_bytes(label, "big")
        siblings: list[tuple[int, bytes]] = []
        node = self._root
        while isinstance(node, _Node) and _covers(node, key):
            if bit_of(key, node.bit):
                siblings.append((node.bit, _hash(node.left)))
                node = node.right
            else:
                siblings.append((node.bit, _hash(node.right)))
                node = node.left
        siblings.reverse()
        member = isinstance(node, _Leaf) and node.key == key
        return Path(tuple(siblings), None if member else encode_subtree(node), member)

    def frontier(self, labels: Iterable[bytes]) -> list[bytes]:
        """The preimages (`encode_subtree`) of the maximal subtrees of the current tree that
        hold none of ``labels``: with the old and new leaves of ``labels`` they rebuild the
        roots before and after an update of exactly those labels."""
        keys = sorted(int.from_bytes(label, "big") for label in labels)
        out: list[bytes] = []

        def walk(node: _Leaf | _Node, lo: int, hi: int) -> None:
            # keys[lo:hi] are the changed labels whose lookup path reaches ``node``.
            if isinstance(node, _Leaf):
                start = bisect.bisect_left(keys, node.key, lo, hi)
                if start == hi or keys[start] != node.key:
                    out.append(encode_subtree(node))
                return
            shift = LABEL_BITS - node.bit
            first = bisect.bisect_left(keys, node.key, lo, hi)
            last = bisect.bisect_right(keys, node.key | (_FULL >> node.bit), lo, hi)
            if first == last:
                out.append(encode_subtree(node))
                return
            middle = bisect.bisect_left(keys, node.key | (1 << (shift - 1)), first, last)
            walk(node.left, first, middle)
            walk(node.right, middle, last)

        if self._root is not None:
            walk(self._root, 0, len(keys))
        return out
