"""In-memory `BankRepository` (tests, the demo), beside the SQL one in
`tidings.safety.sql.banks`: the same contract, the same merge (`merge_import`,
`merge_removal`), a file applied whole or not at all."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from tidings.errors import ConflictError
from tidings.safety.bank_model import (
    BankCounts,
    BankEntry,
    EntryFilter,
    HashBank,
    ImportOutcome,
    RemovalOutcome,
    SignalRow,
    SignalType,
    SourceSpec,
    merge_import,
    merge_removal,
)

__all__ = ["InMemoryBankRepository"]


class InMemoryBankRepository:
    """`tidings.safety.bank_model.BankRepository` in memory."""

    def __init__(self) -> None:
        self.banks: dict[str, HashBank] = {}
        self.entries: dict[tuple[str, SignalType, str], BankEntry] = {}
        self.version = 0
        self._lock = threading.Lock()

    def add_bank(self, bank: HashBank) -> None:
        with self._lock:
            if bank.bank_id in self.banks or self.bank_by_name(bank.name) is not None:
                raise ConflictError("a bank of that name exists")
            self.banks[bank.bank_id] = bank

    def bank_by_name(self, name: str) -> HashBank | None:
        return next((b for b in self.banks.values() if b.name == name), None)

    def list_banks(self) -> list[HashBank]:
        return sorted(self.banks.values(), key=lambda b: b.name)

    def bank_counts(self) -> dict[str, BankCounts]:
        out: dict[str, BankCounts] = {}
        for entry in self.entries.values():
            c = out.get(entry.bank_id, BankCounts())
            out[entry.bank_id] = BankCounts(
                active=c.active + int(entry.active),
                device_eligible=c.device_eligible + int(entry.device_eligible),
                removed=c.removed + int(not entry.active),
            )
        return out

    def _existing(
        self, bank_id: str, rows: Sequence[SignalRow]
    ) -> dict[tuple[SignalType, str], BankEntry]:
        found = (self.entries.get((bank_id, *row.key)) for row in rows)
        return {(e.signal_type, e.value): e for e in found if e is not None}

    def _store(self, changed: list[BankEntry], lists_changed: bool) -> int:
        for entry in changed:
            self.entries[(entry.bank_id, entry.signal_type, entry.value)] = entry
        self.version += int(lists_changed)
        return self.version

    def _jurisdiction_of(self, organisation: str) -> str | None:
        return next(
            (
                s.jurisdiction
                for e in self.entries.values()
                for s in e.sources
                if s.organisation == organisation
            ),
            None,
        )

    def apply_import(
        self,
        bank: HashBank,
        rows: Sequence[SignalRow],
        source: SourceSpec,
        *,
        now_ms: int,
        new_id: Callable[[], str],
    ) -> ImportOutcome:
        with self._lock:
            changed, outcome, lists_changed = merge_import(
                self._existing(bank.bank_id, rows),
                rows,
                bank_id=bank.bank_id,
                source=source,
                known_jurisdiction=self._jurisdiction_of(source.organisation),
                now_ms=now_ms,
                new_id=new_id,
            )
            version = self._store(changed, lists_changed)
        return replace(outcome, list_version=version)

    def apply_removal(
        self, bank: HashBank, rows: Sequence[SignalRow], organisation: str, *, now_ms: int
    ) -> RemovalOutcome:
        with self._lock:
            changed, outcome, lists_changed = merge_removal(
                self._existing(bank.bank_id, rows), rows, organisation=organisation, now_ms=now_ms
            )
            version = self._store(changed, lists_changed)
        return replace(outcome, list_version=version)

    def _of_bank(self, bank_id: str, where: EntryFilter) -> list[BankEntry]:
        found = [e for e in self.entries.values() if e.bank_id == bank_id and where.admits(e)]
        return sorted(found, key=lambda e: (e.signal_type.value, e.value))

    def entries_page(
        self,
        bank_id: str,
        where: EntryFilter,
        *,
        limit: int,
        offset: int = 0,
        after: tuple[SignalType, str] | None = None,
    ) -> list[BankEntry]:
        found = self._of_bank(bank_id, where)
        if after is not None:
            key = (after[0].value, after[1])
            found = [e for e in found if (e.signal_type.value, e.value) > key]
        return found[offset : offset + limit]

    def count_entries(self, bank_id: str, where: EntryFilter) -> int:
        return len(self._of_bank(bank_id, where))

    def active_entries(
        self, signal_type: SignalType, *, device_eligible_only: bool = False
    ) -> list[BankEntry]:
        found = [
            e
            for e in self.entries.values()
            if e.signal_type is signal_type
            and e.active
            and (e.device_eligible or not device_eligible_only)
        ]
        return sorted(found, key=lambda e: (e.value, e.bank_id))

    def list_version(self) -> int:
        return self.version
