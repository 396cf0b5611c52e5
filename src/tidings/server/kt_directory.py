"""The key directory the server publishes (issue 12, docs/key-transparency.md "Publication"):
accounts' signed device lists in, signed epoch heads with their audit proofs out.

`KeyDirectory` over the log's tables (`tidings.storage.kt_store`) and the pure core
(`tidings.crypto.kt_device_list`, `kt_tree`, `kt_proofs`):

- `submit`: a device of an account hands in the account's next signed device list. It must
  follow the stored latest list (`verify_chain`), name exactly the account's registered
  devices (ids and identity keys), and at most `MAX_QUEUED` lists of one account wait at once.
  It is queued for the next epoch.
- `publish_epoch`: under the publisher lease (one node of a cluster; `kt_store`), the oldest
  queued list of each account (at most `MAX_CHANGES_PER_EPOCH`, longest waiting first) goes
  into the next epoch of the in-memory `EpochTree`, the head
  is signed with the server's KT key, and the head, its audit proof (previous epoch -> this
  one) and the lists' epoch are stored in one transaction. An epoch with no change is still
  published: heads are what clients judge freshness by. Each account's versions therefore
  enter the tree one per epoch, so a tree entry's version is its list's version.
- `head`, `lookup`, `history`, `audit`, `cosign`: what the routes serve.

Each node keeps the tree in memory, rebuilt from the stored lists on first use and brought up
to the newest stored epoch before every use (another node may have published); a rebuilt root
that differs from the stored head's refuses service (`StorageUnavailableError`) rather than
serve proofs of another tree. Key files: the KT signing key and the VRF secret (`load_kt_keys`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import now_ms
from tidings.crypto import primitives as p
from tidings.crypto import vrf
from tidings.crypto.kt_device_list import SignedDeviceList, decode_device_list, verify_chain
from tidings.crypto.kt_proofs import (
    COSIGNATURE_LEN,
    MAX_WITNESSES,
    EpochHead,
    account_label,
    decode_cosignatures,
    decode_head,
    encode_cosignatures,
    encode_history,
    make_audit,
    make_lookup,
    sign_head,
    verify_witnesses,
)
from tidings.crypto.kt_tree import Entry, EpochTree, label_of
from tidings.errors import (
    DecodeError,
    ForbiddenError,
    InvalidSignatureError,
    KtDeviceListMismatchError,
    KtQueueFullError,
    KtVersionConflictError,
    KtWitnessUnknownError,
    StorageUnavailableError,
    UnknownEpochError,
    WitnessQuorumError,
)
from tidings.storage import kt_store
from tidings.storage.database import Database
from tidings.storage.files import KT_SIGNING_KEY_FILE, KT_VRF_KEY_FILE, load_key_file
from tidings.storage.kt_store import EpochRow, StoredList

__all__ = [
    "MAX_CHANGES_PER_EPOCH",
    "MAX_QUEUED",
    "HistoryAnswer",
    "KeyDirectory",
    "KtKeys",
    "LookupAnswer",
    "load_kt_keys",
]

log = logging.getLogger("tidings.server.kt")

MAX_QUEUED = 4
"""Device lists of one account waiting for epochs at once (one enters each epoch)."""
MAX_CHANGES_PER_EPOCH = 10_000
"""Lists one epoch publishes at most (the longest waiting first); the rest wait for the next.
It bounds an epoch's transaction (about 0.7 s at 1M entries, docs/performance.md), which on
SQLite holds the node's write turn, and its audit proof (about 7 MB)."""
KT_KEY_LEN = 32
"""The KT signing key (an Ed25519 seed) and the VRF secret are 32 random bytes each."""


