"""The key directory's service on SQLite and PostgreSQL (`tidings.server.kt_directory`):
submissions checked against the stored chain and the registered devices, epochs published
atomically under the publisher lease, the tree rebuilt from storage by a restarted or second
node, every published epoch's audit proof and every lookup verifying with the pure core."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.kt_device_list import SignedDeviceList, decode_device_list, sign_device_list
from tidings.crypto.kt_proofs import (
    EpochHead,
    check_device_list,
    check_successor,
    decode_cosignatures,
    decode_head,
    decode_history,
    verify_audit,
    verify_history,
    verify_lookup,
    witness_sign,
)
from tidings.crypto.kt_tree import EMPTY_ROOT
from tidings.crypto.primitives import ed25519_public
from tidings.errors import (
    DeviceListChainError,
    ForbiddenError,
    InvalidSignatureError,
    KtDeviceListMismatchError,
    KtQueueFullError,
    KtVersionConflictError,
    KtWitnessUnknownError,
    StorageUnavailableError,
    UnknownEpochError,
)
from tidings.server.kt_directory import MAX_QUEUED, KeyDirectory, KtKeys
from tidings.server.kt_publisher import EpochPublisher
from tidings.storage import kt_store
from tidings.storage.database import Database
from tidings.storage.messaging import MessagingStore, NewDevice

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000_000
KEYS = KtKeys(os.urandom(32), os.urandom(32))
WITNESS = os.urandom(32)


def _device(identity: IdentityKeyPair) -> NewDevice:
    return NewDevice(
        name="d",
        registration_id=7,
        identity_key=identity.public.encode(),
        credential_hash=os.urandom(32),
        signed_prekey=b"signed",
        last_resort_kem_prekey=b"last-resort",
        one_time_prekeys=[],
        kem_prekeys=[],
    )


@pytest.fixture
async def directory(store: MessagingStore) -> AsyncIterator[KeyDirectory]:
    yield KeyDirectory(store.db, KEYS, witnesses={ed25519_public(WITNESS)}, clock=lambda: NOW)


async def _account(store: MessagingStore, name: str) -> tuple[int, IdentityKeyPair]:
    identity = IdentityKeyPair.generate()
    return await store.create_account(name, _device(identity), NOW), identity


def _genesis(name: str, identity: IdentityKeyPair) -> SignedDeviceList:
    return sign_device_list(name, 1, [(1, identity.public)], signer=1, signer_key=identity)


def _heads(directory: KeyDirectory, rows: list[bytes]) -> list[EpochHead]:
    return [decode_head(directory.server_public, row) for row in rows]


async def _check_log(directory: KeyDirectory) -> list[EpochHead]:
    """Every stored epoch: signed, chained to its predecessor, its audit proof verifying."""
    latest = (await directory.epoch()).epoch
    heads: list[EpochHead] = []
    for number in range(1, latest + 1):
        row = await directory.epoch(number, with_audit=True)
        head = decode_head(directory.server_public, row.head)
        old_root = heads[-1].root if heads else EMPTY_ROOT
        if heads:
            check_successor(heads[-1], head)
        verify_audit(old_root, head.root, head.epoch, row.audit)
        heads.append(head)
    return heads


async def test_a_list_is_published_and_proven(
    store: MessagingStore, directory: KeyDirectory
) -> None:
    _, alice = await _account(store, "alice")
    first = _genesis("alice", alice)
    with pytest.raises(UnknownEpochError):
        await directory.lookup("alice")
    await directory.submit("alice", first.encode())
    head = await directory.publish_epoch()
    assert head is not None and head.epoch == 1
    answer = await directory.lookup("alice")
    assert answer.epoch.epoch == 1 and answer.device_list == first.encode()
    root = decode_head(directory.server_public, answer.epoch.head).root
    found = verify_lookup(directory.vrf_public, "alice", root, answer.proof)
    assert found.entry is not None and found.entry.version == 1
    check_device_list(found.entry, decode_device_list(answer.device_list))
    absent = await directory.lookup("bob")
    assert absent.device_list is None
    assert verify_lookup(directory.vrf_public, "bob", root, absent.proof).entry is None
    await _check_log(directory)


async def test_submissions_are_checked(store: MessagingStore, directory: KeyDirectory) -> None:
    account_id, alice = await _account(store, "alice")
    await _account(store, "bob")
    first = _genesis("alice", alice)
    with pytest.raises(ForbiddenError):
        await directory.submit("bob", first.encode())
    stranger = IdentityKeyPair.generate()
    wrong = sign_device_list("alice", 1, [(1, stranger.public)], signer=1, signer_key=stranger)
    with pytest.raises(KtDeviceListMismatchError):
        await directory.submit("alice", wrong.encode())
    await directory.submit("alice", first.encode())
    with pytest.raises(KtVersionConflictError):
        await directory.submit("alice", first.encode())
    # The server links a device of its own and signs a list with it: no chain.
    ghost = IdentityKeyPair.generate()
    ghost_id = await store.add_device(account_id, _device(ghost), NOW)
    forged = sign_device_list(
        "alice", 2, [(1, alice.public), (ghost_id, ghost.public)],
        signer=ghost_id, signer_key=ghost, previous=first,
    )
    with pytest.raises(DeviceListChainError) as caught:
        await directory.submit("alice", forged.encode())
    assert caught.value.device_ids == (ghost_id,)
    # Vouched for by the first device, it is accepted; a list naming it not, once removed.
    second = sign_device_list(
        "alice", 2, [(1, alice.public), (ghost_id, ghost.public)],
        signer=1, signer_key=alice, previous=first,
    )
    await directory.submit("alice", second.encode())
    await store.remove_device(account_id, ghost_id)
    stale = sign_device_list(
        "alice", 3, [(1, alice.public), (ghost_id, ghost.public)],
        signer=1, signer_key=alice, previous=second,
    )
    with pytest.raises(KtDeviceListMismatchError):
        await directory.submit("alice", stale.encode())


async def test_queued_versions_enter_one_epoch_each(
    store: MessagingStore, directory: KeyDirectory
) -> None:
    _, alice = await _account(store, "alice")
    lists = [_genesis("alice", alice)]
    for version in range(2, MAX_QUEUED + 1):
        lists.append(
            sign_device_list(
                "alice", version, [(1, alice.public)], signer=1, signer_key=alice,
                previous=lists[-1],
            )
        )
    for signed in lists:
        await directory.submit("alice", signed.encode())
    extra = sign_device_list(
        "alice", MAX_QUEUED + 1, [(1, alice.public)], signer=1, signer_key=alice,
        previous=lists[-1],
    )
    with pytest.raises(KtQueueFullError):
        await directory.submit("alice", extra.encode())
    for _ in range(MAX_QUEUED + 1):  # the last epoch has no change
        assert await directory.publish_epoch() is not None
    history = await directory.history("alice")
    assert history.device_lists == tuple(s.encode() for s in reversed(lists))
    root = decode_head(directory.server_public, history.lookup.epoch.head).root
    found = verify_lookup(directory.vrf_public, "alice", root, history.lookup.proof)
    assert found.entry is not None and found.entry.version == MAX_QUEUED
    entries = decode_history(history.history)
    verify_history(found.label, found.entry, entries)
    assert [e.epoch for e in entries] == list(range(MAX_QUEUED, 0, -1))
    heads = await _check_log(directory)
    assert len(heads) == MAX_QUEUED + 1 and heads[-1].root == heads[-2].root


async def test_a_restarted_or_second_node_rebuilds_the_tree(
    store: MessagingStore, directory: KeyDirectory
) -> None:
    for n in range(5):
        _, identity = await _account(store, f"user{n}")
        await directory.submit(f"user{n}", _genesis(f"user{n}", identity).encode())
        await directory.publish_epoch()
    await directory.publish_epoch()
    other = KeyDirectory(store.db, KEYS, clock=lambda: NOW + 1)
    assert await other.sync() == 6
    answer = await other.lookup("user3")  # rebuilt from storage, root checked
    assert answer.epoch.epoch == 6 and answer.device_list is not None
    head = await other.publish_epoch()
    assert head is not None and head.epoch == 7
    assert (await directory.lookup("user4")).epoch.epoch == 7  # caught up
    await _check_log(directory)


async def test_a_failed_store_leaves_nothing(
    store: MessagingStore, directory: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, alice = await _account(store, "alice")
    await directory.publish_epoch()
    await directory.submit("alice", _genesis("alice", alice).encode())

    async def broken(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(kt_store, "mark_published", broken)
    with pytest.raises(OSError):
        await directory.publish_epoch()
    assert (await directory.epoch()).epoch == 1  # the epoch row rolled back with it
    monkeypatch.undo()
    head = await directory.publish_epoch()  # the tree, ahead of storage, was dropped
    assert head is not None and head.epoch == 2
    assert (await directory.lookup("alice")).device_list is not None
    await _check_log(directory)


async def test_concurrent_publishers_never_fork(store: MessagingStore) -> None:
    """Two nodes (two engines on one database) publish at once: each epoch is stored once,
    and the chain of heads holds. On PostgreSQL the lease holder publishes, the other skips."""
    other_db = Database(store.db.url, schema=store.db.schema)
    try:
        first = KeyDirectory(store.db, KEYS, clock=lambda: NOW)
        second = KeyDirectory(other_db, KEYS, clock=lambda: NOW)
        for _ in range(5):
            results = await asyncio.gather(first.publish_epoch(), second.publish_epoch())
            assert any(r is not None for r in results)
        heads = await _check_log(first)
        assert [h.epoch for h in heads] == list(range(1, len(heads) + 1))
        assert 5 <= len(heads) <= 10
    finally:
        await other_db.close()


async def test_the_lease_holder_alone_publishes(
    store: MessagingStore, directory: KeyDirectory
) -> None:
    other_db = Database(store.db.url, schema=store.db.schema)
    try:
        async with other_db.write() as conn:
            assert await kt_store.take_publisher_lock(conn, directory._lease_key)
            task = asyncio.create_task(directory.publish_epoch())
            await asyncio.sleep(0.3)
            if store.db.is_sqlite:
                # The write transaction is the lease: the other writer waits for it.
                assert not task.done()
            else:
                assert (await task) is None  # skipped, nothing stored
        if store.db.is_sqlite:
            assert (await task) is not None
        else:
            assert (await directory.publish_epoch()) is not None
        assert (await directory.epoch()).epoch == 1
    finally:
        await other_db.close()


async def test_publish_due_waits_for_the_interval(
    store: MessagingStore, directory: KeyDirectory
) -> None:
    assert await directory.publish_due(60_000, NOW) is not None
    assert await directory.publish_due(60_000, NOW + 10_000) is None
    assert await directory.publish_due(60_000, NOW + 60_000) is not None


async def test_nodes_due_at_once_publish_one_epoch(store: MessagingStore) -> None:
    """Two nodes whose rounds fall together both find the head old; the second to take the
    lease finds the first's new head under it and skips, so the cluster publishes one epoch
    per interval, not one per node."""
    other_db = Database(store.db.url, schema=store.db.schema)
    try:
        first = KeyDirectory(store.db, KEYS, clock=lambda: NOW)
        second = KeyDirectory(other_db, KEYS, clock=lambda: NOW)
        for round_ms in (NOW, NOW + 60_000, NOW + 120_000):
            results = await asyncio.gather(
                first.publish_due(60_000, round_ms), second.publish_due(60_000, round_ms)
            )
            assert sum(r is not None for r in results) == 1
        assert [h.epoch for h in await _check_log(first)] == [1, 2, 3]
        # The check under the lease on its own: a head 1 s old is not due.
        assert await second.publish_epoch(NOW + 121_000, min_age_ms=54_000) is None
    finally:
        await other_db.close()


async def test_witness_cosignatures(store: MessagingStore, directory: KeyDirectory) -> None:
    head = await directory.publish_epoch()
    assert head is not None
    good = witness_sign(WITNESS, head)
    assert await directory.cosign(1, good) == 1
    assert await directory.cosign(1, good) == 1  # again: replaced, not added
    stored = decode_cosignatures((await directory.epoch(1)).cosignatures)
    assert stored == [(good[:32], good[32:])]
    with pytest.raises(KtWitnessUnknownError):
        await directory.cosign(1, witness_sign(os.urandom(32), head))
    with pytest.raises(InvalidSignatureError):
        await directory.cosign(1, good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(UnknownEpochError):
        await directory.cosign(2, good)


async def test_the_periodic_round_publishes_once_per_interval_and_never_raises(
    store: MessagingStore, directory: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = EpochPublisher(directory, interval_s=60)
    await publisher.round()
    await publisher.round()  # the head is younger than the interval: skipped
    assert (await directory.epoch()).epoch == 1
    rounds = publisher.metrics.kt_rounds
    assert rounds.labels(outcome="published")._value.get() == 1
    assert rounds.labels(outcome="skipped")._value.get() == 1
    assert publisher.metrics.kt_epoch._value.get() == 1

    async def down(*_: object) -> int:
        raise OSError("database down")

    monkeypatch.setattr(directory, "sync", down)
    await publisher.round()  # logged, not raised
    assert rounds.labels(outcome="failed")._value.get() == 1
    await publisher.start()
    await publisher.stop()


async def test_an_epoch_takes_at_most_its_limit_longest_waiting_first(
    store: MessagingStore,
) -> None:
    now = [NOW]
    directory = KeyDirectory(store.db, KEYS, clock=lambda: now[0], max_changes=2)
    for name in ("zed", "amy", "kim"):  # submitted in this order, not alphabetical
        _, identity = await _account(store, name)
        await directory.submit(name, _genesis(name, identity).encode())
        now[0] += 1000
    await directory.publish_epoch()
    published = {n for n in ("zed", "amy", "kim") if (await directory.lookup(n)).device_list}
    assert published == {"zed", "amy"}
    await directory.publish_epoch()
    assert (await directory.lookup("kim")).device_list is not None
    await _check_log(directory)


async def test_a_node_with_another_kt_key_refuses_to_serve(
    store: MessagingStore, directory: KeyDirectory
) -> None:
    await directory.publish_epoch()
    stranger = KeyDirectory(store.db, KtKeys(os.urandom(32), os.urandom(32)))
    with pytest.raises(StorageUnavailableError):
        await stranger.lookup("alice")
    with pytest.raises(StorageUnavailableError):
        stranger.decode_head(await stranger.epoch())
    with pytest.raises(StorageUnavailableError):
        await stranger.publish_epoch()  # never a second directory on one log
    assert (await directory.epoch()).epoch == 1


async def test_lookups_waiting_for_the_tree_hold_no_connection(store: MessagingStore) -> None:
    """A burst of lookups during a publication: they wait for the tree lock before taking a
    pooled connection, so the publisher (which holds the lock) always gets one. With the
    order the other way round, a pool of 2 + 2 would deadlock until the pool timeout."""
    small = Database(store.db.url, schema=store.db.schema, pool_size=2)
    try:
        directory = KeyDirectory(small, KEYS, clock=lambda: NOW)
        await directory.publish_epoch()
        for _ in range(3):
            early = [directory.lookup(f"user{n}") for n in range(10)]
            late = [directory.lookup(f"user{n}") for n in range(10, 20)]
            burst = asyncio.gather(*early, directory.publish_epoch(), *late)
            await asyncio.wait_for(burst, 20)
        assert (await directory.epoch()).epoch == 4
    finally:
        await small.close()
