"""Queries of the key-transparency log (`tidings.storage.kt_schema`), each on a connection the
caller's transaction owns (`tidings.server.kt_directory.KeyDirectory` composes them: a list is
checked against the stored latest and inserted in one transaction; an epoch is stored with its
lists marked published in one transaction, so a crash leaves either all of it or none).

The publisher lease (`take_publisher_lock`): one node of a cluster publishes a given epoch.
On PostgreSQL it is a transaction-scoped advisory lock (``pg_try_advisory_xact_lock``) keyed
by the schema, so a node that does not get it skips the round; it is released at commit or
rollback, so a node that dies mid-epoch holds nothing. On SQLite the write transaction is
``BEGIN IMMEDIATE`` (`tidings.storage.database.Database.write`): one writer at a time, the
others wait. Either way the epoch's primary key refuses a second row for one epoch.
Bytes only: nothing here decodes or verifies (the directory does, with `tidings.crypto`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.storage.kt_schema import kt_device_lists, kt_epochs
from tidings.storage.schema import accounts, devices

__all__ = [
    "EpochRow",
    "StoredList",
    "count_pending",
    "insert_epoch",
    "insert_list",
    "latest_epoch",
    "latest_list",
    "latest_published",
    "mark_published",
    "pending_lists",
    "published_after",
    "published_lists",
    "read_epoch",
    "registered_devices",
    "set_cosignatures",
    "take_publisher_lock",
]


@dataclass(frozen=True, slots=True)
class StoredList:
    """One row of ``kt_device_lists``; ``epoch`` None while queued (``submitted_at_ms`` is
    read by `pending_lists` only, 0 elsewhere)."""

    account: str
    version: int
    label: bytes
    list_bytes: bytes
    list_hash: bytes
    epoch: int | None
    submitted_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class EpochRow:
    epoch: int
    head: bytes
    audit: bytes
    cosignatures: bytes
    published_at_ms: int


_LIST_COLUMNS = (
    kt_device_lists.c.account,
    kt_device_lists.c.version,
    kt_device_lists.c.label,
    kt_device_lists.c.list_bytes,
    kt_device_lists.c.list_hash,
    kt_device_lists.c.epoch,
)


def _list(row: Row[Any, Any, Any, Any, Any, Any]) -> StoredList:
    account, version, label, data, digest, epoch = row
    return StoredList(
        str(account), int(version), bytes(label), bytes(data), bytes(digest),
        None if epoch is None else int(epoch),
    )


async def take_publisher_lock(conn: AsyncConnection, key: int) -> bool:
    """Take the publisher lease (advisory lock ``key``, a signed 64-bit number the directory
    derives from the schema, so deployments sharing one database in different schemas do not
    wait for each other) for the rest of ``conn``'s transaction; False when another node holds
    it (PostgreSQL). Always True on SQLite (the write transaction is the lease)."""
    if conn.dialect.name == "sqlite":
        return True
    got = await conn.scalar(select(func.pg_try_advisory_xact_lock(key)))
    return bool(got)


async def _highest_version(
    conn: AsyncConnection, account: str, *where: ColumnElement[bool]
) -> StoredList | None:
    """The highest version of ``account``'s lists that meet ``where`` (None: no such list)."""
    row = (
        await conn.execute(
            select(*_LIST_COLUMNS)
            .where(kt_device_lists.c.account == account, *where)
            .order_by(kt_device_lists.c.version.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else _list(row)


async def latest_list(conn: AsyncConnection, account: str) -> StoredList | None:
    """The highest version of ``account``'s lists, queued or published."""
    return await _highest_version(conn, account)


async def latest_published(
    conn: AsyncConnection, account: str, upto: int
) -> StoredList | None:
    """The highest version of ``account``'s lists published by epoch ``upto``."""
    return await _highest_version(conn, account, kt_device_lists.c.epoch <= upto)


async def published_lists(conn: AsyncConnection, account: str, upto: int) -> list[StoredList]:
    """Every list of ``account`` published by epoch ``upto``, newest first."""
    rows = await conn.execute(
        select(*_LIST_COLUMNS)
        .where(kt_device_lists.c.account == account, kt_device_lists.c.epoch <= upto)
        .order_by(kt_device_lists.c.version.desc())
    )
    return [_list(r) for r in rows]


async def count_pending(conn: AsyncConnection, account: str) -> int:
    """How many of ``account``'s lists wait for an epoch."""
    found = await conn.scalar(
        select(func.count())
        .select_from(kt_device_lists)
        .where(kt_device_lists.c.account == account, kt_device_lists.c.epoch.is_(None))
    )
    return int(found or 0)


async def registered_devices(conn: AsyncConnection, account: str) -> set[tuple[int, bytes]]:
    """(device id, identity key) of every device the server has registered for ``account``
    (empty when no such account)."""
    rows = await conn.execute(
        select(devices.c.device_id, devices.c.identity_key)
        .join(accounts, accounts.c.id == devices.c.account_id)
        .where(accounts.c.username == account)
    )
    return {(int(device_id), bytes(key)) for device_id, key in rows}


async def insert_list(conn: AsyncConnection, stored: StoredList, now_ms: int) -> None:
    """Queue ``stored`` (its ``epoch`` is ignored: NULL). Raises `sqlalchemy.exc.
    IntegrityError` when the account already has that version (the caller's conflict)."""
    await conn.execute(
        insert(kt_device_lists).values(
            account=stored.account,
            version=stored.version,
            label=stored.label,
            list_bytes=stored.list_bytes,
            list_hash=stored.list_hash,
            submitted_at_ms=now_ms,
            epoch=None,
        )
    )


_LIST_SUMMARY = (
    kt_device_lists.c.account,
    kt_device_lists.c.version,
    kt_device_lists.c.label,
    kt_device_lists.c.list_hash,
)
"""The columns of a stored list but its bytes (``account``, ``version``, ``label``,
``list_hash``): what an epoch and a rebuild of the tree read of every list."""


async def pending_lists(conn: AsyncConnection) -> list[StoredList]:
    """Every queued list, by account then version (list bytes left empty: an epoch needs
    labels, hashes and submission times only)."""
    rows = await conn.execute(
        select(*_LIST_SUMMARY, kt_device_lists.c.submitted_at_ms)
        .where(kt_device_lists.c.epoch.is_(None))
        .order_by(kt_device_lists.c.account, kt_device_lists.c.version)
    )
    return [
        StoredList(str(a), int(v), bytes(label), b"", bytes(h), None, int(at))
        for a, v, label, h, at in rows
    ]


async def published_after(conn: AsyncConnection, after: int, upto: int) -> list[StoredList]:
    """The lists published in epochs ``after + 1 .. upto``, by epoch (list bytes left empty:
    rebuilding the tree needs labels and hashes only)."""
    rows = await conn.execute(
        select(*_LIST_SUMMARY, kt_device_lists.c.epoch)
        .where(kt_device_lists.c.epoch > after, kt_device_lists.c.epoch <= upto)
        .order_by(kt_device_lists.c.epoch, kt_device_lists.c.label)
    )
    return [
        StoredList(str(a), int(v), bytes(label), b"", bytes(h), int(e))
        for a, v, label, h, e in rows
    ]


async def mark_published(
    conn: AsyncConnection, lists: Sequence[StoredList], epoch: int
) -> None:
    """Set the epoch of the queued ``lists`` (one batched statement, by primary key only: a
    condition on the epoch column lets PostgreSQL pick its index, where every queued row is
    NULL, and scan them all for each row)."""
    if not lists:
        return
    await conn.execute(
        update(kt_device_lists)
        .where(
            kt_device_lists.c.account == bindparam("a"),
            kt_device_lists.c.version == bindparam("v"),
        )
        .values(epoch=epoch),
        [{"a": s.account, "v": s.version} for s in lists],
    )


async def latest_epoch(conn: AsyncConnection) -> int:
    """The newest published epoch (0: none yet)."""
    found = await conn.scalar(select(func.max(kt_epochs.c.epoch)))
    return int(found or 0)


async def read_epoch(
    conn: AsyncConnection, epoch: int, *, with_audit: bool = False, for_update: bool = False
) -> EpochRow | None:
    """Epoch ``epoch``'s row (its audit proof only ``with_audit``: it may be megabytes);
    ``for_update`` locks the row on PostgreSQL until the transaction ends."""
    audit = kt_epochs.c.audit if with_audit else kt_epochs.c.epoch
    query = select(
        kt_epochs.c.epoch,
        kt_epochs.c.head,
        audit,
        kt_epochs.c.cosignatures,
        kt_epochs.c.published_at_ms,
    ).where(kt_epochs.c.epoch == epoch)
    if for_update and conn.dialect.name != "sqlite":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    number, head, proof, cosignatures, at = row
    return EpochRow(
        int(number), bytes(head), bytes(proof) if with_audit else b"", bytes(cosignatures),
        int(at),
    )


async def insert_epoch(conn: AsyncConnection, row: EpochRow) -> None:
    """Store an epoch. Raises `sqlalchemy.exc.IntegrityError` when it exists."""
    await conn.execute(
        insert(kt_epochs).values(
            epoch=row.epoch,
            head=row.head,
            audit=row.audit,
            cosignatures=row.cosignatures,
            published_at_ms=row.published_at_ms,
        )
    )


async def set_cosignatures(conn: AsyncConnection, epoch: int, cosignatures: bytes) -> None:
    await conn.execute(
        update(kt_epochs).where(kt_epochs.c.epoch == epoch).values(cosignatures=cosignatures)
    )