@dataclass(frozen=True, slots=True)
class KtKeys:
    """The directory's two secrets: the Ed25519 seed that signs epoch heads and the VRF secret
    that makes labels. Their public halves are published with every head."""

    signing_key: bytes = field(repr=False)
    vrf_secret: bytes = field(repr=False)

    @property
    def server_public(self) -> bytes:
        return p.ed25519_public(self.signing_key)

    @property
    def vrf_public(self) -> bytes:
        return vrf.vrf_keygen(self.vrf_secret)


def load_kt_keys(key_dir: Path) -> KtKeys:
    """The KT keys in ``key_dir`` (``kt_signing.key``, ``kt_vrf.key``), each created with mode
    0600 on first start by the one key-file helper. ``key_dir`` is where the node's shared keys
    live (beside ``franking_key_file`` in a cluster: every node must sign with the same key).

    Raises:
        InvalidKeyError: a file does not hold exactly 32 bytes.  OSError.
    """
    return KtKeys(
        load_key_file(key_dir / KT_SIGNING_KEY_FILE, KT_KEY_LEN),
        load_key_file(key_dir / KT_VRF_KEY_FILE, KT_KEY_LEN),
    )


@dataclass(frozen=True, slots=True)
class LookupAnswer:
    """A lookup at the newest epoch: that epoch's row, the proof, and the signed list the
    proven entry commits to (None when the account has no entry)."""

    epoch: EpochRow
    proof: bytes
    device_list: bytes | None


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    """An account's whole history at the newest epoch: the lookup, the history proof (entries
    newest first) and every published list, newest first."""

    lookup: LookupAnswer
    history: bytes
    device_lists: tuple[bytes, ...]


def _first_per_account(pending: Sequence[StoredList], limit: int) -> list[StoredList]:
    """The oldest queued version of each account (``pending`` is by account, then version),
    at most ``limit`` of them, those submitted first."""
    first = [next(group) for _, group in itertools.groupby(pending, key=lambda s: s.account)]
    if len(first) > limit:
        first = sorted(first, key=lambda s: (s.submitted_at_ms, s.account))[:limit]
    return first


def _apply(tree: EpochTree, lists: Sequence[StoredList], upto: int) -> bytes:
    """Replay the published ``lists`` (by epoch) onto ``tree``, leave it at epoch ``upto``
    (epochs without a change have no list; the tree's counter jumps over them) and return its
    root (hashed here, in the worker thread, not on the event loop)."""
    for epoch, group in itertools.groupby(lists, key=lambda s: s.epoch):
        assert epoch is not None
        tree.epoch = epoch - 1
        tree.update({s.label: s.list_hash for s in group})
    tree.epoch = upto
    return tree.root()


def _advance(
    tree: EpochTree, changes: dict[bytes, bytes]
) -> tuple[bytes, dict[bytes, tuple[Entry | None, Entry]], bytes]:
    """`make_audit` and the new root, in the worker thread: (proof, applied, root)."""
    proof, applied = make_audit(tree, changes)
    return proof, applied, tree.root()


