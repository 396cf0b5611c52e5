"""The messaging store: accounts, devices, public prekeys, the durable per-device queue,
provisioning codes and attachment metadata. Every method is one transaction: it either
completes or changes nothing.

The durable queue is the single source of truth for delivery (as in Signal-Server and Synapse):
an envelope is acknowledged to its sender only once it is committed here, pushed as a hint,
and deleted only when the recipient device acknowledges it. Sends and acknowledgements go
through the group-commit writer of `tidings.storage.relay` (one transaction per batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.errors import (
    AttachmentQuotaExceededError,
    LastDeviceError,
    ProvisioningCodeError,
    UnknownAccountError,
    UnknownDeviceError,
    UsernameTakenError,
)
from tidings.storage.database import Database
from tidings.storage.relay import DURABILITY_FULL, QueueWriter
from tidings.storage.relay import OutgoingEnvelope as OutgoingEnvelope  # re-exported
from tidings.storage.schema import (
    accounts,
    attachments,
    devices,
    kem_prekeys,
    messages,
    one_time_prekeys,
    provisioning_codes,
)


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device as registered or linked: public keys and the hash of its secret."""

    name: str
    registration_id: int
    identity_key: bytes
    credential_hash: bytes
    signed_prekey: bytes  # encoded pb.SignedPrekey
    last_resort_kem_prekey: bytes  # encoded pb.KemPrekey
    one_time_prekeys: Sequence[tuple[int, bytes]]  # (key id, encoded pb.OneTimePrekey)
    kem_prekeys: Sequence[tuple[int, bytes]]  # (key id, encoded pb.KemPrekey)
    link_binding: bytes | None = None  # KT link binding of a linked device (32 bytes)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    account_id: int
    username: str
    device_id: int
    name: str
    registration_id: int
    identity_key: bytes
    credential_hash: bytes
    created_at_ms: int
    last_seen_ms: int
    link_binding: bytes | None = None


@dataclass(frozen=True, slots=True)
class ClaimedBundle:
    """The public keys of one device for a session start, with claimed one-time keys."""

    device_id: int
    registration_id: int
    identity_key: bytes
    signed_prekey: bytes
    kem_prekey: bytes  # a claimed one-time KEM prekey, or the last-resort one
    one_time_prekey: bytes | None


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    seq: int
    message_id: bytes
    envelope: bytes


_DEVICE_COLUMNS = (
    devices.c.account_id,
    accounts.c.username,
    devices.c.device_id,
    devices.c.name,
    devices.c.registration_id,
    devices.c.identity_key,
    devices.c.credential_hash,
    devices.c.created_at_ms,
    devices.c.last_seen_ms,
    devices.c.link_binding,
)


_PENDING = (
    select(messages.c.id, messages.c.message_id, messages.c.envelope)
    .where(
        messages.c.account_id == bindparam("account_id"),
        messages.c.device_id == bindparam("device_id"),
        messages.c.id > bindparam("after_seq"),
        # The purge runs only every minute: expired means gone from that instant.
        messages.c.expires_at_ms >= bindparam("now_ms"),
    )
    .order_by(messages.c.id)
    .limit(bindparam("limit"))
)
"""`MessagingStore.pending`'s query, built once (it runs per delivery wake-up)."""

_POSITIONS_AFTER = (
    select(messages.c.id, messages.c.account_id, messages.c.device_id)
    .where(messages.c.id > bindparam("after"))
    .order_by(messages.c.id)
    .limit(bindparam("limit"))
)


def _device(row: object) -> DeviceRecord:
    return DeviceRecord(*row)  # type: ignore[misc]


