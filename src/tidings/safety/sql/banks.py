"""Hash banks on ``safety_banks``, ``safety_bank_entries``, ``safety_bank_sources`` and
``safety_bank_list`` (`SqlBankRepository`).

An import or a removal is one write transaction: the stored entries of the file's values are
read, `merge_import` / `merge_removal` decides what changes, the changed rows are written and
the list version is bumped, all before the commit; any failure rolls the whole file back.
Entries are read with their sources in chunks (`_CHUNK` ids per ``IN`` list), so a bank page
or a list of a million entries costs a bounded number of queries per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.safety.bank_model import (
    BankCounts,
    BankEntry,
    EntryFilter,
    EntrySource,
    HashBank,
    ImportOutcome,
    RemovalOutcome,
    SignalRow,
    SignalType,
    SourceSpec,
    merge_import,
    merge_removal,
)
from tidings.safety.sql.engine import RecordTable, SafetyDatabase
from tidings.storage.safety_schema import (
    safety_bank_entries,
    safety_bank_list,
    safety_bank_sources,
    safety_banks,
)

__all__ = ["SqlBankRepository"]

_CHUNK = 500
"""Ids or values per ``IN`` list (well under SQLite's and asyncpg's parameter limits)."""
_LIST_ROW = 1
ANALYZE_AFTER_ROWS = 10_000
"""On PostgreSQL, an import that adds at least this many entries is followed by ``ANALYZE`` of
the bank tables: until the planner has statistics it reads the ``IN`` lookups of the next
import as a scan of the whole bank (measured: 85 ms instead of 2.5 ms per 500 values at 100k
entries), and autovacuum may be off or minutes behind."""
_RACED = "another change to this bank raced this one; nothing was applied, retry"

_E = safety_bank_entries.c
_S = safety_bank_sources.c


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _entry_values(entry: BankEntry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "bank_id": entry.bank_id,
        "signal_type": entry.signal_type.value,
        "value": entry.value,
        "quality": entry.quality,
        "added_ms": entry.added_ms,
        "removed_ms": entry.removed_ms,
        "device_eligible": entry.device_eligible,
    }


def _source_values(entry_id: str, source: EntrySource) -> dict[str, Any]:
    return {
        "entry_id": entry_id,
        "organisation": source.organisation,
        "jurisdiction": source.jurisdiction,
        "added_ms": source.added_ms,
        "removed_ms": source.removed_ms,
    }


def _entry(row: Row[Any], sources: tuple[EntrySource, ...]) -> BankEntry:
    return BankEntry(
        entry_id=row.entry_id,
        bank_id=row.bank_id,
        signal_type=SignalType(row.signal_type),
        value=row.value,
        added_ms=row.added_ms,
        removed_ms=row.removed_ms,
        quality=row.quality,
        sources=sources,
    )


def _where(bank_id: str, where: EntryFilter) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = [_E.bank_id == bank_id]
    if not where.include_removed:
        conditions.append(_E.removed_ms.is_(None))
    if where.signal_type is not None:
        conditions.append(_E.signal_type == where.signal_type.value)
    if where.device_eligible is not None:
        conditions.append(_E.device_eligible.is_(where.device_eligible))
    return and_(*conditions)


class SqlBankRepository:
    """`tidings.safety.bank_model.BankRepository` on a `SafetyDatabase` (``analyze_after_rows``:
    see `ANALYZE_AFTER_ROWS`)."""

    def __init__(self, db: SafetyDatabase, *, analyze_after_rows: int = ANALYZE_AFTER_ROWS) -> None:
        self._db = db
        self._analyze_after = analyze_after_rows
        self._banks = RecordTable(db, safety_banks, "bank_id", HashBank)

    # --- banks ---------------------------------------------------------------------------

    def add_bank(self, bank: HashBank) -> None:
        self._banks.insert(bank, conflict="a bank of that name exists")

    def bank_by_name(self, name: str) -> HashBank | None:
        found = self._banks.where(safety_banks.c.name == name, limit=1)
        return found[0] if found else None

    def list_banks(self) -> list[HashBank]:
        return self._banks.where(safety_banks.c.bank_id.is_not(None), safety_banks.c.name)

    def bank_counts(self) -> dict[str, BankCounts]:
        active = _E.removed_ms.is_(None)
        query = select(
            _E.bank_id,
            func.sum(sql_case((active, 1), else_=0)),
            func.sum(sql_case((and_(active, _E.device_eligible.is_(True)), 1), else_=0)),
            func.sum(sql_case((active, 0), else_=1)),
        ).group_by(_E.bank_id)
        return {
            bank: BankCounts(int(a), int(e), int(r)) for bank, a, e, r in self._db.all(query, tuple)
        }

    # --- reading entries -----------------------------------------------------------------

    @staticmethod
    def _with_sources(connection: Connection, rows: Sequence[Row[Any]]) -> list[BankEntry]:
        """The entries of ``rows`` (in their order), each with its sources by added time."""
        sources: dict[str, list[EntrySource]] = {}
        ids = [row.entry_id for row in rows]
        for chunk in _chunks(ids):
            query = (
                select(_S.entry_id, _S.organisation, _S.jurisdiction, _S.added_ms, _S.removed_ms)
                .where(_S.entry_id.in_(chunk))
                .order_by(_S.entry_id, _S.added_ms, _S.organisation)
            )
            for entry_id, *source in connection.execute(query).all():
                sources.setdefault(entry_id, []).append(EntrySource(*source))
        return [_entry(row, tuple(sources.get(row.entry_id, ()))) for row in rows]

    def _entries(self, query: Any) -> list[BankEntry]:
        with self._db.read() as connection:
            rows = connection.execute(query).all()
            return self._with_sources(connection, rows)

    def _entries_joined(self, condition: ColumnElement[bool], *order_by: Any) -> list[BankEntry]:
        """Every entry meeting ``condition`` with its sources, in one joined query (for the
        whole-list reads, where an ``IN`` list per chunk would cost a query per 500)."""
        query = (
            select(
                safety_bank_entries,
                _S.organisation,
                _S.jurisdiction,
                _S.added_ms.label("source_added_ms"),
                _S.removed_ms.label("source_removed_ms"),
            )
            .select_from(
                safety_bank_entries.outerjoin(safety_bank_sources, _S.entry_id == _E.entry_id)
            )
            .where(condition)
            .order_by(*order_by, _E.entry_id, _S.added_ms, _S.organisation)
        )
        out: list[BankEntry] = []
        current: Row[Any] | None = None
        sources: list[EntrySource] = []
        with self._db.read() as connection:
            for row in connection.execute(query):
                if current is None or row.entry_id != current.entry_id:
                    if current is not None:
                        out.append(_entry(current, tuple(sources)))
                    current, sources = row, []
                if row.organisation is not None:
                    sources.append(
                        EntrySource(
                            row.organisation,
                            row.jurisdiction,
                            row.source_added_ms,
                            row.source_removed_ms,
                        )
                    )
        if current is not None:
            out.append(_entry(current, tuple(sources)))
        return out

    def _existing(
        self, connection: Connection, bank_id: str, rows: Sequence[SignalRow]
    ) -> dict[tuple[SignalType, str], BankEntry]:
        by_type: dict[SignalType, list[str]] = {}
        for row in rows:
            by_type.setdefault(row.signal_type, []).append(row.value)
        found: list[Row[Any]] = []
        for signal_type, values in by_type.items():
            for chunk in _chunks(values):
                query = select(safety_bank_entries).where(
                    _E.bank_id == bank_id,
                    _E.signal_type == signal_type.value,
                    _E.value.in_(chunk),
                )
                found.extend(connection.execute(query).all())
        return {(e.signal_type, e.value): e for e in self._with_sources(connection, found)}

    def entries_page(
        self,
        bank_id: str,
        where: EntryFilter,
        *,
        limit: int,
        offset: int = 0,
        after: tuple[SignalType, str] | None = None,
    ) -> list[BankEntry]:
        query = select(safety_bank_entries).where(_where(bank_id, where))
        if after is not None:
            kind, value = after[0].value, after[1]
            query = query.where(
                or_(_E.signal_type > kind, and_(_E.signal_type == kind, _E.value > value))
            )
        query = query.order_by(_E.signal_type, _E.value).limit(limit).offset(offset)
        return self._entries(query)

    def count_entries(self, bank_id: str, where: EntryFilter) -> int:
        query = select(func.count()).select_from(safety_bank_entries).where(_where(bank_id, where))
        with self._db.read() as connection:
            return int(connection.execute(query).scalar_one())

    def active_entries(
        self, signal_type: SignalType, *, device_eligible_only: bool = False
    ) -> list[BankEntry]:
        condition = and_(_E.signal_type == signal_type.value, _E.removed_ms.is_(None))
        if device_eligible_only:
            condition = and_(condition, _E.device_eligible.is_(True))
        return self._entries_joined(condition, _E.value, _E.bank_id)

    def list_version(self) -> int:
        with self._db.read() as connection:
            return self._version(connection)

    @staticmethod
    def _version(connection: Connection) -> int:
        query = select(safety_bank_list.c.version).where(safety_bank_list.c.id == _LIST_ROW)
        version = connection.execute(query).scalar()
        return int(version) if version is not None else 0

    # --- writing -------------------------------------------------------------------------

    def _store(
        self,
        connection: Connection,
        changed: Iterable[BankEntry],
        existing: Iterable[BankEntry],
        lists_changed: bool,
    ) -> int:
        """Write ``changed`` (new entries inserted, stored ones updated, each in one
        executemany; new source rows inserted, changed ones updated) and bump the version when
        a list changed; returns the version."""
        before = {e.entry_id: e for e in existing}
        entries = list(changed)
        new = [e for e in entries if e.entry_id not in before]
        updated = [e for e in entries if e.entry_id in before]
        if new:
            connection.execute(insert(safety_bank_entries), [_entry_values(e) for e in new])
        if updated:
            connection.execute(
                update(safety_bank_entries)
                .where(_E.entry_id == bindparam("b_entry_id"))
                .values(
                    quality=bindparam("b_quality"),
                    removed_ms=bindparam("b_removed_ms"),
                    device_eligible=bindparam("b_device_eligible"),
                ),
                [
                    {
                        "b_entry_id": e.entry_id,
                        "b_quality": e.quality,
                        "b_removed_ms": e.removed_ms,
                        "b_device_eligible": e.device_eligible,
                    }
                    for e in updated
                ],
            )
        # Sources: a merge appends a source or withdraws one (sets removed_ms); rows are keyed
        # by (entry, organisation, added time), so only those keys are inserted or updated.
        fresh: list[dict[str, Any]] = []
        withdrawn: list[dict[str, Any]] = []
        for entry in entries:
            old = before.get(entry.entry_id)
            old_keys = {(s.organisation, s.added_ms): s for s in old.sources} if old else {}
            for source in entry.sources:
                prior = old_keys.get((source.organisation, source.added_ms))
                if prior is None:
                    fresh.append(_source_values(entry.entry_id, source))
                elif prior != source:
                    withdrawn.append(
                        {
                            "b_entry_id": entry.entry_id,
                            "b_organisation": source.organisation,
                            "b_added_ms": source.added_ms,
                            "b_jurisdiction": source.jurisdiction,
                            "b_removed_ms": source.removed_ms,
                        }
                    )
        if fresh:
            connection.execute(insert(safety_bank_sources), fresh)
        if withdrawn:
            connection.execute(
                update(safety_bank_sources)
                .where(
                    _S.entry_id == bindparam("b_entry_id"),
                    _S.organisation == bindparam("b_organisation"),
                    _S.added_ms == bindparam("b_added_ms"),
                )
                .values(
                    jurisdiction=bindparam("b_jurisdiction"),
                    removed_ms=bindparam("b_removed_ms"),
                ),
                withdrawn,
            )
        version = self._version(connection)
        if not lists_changed:
            return version
        if version == 0:
            connection.execute(insert(safety_bank_list).values(id=_LIST_ROW, version=1))
            return 1
        connection.execute(
            update(safety_bank_list)
            .where(safety_bank_list.c.id == _LIST_ROW)
            .values(version=safety_bank_list.c.version + 1)
        )
        return self._version(connection)

    def apply_import(
        self,
        bank: HashBank,
        rows: Sequence[SignalRow],
        source: SourceSpec,
        *,
        now_ms: int,
        new_id: Callable[[], str],
    ) -> ImportOutcome:
        try:
            with self._db.write() as connection:
                existing = self._existing(connection, bank.bank_id, rows)
                known = connection.execute(
                    select(_S.jurisdiction).where(_S.organisation == source.organisation).limit(1)
                ).scalar()
                changed, outcome, lists_changed = merge_import(
                    existing,
                    rows,
                    bank_id=bank.bank_id,
                    source=source,
                    known_jurisdiction=known,
                    now_ms=now_ms,
                    new_id=new_id,
                )
                version = self._store(connection, changed, existing.values(), lists_changed)
        except IntegrityError:
            raise ConflictError(_RACED) from None
        if not self._db.is_sqlite and outcome.entries_added >= self._analyze_after:
            with self._db.write() as connection:
                connection.exec_driver_sql("ANALYZE safety_bank_entries, safety_bank_sources")
        return replace(outcome, list_version=version)

    def apply_removal(
        self, bank: HashBank, rows: Sequence[SignalRow], organisation: str, *, now_ms: int
    ) -> RemovalOutcome:
        try:
            with self._db.write() as connection:
                existing = self._existing(connection, bank.bank_id, rows)
                changed, outcome, lists_changed = merge_removal(
                    existing, rows, organisation=organisation, now_ms=now_ms
                )
                version = self._store(connection, changed, existing.values(), lists_changed)
        except IntegrityError:
            raise ConflictError(_RACED) from None
        return replace(outcome, list_version=version)