class KeyDirectory:
    """See the module docstring. One per node; every method may also raise
    `sqlalchemy.exc.SQLAlchemyError` when the database is unreachable."""

    def __init__(
        self,
        db: Database,
        keys: KtKeys,
        *,
        witnesses: Collection[bytes] = (),
        clock: Callable[[], int] = now_ms,
        max_changes: int = MAX_CHANGES_PER_EPOCH,
    ) -> None:
        """``witnesses``: the Ed25519 public keys whose co-signatures `cosign` accepts;
        ``max_changes``: lists per epoch at most (`MAX_CHANGES_PER_EPOCH`).

        Raises:
            ValueError: more than `MAX_WITNESSES` witnesses, or one is not 32 bytes.
        """
        if len(witnesses) > MAX_WITNESSES or any(len(w) != 32 for w in witnesses):
            raise ValueError(f"at most {MAX_WITNESSES} witnesses of 32-byte Ed25519 keys")
        self.db = db
        self.keys = keys
        self.server_public = keys.server_public
        self.vrf_public = keys.vrf_public
        self.witnesses = frozenset(witnesses)
        self.clock = clock
        self.max_changes = max_changes
        self._tree: EpochTree | None = None
        self._lock = asyncio.Lock()
        digest = p.sha256(b"tidings-kt-publisher\x00" + db.schema.encode())
        self._lease_key = int.from_bytes(digest[:8], "big", signed=True)

    # -- submission ---------------------------------------------------------------------

    async def submit(self, account: str, data: bytes) -> SignedDeviceList:
        """Queue ``account``'s next signed device list ``data`` (from a device of it).

        Raises:
            DecodeError, TruncatedError, OversizedError: ``data`` is no device list.
            ForbiddenError: the list is another account's.
            KtVersionConflictError: the account already has this version (or a later one).
            DeviceListChainError: it does not follow the stored latest list.
            KtQueueFullError: `MAX_QUEUED` of the account's lists already wait.
            KtDeviceListMismatchError: it does not name exactly the registered devices.
        """
        new = decode_device_list(data)
        if new.account != account:
            raise ForbiddenError("a device publishes only its own account's device list")
        label, _ = account_label(self.keys.vrf_secret, account)
        stored = StoredList(account, new.version, label, new.encode(), new.hash(), None)
        try:
            async with self.db.write() as conn:
                latest = await kt_store.latest_list(conn, account)
                if latest is not None and new.version <= latest.version:
                    raise KtVersionConflictError(
                        f"the account's device list is at version {latest.version} already"
                    )
                previous = None if latest is None else decode_device_list(latest.list_bytes)
                verify_chain(previous, new)
                if await kt_store.count_pending(conn, account) >= MAX_QUEUED:
                    raise KtQueueFullError()
                registered = await kt_store.registered_devices(conn, account)
                listed = {(device_id, key.encode()) for device_id, key in new.devices}
                if listed != registered:
                    raise KtDeviceListMismatchError(
                        f"the list names {len(listed - registered)} device(s) the account does "
                        f"not have and misses {len(registered - listed)} it has"
                    )
                await kt_store.insert_list(conn, stored, self.clock())
        except IntegrityError:
            raise KtVersionConflictError("another device submitted this version first") from None
        return new

    # -- publication --------------------------------------------------------------------

    async def publish_epoch(
        self, now: int | None = None, *, min_age_ms: int = 0
    ) -> EpochHead | None:
        """Publish the next epoch at time ``now`` (ms; default the clock): see the module
        docstring. Returns its head, or None when another node holds the publisher lease, or
        when the newest head, read under the lease, was published less than ``min_age_ms``
        before ``now``.

        Raises:
            StorageUnavailableError: the stored log does not rebuild the stored roots.
            SQLAlchemyError: the database failed (nothing is stored; the tree is rebuilt).
        """
        time_ms = self.clock() if now is None else now
        async with self._lock:
            mutated = False
            try:
                async with self.db.write() as conn:
                    if not await kt_store.take_publisher_lock(conn, self._lease_key):
                        return None
                    tree = await self._synced(conn)
                    # Checked again under the lease: two nodes may both have found the head
                    # old before either took the lease, and the second would publish a
                    # second epoch right after the first.
                    if min_age_ms and tree.epoch and not await self._is_due(
                        conn, tree.epoch, time_ms, min_age_ms
                    ):
                        return None
                    previous = await self._head(conn, tree.epoch) if tree.epoch else None
                    chosen = _first_per_account(
                        await kt_store.pending_lists(conn), self.max_changes
                    )
                    changes = {s.label: s.list_hash for s in chosen}
                    mutated = True
                    proof, applied, root = await asyncio.to_thread(_advance, tree, changes)
                    for stored in chosen:
                        if applied[stored.label][1].version != stored.version:
                            raise StorageUnavailableError(
                                "a queued device list does not follow the published one"
                            )
                    head = sign_head(
                        self.keys.signing_key,
                        tree.epoch,
                        root,
                        max(time_ms, previous.time_ms if previous else 0),
                        previous,
                    )
                    await kt_store.insert_epoch(
                        conn, EpochRow(head.epoch, head.encode(), proof, b"\x00", time_ms)
                    )
                    await kt_store.mark_published(conn, chosen, head.epoch)
            except BaseException:
                if mutated:
                    self._tree = None  # ahead of what was stored: rebuilt on next use
                raise
        log.info("kt epoch published", extra={"epoch": head.epoch, "changes": len(chosen)})
        return head

    async def publish_due(self, interval_ms: int, now: int | None = None) -> EpochHead | None:
        """`publish_epoch` unless the newest head is less than ``interval_ms`` old (another
        node of the cluster published it): what the periodic task calls on every node."""
        time_ms = self.clock() if now is None else now
        min_age_ms = interval_ms * 9 // 10
        # A read first, so that a round with nothing due takes no write transaction.
        async with self.db.read() as conn:
            latest = await kt_store.latest_epoch(conn)
            if latest and not await self._is_due(conn, latest, time_ms, min_age_ms):
                return None
        return await self.publish_epoch(time_ms, min_age_ms=min_age_ms)

    @staticmethod
    async def _is_due(conn: AsyncConnection, epoch: int, time_ms: int, min_age_ms: int) -> bool:
        """Whether ``epoch`` (stored) was published at least ``min_age_ms`` before
        ``time_ms``."""
        row = await kt_store.read_epoch(conn, epoch)
        return row is None or time_ms - row.published_at_ms >= min_age_ms

    async def sync(self) -> int:
        """Bring this node's tree to the newest stored epoch (rebuilding it after a start);
        returns that epoch. The periodic task calls it every round, so a node's first lookup
        after a start, or after another node published, does not wait for the rebuild.

        Raises:
            StorageUnavailableError: the stored log does not rebuild the stored root.
        """
        async with self._lock, self.db.read() as conn:
            return (await self._synced(conn)).epoch

    async def _synced(self, conn: AsyncConnection) -> EpochTree:
        """The tree at the newest stored epoch (rebuilt or brought forward), its root checked
        against that epoch's signed head."""
        latest = await kt_store.latest_epoch(conn)
        tree = self._tree
        if tree is not None and tree.epoch == latest:
            return tree
        if tree is None or tree.epoch > latest:
            tree = EpochTree()
        self._tree = None  # until the tree is whole again: a failure below drops it
        lists = await kt_store.published_after(conn, tree.epoch, latest)
        root = await asyncio.to_thread(_apply, tree, lists, latest)
        if latest and not p.constant_time_equal(root, (await self._head(conn, latest)).root):
            raise StorageUnavailableError(f"the stored log does not rebuild epoch {latest}")
        self._tree = tree
        return tree

    async def _head(self, conn: AsyncConnection, epoch: int) -> EpochHead:
        row = await kt_store.read_epoch(conn, epoch)
        if row is None:
            raise UnknownEpochError(f"no epoch {epoch}")
        return self.decode_head(row)

    def decode_head(self, row: EpochRow) -> EpochHead:
        """The stored head of ``row``, checked under this node's KT key.

        Raises:
            StorageUnavailableError: it does not verify (the node's ``kt_signing.key`` is not
                the one that signed the log: a replaced key file, or a node of another
                cluster on this database). Served as 503, never as the client's error.
        """
        try:
            return decode_head(self.server_public, row.head)
        except (DecodeError, InvalidSignatureError):
            raise StorageUnavailableError(
                f"epoch {row.epoch}'s stored head is not signed by this node's KT key"
            ) from None

    # -- reads ----------------------------------------------------------------------------

    async def epoch(self, epoch: int | None = None, *, with_audit: bool = False) -> EpochRow:
        """Epoch ``epoch``'s row (None: the newest).

        Raises:
            UnknownEpochError: no such epoch (or none published yet).
        """
        async with self.db.read() as conn:
            number = await kt_store.latest_epoch(conn) if epoch is None else epoch
            row = await kt_store.read_epoch(conn, number, with_audit=with_audit) if number else None
        if row is None:
            raise UnknownEpochError("no such epoch" if epoch else "no epoch published yet")
        return row

    async def lookup(self, account: str) -> LookupAnswer:
        """``account``'s lookup proof at the newest epoch (a non-membership proof when it has
        no entry) with the list its entry commits to.

        Raises:
            UnknownEpochError: no epoch published yet.
        """
        answer, _ = await self._lookup(account, with_history=False)
        return answer

    async def history(self, account: str) -> HistoryAnswer:
        """``account``'s lookup, history proof and every published list (for its own devices'
        monitoring: the route lets only the account's devices ask).

        Raises:
            UnknownEpochError: no epoch published yet.
        """
        answer, history = await self._lookup(account, with_history=True)
        return history if history is not None else HistoryAnswer(answer, encode_history([]), ())

    async def _lookup(
        self, account: str, *, with_history: bool
    ) -> tuple[LookupAnswer, HistoryAnswer | None]:
        # The tree lock first, then a connection (as `publish_epoch` and `sync` take them):
        # lookups waiting for the lock hold no pooled connection the publisher could need.
        async with self._lock, self.db.read() as conn:
            tree = await self._synced(conn)
            if tree.epoch == 0:
                raise UnknownEpochError("no epoch published yet")
            epoch = tree.epoch
            proof = make_lookup(tree, self.keys.vrf_secret, account)
            label = label_of(vrf.proof_to_hash(proof[: vrf.PROOF_LEN]))
            entries = tree.history(label) if with_history else []
        async with self.db.read() as conn:  # the stored rows of that epoch, outside the lock
            row = await kt_store.read_epoch(conn, epoch)
            assert row is not None
            if not with_history:
                stored = await kt_store.latest_published(conn, account, epoch)
                lists: list[StoredList] = [] if stored is None else [stored]
            else:
                lists = await kt_store.published_lists(conn, account, epoch)
        answer = LookupAnswer(row, proof, lists[0].list_bytes if lists else None)
        if not with_history:
            return answer, None
        return answer, HistoryAnswer(
            answer, encode_history(entries), tuple(s.list_bytes for s in lists)
        )

    # -- witnesses ------------------------------------------------------------------------

    async def cosign(self, epoch: int, cosignature: bytes) -> int:
        """Add a witness's co-signature (its public key || signature, `witness_sign`) of
        epoch ``epoch``'s head; a witness signing again replaces its earlier one. Returns how
        many witnesses have co-signed the head.

        Raises:
            DecodeError: not `COSIGNATURE_LEN` bytes.
            KtWitnessUnknownError: the key is not a configured witness.
            UnknownEpochError: no such epoch.
            InvalidSignatureError: the signature does not verify over the head.
        """
        if len(cosignature) != COSIGNATURE_LEN:
            raise DecodeError(f"a co-signature is {COSIGNATURE_LEN} bytes")
        public, signature = cosignature[:32], cosignature[32:]
        if public not in self.witnesses:
            raise KtWitnessUnknownError()
        async with self.db.write() as conn:
            row = await kt_store.read_epoch(conn, epoch, for_update=True)
            if row is None:
                raise UnknownEpochError(f"no epoch {epoch}")
            head = self.decode_head(row)
            try:
                verify_witnesses(head, [(public, signature)], {public}, 1)
            except WitnessQuorumError:
                raise InvalidSignatureError("the co-signature does not verify") from None
            kept = [
                pair
                for pair in decode_cosignatures(row.cosignatures)
                if pair[0] != public and pair[0] in self.witnesses
            ]
            kept.append((public, signature))
            await kt_store.set_cosignatures(
                conn, epoch, encode_cosignatures([k + s for k, s in kept])
            )
        return len(kept)