class MessagingStore:
    """Async repository over `Database`; methods raise `tidings.errors` types only."""

    def __init__(self, db: Database, *, durability: str = DURABILITY_FULL) -> None:
        """``durability``: see `tidings.storage.relay` (raises ValueError if unknown)."""
        self.db = db
        self.queue = QueueWriter(db, durability=durability)

    async def close(self) -> None:
        """Finish the queue writer's batch in flight and release its connection."""
        await self.queue.close()

    # -- accounts and devices -----------------------------------------------------------

    async def create_account(self, username: str, device: NewDevice, now_ms: int) -> int:
        """Create ``username`` with ``device`` as device 1; returns the account id.

        Raises:
            UsernameTakenError: the name exists.
        """
        try:
            async with self.db.write() as conn:
                result = await conn.execute(
                    insert(accounts).values(
                        username=username, created_at_ms=now_ms, next_device_id=2
                    )
                )
                account_id = int(result.inserted_primary_key[0])  # type: ignore[index]
                await self._insert_device(conn, account_id, 1, device, now_ms)
        except IntegrityError:
            raise UsernameTakenError(f"the username {username!r} is taken") from None
        return account_id

    async def add_device(self, account_id: int, device: NewDevice, now_ms: int) -> int:
        """Link ``device`` to the account; returns its new device id (ids are never reused)."""
        async with self.db.write() as conn:
            return await self._append_device(conn, account_id, device, now_ms)

    async def _append_device(
        self, conn: AsyncConnection, account_id: int, device: NewDevice, now_ms: int
    ) -> int:
        """Take the account's next device id (atomically, in ``conn``'s transaction) and insert
        ``device`` under it; returns the id."""
        device_id = (
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(next_device_id=accounts.c.next_device_id + 1)
                .returning(accounts.c.next_device_id - 1)
            )
        ).scalar_one()
        await self._insert_device(conn, account_id, int(device_id), device, now_ms)
        return int(device_id)

    async def _insert_device(
        self, conn: AsyncConnection, account_id: int, device_id: int, d: NewDevice, now_ms: int
    ) -> None:
        await conn.execute(
            insert(devices).values(
                account_id=account_id,
                device_id=device_id,
                name=d.name,
                registration_id=d.registration_id,
                identity_key=d.identity_key,
                credential_hash=d.credential_hash,
                signed_prekey=d.signed_prekey,
                last_resort_kem_prekey=d.last_resort_kem_prekey,
                created_at_ms=now_ms,
                last_seen_ms=now_ms,
                link_binding=d.link_binding,
            )
        )
        await self._insert_prekeys(conn, account_id, device_id, d.one_time_prekeys, d.kem_prekeys)

    async def _insert_prekeys(
        self,
        conn: AsyncConnection,
        account_id: int,
        device_id: int,
        one_time: Sequence[tuple[int, bytes]],
        kem: Sequence[tuple[int, bytes]],
    ) -> None:
        for table, keys in ((one_time_prekeys, one_time), (kem_prekeys, kem)):
            if keys:
                await conn.execute(
                    insert(table),
                    [
                        {"account_id": account_id, "device_id": device_id, "key_id": k, "prekey": v}
                        for k, v in keys
                    ],
                )

    async def device(self, username: str, device_id: int) -> DeviceRecord | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(*_DEVICE_COLUMNS)
                    .join(accounts, accounts.c.id == devices.c.account_id)
                    .where(accounts.c.username == username, devices.c.device_id == device_id)
                )
            ).first()
        return None if row is None else _device(row)

    async def account_id(self, username: str) -> int:
        """Raises `UnknownAccountError`."""
        async with self.db.read() as conn:
            found = (
                await conn.execute(select(accounts.c.id).where(accounts.c.username == username))
            ).scalar_one_or_none()
        if found is None:
            raise UnknownAccountError("no such account")
        return int(found)

    async def devices(self, account_id: int) -> list[DeviceRecord]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(*_DEVICE_COLUMNS)
                .join(accounts, accounts.c.id == devices.c.account_id)
                .where(devices.c.account_id == account_id)
                .order_by(devices.c.device_id)
            )
            return [_device(r) for r in rows]

    async def touch(self, account_id: int, device_id: int, now_ms: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(devices)
                .where(devices.c.account_id == account_id, devices.c.device_id == device_id)
                .values(last_seen_ms=now_ms)
            )

    async def rename_device(self, account_id: int, device_id: int, name: str) -> None:
        """Raises `UnknownDeviceError`."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(devices)
                .where(devices.c.account_id == account_id, devices.c.device_id == device_id)
                .values(name=name)
            )
            if result.rowcount == 0:
                raise UnknownDeviceError("no such device")

    async def remove_device(self, account_id: int, device_id: int) -> None:
        """Remove a device with its keys and queue.

        Raises:
            UnknownDeviceError: no such device.
            LastDeviceError: it is the account's only device.
        """
        async with self.db.write() as conn:
            count = (
                await conn.execute(select(func.count()).where(devices.c.account_id == account_id))
            ).scalar_one()
            where = and_(devices.c.account_id == account_id, devices.c.device_id == device_id)
            exists = (await conn.execute(select(devices.c.device_id).where(where))).first()
            if exists is None:
                raise UnknownDeviceError("no such device")
            if count <= 1:
                raise LastDeviceError("cannot remove the last device; delete the account")
            await conn.execute(delete(devices).where(where))
        self.queue.forget_counts()  # its queue went with it

    async def delete_account(self, account_id: int) -> list[str]:
        """Delete the account and everything hanging off it; returns its attachment ids (the
        caller deletes their files)."""
        async with self.db.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(attachments.c.id).where(attachments.c.account_id == account_id)
                    )
                )
                .scalars()
                .all()
            )
            await conn.execute(delete(accounts).where(accounts.c.id == account_id))
        self.queue.forget_counts()  # its queues went with it
        return list(ids)

    # -- provisioning ---------------------------------------------------------------------

    async def add_provisioning_code(
        self, account_id: int, code_hash: bytes, expires_ms: int
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(provisioning_codes).values(
                    code_hash=code_hash, account_id=account_id, expires_at_ms=expires_ms
                )
            )

    async def link_device(
        self, username: str, code_hash: bytes, device: NewDevice, now_ms: int
    ) -> tuple[int, int]:
        """Consume a provisioning code of ``username`` and add ``device``, atomically.

        Raises:
            ProvisioningCodeError: unknown, used, expired, or for another account.
        """
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    delete(provisioning_codes)
                    .where(provisioning_codes.c.code_hash == code_hash)
                    .returning(provisioning_codes.c.account_id, provisioning_codes.c.expires_at_ms)
                )
            ).first()
            owner = (
                await conn.execute(select(accounts.c.id).where(accounts.c.username == username))
            ).scalar_one_or_none()
            if row is None or owner is None or row[0] != owner or row[1] < now_ms:
                raise ProvisioningCodeError("the code is unknown, used or expired")
            device_id = await self._append_device(conn, int(owner), device, now_ms)
        return int(owner), device_id

    # -- prekeys ------------------------------------------------------------------------------

    async def upload_prekeys(
        self,
        account_id: int,
        device_id: int,
        *,
        signed_prekey: bytes | None,
        last_resort_kem_prekey: bytes | None,
        one_time: Sequence[tuple[int, bytes]],
        kem: Sequence[tuple[int, bytes]],
    ) -> None:
        async with self.db.write() as conn:
            values: dict[str, bytes] = {}
            if signed_prekey is not None:
                values["signed_prekey"] = signed_prekey
            if last_resort_kem_prekey is not None:
                values["last_resort_kem_prekey"] = last_resort_kem_prekey
            if values:
                await conn.execute(
                    update(devices)
                    .where(devices.c.account_id == account_id, devices.c.device_id == device_id)
                    .values(**values)
                )
            # A re-uploaded key id replaces nothing: ids are unique per device.
            for table, keys in ((one_time_prekeys, one_time), (kem_prekeys, kem)):
                if keys:
                    existing = set(
                        (
                            await conn.execute(
                                select(table.c.key_id).where(
                                    table.c.account_id == account_id,
                                    table.c.device_id == device_id,
                                    table.c.key_id.in_([k for k, _ in keys]),
                                )
                            )
                        ).scalars()
                    )
                    fresh = [(k, v) for k, v in keys if k not in existing]
                    await self._insert_prekeys(
                        conn,
                        account_id,
                        device_id,
                        fresh if table is one_time_prekeys else [],
                        fresh if table is kem_prekeys else [],
                    )

    async def prekey_counts(self, account_id: int, device_id: int) -> tuple[int, int]:
        async with self.db.read() as conn:
            counts = []
            for table in (one_time_prekeys, kem_prekeys):
                counts.append(
                    (
                        await conn.execute(
                            select(func.count()).where(
                                table.c.account_id == account_id, table.c.device_id == device_id
                            )
                        )
                    ).scalar_one()
                )
        return int(counts[0]), int(counts[1])

    async def claim_bundles(self, account_id: int, device_id: int | None) -> list[ClaimedBundle]:
        """The bundle of every device (or of ``device_id``), each claiming one one-time X25519
        and one one-time KEM prekey. A claimed key is deleted in the same transaction, so two
        concurrent claims never return the same key.

        Raises:
            UnknownDeviceError: ``device_id`` is given and not a device of the account.
        """
        async with self.db.write() as conn:
            query = select(
                devices.c.device_id,
                devices.c.registration_id,
                devices.c.identity_key,
                devices.c.signed_prekey,
                devices.c.last_resort_kem_prekey,
            ).where(devices.c.account_id == account_id)
            if device_id is not None:
                query = query.where(devices.c.device_id == device_id)
            rows = (await conn.execute(query.order_by(devices.c.device_id))).all()
            if device_id is not None and not rows:
                raise UnknownDeviceError("no such device")
            bundles = []
            for dev, registration_id, identity_key, signed, last_resort in rows:
                one_time = await self._claim(conn, one_time_prekeys, account_id, dev)
                kem = await self._claim(conn, kem_prekeys, account_id, dev)
                bundles.append(
                    ClaimedBundle(
                        device_id=dev,
                        registration_id=registration_id,
                        identity_key=identity_key,
                        signed_prekey=signed,
                        kem_prekey=kem if kem is not None else last_resort,
                        one_time_prekey=one_time,
                    )
                )
        return bundles

    async def _claim(
        self, conn: AsyncConnection, table: Table, account_id: int, device_id: int
    ) -> bytes | None:
        oldest = (
            select(table.c.id)
            .where(table.c.account_id == account_id, table.c.device_id == device_id)
            .order_by(table.c.id)
            .limit(1)
        )
        if not self.db.is_sqlite:
            # Concurrent claimers skip each other's locked rows instead of queueing on them.
            oldest = oldest.with_for_update(skip_locked=True)
        row = (
            await conn.execute(
                delete(table)
                .where(table.c.id == oldest.scalar_subquery())
                .returning(table.c.prekey)
            )
        ).first()
        return None if row is None else bytes(row[0])

    # -- messages -------------------------------------------------------------------------

    async def enqueue(
        self, account_id: int, envelopes: Sequence[OutgoingEnvelope], **batch: int
    ) -> None:
        """Store every envelope durably, all or nothing, in the writer's next batch:
        `QueueWriter.enqueue` (keywords ``now_ms``, ``expires_at_ms``, ``queue_limit``; raises
        `QueueFullError`, `StorageUnavailableError`)."""
        await self.queue.enqueue(account_id, envelopes, **batch)

    async def pending(
        self,
        account_id: int,
        device_id: int,
        *,
        now_ms: int,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[QueuedEnvelope]:
        """Unexpired queued envelopes of a device, oldest first, after ``after_seq``; those
        whose acknowledgement is waiting for its batch are left out."""
        params = {
            "account_id": account_id,
            "device_id": device_id,
            "after_seq": after_seq,
            "now_ms": now_ms,
            # As many more as may be hidden: a full page means "there may be more".
            "limit": limit + self.queue.acks_waiting(account_id, device_id),
        }
        # The hot read of delivery: one hop to the queue's reader thread on SQLite.
        rows = await self.queue.read(lambda conn: conn.execute(_PENDING, params).all())
        found = [QueuedEnvelope(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]
        acking = self.queue.is_being_acknowledged
        return [q for q in found if not acking(account_id, device_id, q.message_id)][:limit]

    async def newest_position(self) -> int:
        """The highest queue position (``messages.id``) stored now; 0 when every queue is
        empty. Where `tidings.server.sweep.QueueSweep` starts."""
        newest = select(func.coalesce(func.max(messages.c.id), 0))
        return int(await self.queue.read(lambda conn: conn.execute(newest).scalar_one()))

    async def positions_after(self, after: int, limit: int) -> list[tuple[int, int, int]]:
        """``(position, account id, device id)`` of the envelopes queued past position
        ``after`` (any device, expired or not), lowest first, at most ``limit``: the one read
        of a `tidings.server.sweep.QueueSweep` (a primary-key range scan)."""
        params = {"after": after, "limit": limit}
        rows = await self.queue.read(lambda conn: conn.execute(_POSITIONS_AFTER, params).all())
        return [(int(p), int(a), int(d)) for p, a, d in rows]

    async def acknowledge(self, account_id: int, device_id: int, message_id: bytes) -> bool:
        """Delete an envelope the device has safely stored, in the writer's next batch;
        idempotent. Raises `StorageUnavailableError` (nothing deleted)."""
        return await self.queue.acknowledge(account_id, device_id, message_id)

    def acknowledge_soon(
        self, account_id: int, device_id: int, message_id: bytes
    ) -> asyncio.Future[bool]:
        """`acknowledge` as a future, without a coroutine: `QueueWriter.acknowledge_soon`."""
        return self.queue.acknowledge_soon(account_id, device_id, message_id)

    async def purge_expired(self, now_ms: int) -> tuple[int, list[str]]:
        """Delete expired envelopes and attachment records; returns (envelopes deleted,
        attachment ids whose files the caller removes)."""
        async with self.db.write() as conn:
            gone = await conn.execute(delete(messages).where(messages.c.expires_at_ms < now_ms))
            ids = (
                (
                    await conn.execute(
                        delete(attachments)
                        .where(attachments.c.expires_at_ms < now_ms)
                        .returning(attachments.c.id)
                    )
                )
                .scalars()
                .all()
            )
        if gone.rowcount:
            self.queue.forget_counts()
        return int(gone.rowcount), list(ids)

    # -- attachments --------------------------------------------------------------------------

    async def attachment_bytes(self, account_id: int, now_ms: int) -> int:
        """Bytes of the account's live (unexpired) attachments: what its quota counts."""
        async with self.db.read() as conn:
            return await _attachment_bytes(conn, account_id, now_ms)

    async def add_attachment(
        self,
        attachment_id: str,
        account_id: int,
        size: int,
        now_ms: int,
        expires_ms: int,
        *,
        quota_bytes: int | None = None,
    ) -> None:
        """Record a stored attachment.

        Raises:
            AttachmentQuotaExceededError: with it, the account's live attachments would pass
                ``quota_bytes``; nothing is recorded.
        """
        async with self.db.write() as conn:
            # Checked again in the writing transaction: the route's up-front check ran before
            # the upload, and another upload may have finished meanwhile.
            used = 0 if quota_bytes is None else await _attachment_bytes(conn, account_id, now_ms)
            if quota_bytes is not None and used + size > quota_bytes:
                raise AttachmentQuotaExceededError()
            await conn.execute(
                insert(attachments).values(
                    id=attachment_id,
                    account_id=account_id,
                    size=size,
                    complete=True,
                    created_at_ms=now_ms,
                    expires_at_ms=expires_ms,
                )
            )

    async def attachment(self, attachment_id: str, now_ms: int) -> int | None:
        """The size of a live attachment, or None."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(attachments.c.size).where(
                        attachments.c.id == attachment_id,
                        attachments.c.complete.is_(True),
                        attachments.c.expires_at_ms >= now_ms,
                    )
                )
            ).first()
        return None if row is None else int(row[0])


async def _attachment_bytes(conn: AsyncConnection, account_id: int, now_ms: int) -> int:
    total = (
        await conn.execute(
            select(func.coalesce(func.sum(attachments.c.size), 0)).where(
                attachments.c.account_id == account_id,
                attachments.c.expires_at_ms >= now_ms,
            )
        )
    ).scalar_one()
    return int(total)
