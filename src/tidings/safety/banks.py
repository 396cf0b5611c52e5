"""Hash banks: `BankService`, the one entry point for creating banks, importing and removing
entries, reading them (the console, the CLI) and for the lists matching is built from.

Staff operations take the acting `Principal` (the console's signed-in staff member, or
`tidings.safety.service.SafetyService.operator` at the command line) and are audited under
it: creating a bank, an import, a removal, every view of the banks or of a bank's entries and
every export.
A change is audited right after its transaction commits, with what it changed; a view is
audited before its rows are returned. The system reads (`device_list`, `active_entries`,
`list_version`) take no principal: they feed the matching engines, not a person.

The data model, the two-jurisdiction rule and the merge are `tidings.safety.bank_model`; the
file formats `tidings.safety.bank_formats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tidings.crypto.primitives import sha256
from tidings.errors import NotFoundError, SafetyInputError
from tidings.safety.audit import AuditAction, AuditLog, AuditsOneKind
from tidings.safety.bank_formats import (
    BankFileFormat,
    ParsedBankFile,
    bank_file_format,
    export_lines,
    parse_bank_file,
)
from tidings.safety.bank_model import (
    DEVICE_MIN_JURISDICTIONS,
    MAX_BANK_DESCRIPTION_CHARS,
    MAX_BANK_NAME_CHARS,
    BankCounts,
    BankEntry,
    BankRepository,
    EntryFilter,
    HashBank,
    ImportOutcome,
    RemovalOutcome,
    SignalType,
    SourceSpec,
    canonical_bank_name,
    check_organisation,
    distinct_rows,
    signal_row,
)
from tidings.safety.categories import Category
from tidings.safety.staff import Permission, Principal

__all__ = [
    "DEVICE_MIN_JURISDICTIONS",
    "ENTRY_PAGE_MAX",
    "EXPORT_BATCH",
    "TWO_JURISDICTION_RULE",
    "BankEntry",
    "BankService",
    "BankSummary",
    "EntryFilter",
    "EntryPage",
    "HashBank",
    "ImportResult",
    "RemovalResult",
    "SignalType",
]

ENTRY_PAGE_MAX = 500
"""Most entries one `BankService.entries` call returns."""
EXPORT_BATCH = 1000
"""Entries an export reads per query."""

TWO_JURISDICTION_RULE = (
    "A hash goes into the list that devices match against only when at least two independent "
    "sources in different jurisdictions supplied it. Each organisation counts once, with one "
    "jurisdiction; an entry whose last source is withdrawn is removed from every list at once."
)
"""The rule in words, as the console states it."""


ALL_ACTIVE = EntryFilter()
"""Every active entry, of any type."""


def _new_id() -> str:
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class BankSummary:
    bank: HashBank
    counts: BankCounts


@dataclass(frozen=True, slots=True)
class EntryPage:
    bank: HashBank
    entries: list[BankEntry]
    total: int  # entries the filter admits
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    outcome: ImportOutcome
    notes: list[str]


@dataclass(frozen=True, slots=True)
class RemovalResult:
    outcome: RemovalOutcome
    notes: list[str]


class BankService(AuditsOneKind):
    """Hash banks over a `BankRepository` (see the module docstring)."""

    audit_kind = "bank"

    def __init__(
        self,
        repository: BankRepository,
        audit: AuditLog,
        *,
        clock: Callable[[], int],
        id_source: Callable[[], str] = _new_id,
    ) -> None:
        self.repository = repository
        self._audit = audit
        self._clock = clock
        self._ids = id_source

    # --- banks ---------------------------------------------------------------------------

    def create_bank(
        self, actor: Principal, *, name: str, category: Category | str, description: str = ""
    ) -> HashBank:
        """Create a bank (audited).

        Raises:
            PermissionDeniedError: no MANAGE_BANKS.  SafetyInputError: a bad name, an unknown
                category, an over-long description.  ConflictError: the name is taken.
        """
        actor.require(Permission.MANAGE_BANKS)
        checked = canonical_bank_name(name)
        try:
            kind = Category(category)
        except ValueError:
            raise SafetyInputError("unknown category") from None
        text = description.strip() if isinstance(description, str) else ""
        if len(text) > MAX_BANK_DESCRIPTION_CHARS:
            raise SafetyInputError(
                f"a description is at most {MAX_BANK_DESCRIPTION_CHARS} characters"
            )
        now = self._clock()
        bank = HashBank("bank_" + self._ids(), checked, kind, text, now, actor.staff_id)
        self.repository.add_bank(bank)
        self._audit_on(
            actor.staff_id,
            AuditAction.BANK_CREATE,
            bank.bank_id,
            now,
            {"name": bank.name, "category": kind.value},
        )
        return bank

    def bank(self, name: str) -> HashBank:
        """The bank called ``name``. Raises NotFoundError: none (or not a bank name)."""
        if not isinstance(name, str) or len(name) > MAX_BANK_NAME_CHARS:
            raise NotFoundError("no such bank")
        found = self.repository.bank_by_name(name)
        if found is None:
            raise NotFoundError("no such bank")
        return found

    def list_banks(self, actor: Principal) -> list[BankSummary]:
        """Every bank with its counts, by name (audited, target ``bank:*``).

        Raises PermissionDeniedError: no VIEW_BANKS."""
        actor.require(Permission.VIEW_BANKS)
        counts = self.repository.bank_counts()
        banks = self.repository.list_banks()
        self._audit_on(
            actor.staff_id, AuditAction.BANK_VIEW, "*", self._clock(), {"banks": len(banks)}
        )
        return [BankSummary(b, counts.get(b.bank_id, BankCounts())) for b in banks]

    # --- entries in and out ----------------------------------------------------------------

    def import_file(
        self,
        actor: Principal,
        name: str,
        data: bytes,
        *,
        organisation: str,
        jurisdiction: str,
        file_format: BankFileFormat | str = BankFileFormat.CSV,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import every row of ``data`` as supplied by ``organisation`` in ``jurisdiction``:
        incremental (rows already supplied by this organisation change nothing), in ONE
        transaction, audited with the file's SHA-256 and what changed.

        Raises:
            PermissionDeniedError: no MANAGE_BANKS.  NotFoundError: no such bank.
            SafetyInputError: a bad organisation or jurisdiction.  BankImportError: a bad
                file or row (naming the line), or an organisation recorded with another
                jurisdiction; nothing is applied.  ConflictError: a concurrent change raced
                this one (nothing applied; retry).
        """
        actor.require(Permission.MANAGE_BANKS)
        bank = self.bank(name)
        source = SourceSpec.checked(organisation, jurisdiction)
        bank_file_format(file_format)
        parsed = parse_bank_file(data, file_format, progress=progress)
        rows = distinct_rows(parsed.rows)
        now = self._clock()
        outcome = self.repository.apply_import(
            bank, rows, source, now_ms=now, new_id=lambda: "be_" + self._ids()
        )
        self._audit_on(
            actor.staff_id,
            AuditAction.BANK_IMPORT,
            bank.bank_id,
            now,
            {
                "bank": bank.name,
                "organisation": source.organisation,
                "jurisdiction": source.jurisdiction,
                "format": bank_file_format(file_format).value,
                "file_sha256": sha256(data).hex(),
                "rows": outcome.rows,
                "entries_added": outcome.entries_added,
                "sources_added": outcome.sources_added,
                "unchanged": outcome.unchanged,
                "list_version": outcome.list_version,
            },
        )
        return ImportResult(outcome, parsed.notes)

    def remove_file(
        self,
        actor: Principal,
        name: str,
        data: bytes,
        *,
        organisation: str,
        file_format: BankFileFormat | str = BankFileFormat.CSV,
    ) -> RemovalResult:
        """Withdraw ``organisation``'s supply of every row of ``data`` (one transaction,
        audited); an entry whose last source this was is removed from every list at once.

        Raises: as `import_file` (no jurisdiction is involved).
        """
        actor.require(Permission.MANAGE_BANKS)
        bank = self.bank(name)
        parsed = parse_bank_file(data, file_format)
        outcome = self._remove(actor, bank, parsed, organisation, file_sha256=sha256(data).hex())
        return RemovalResult(outcome, parsed.notes)

    def remove_values(
        self,
        actor: Principal,
        name: str,
        values: Sequence[str],
        *,
        organisation: str,
        signal_type: SignalType | str = SignalType.PDQ,
    ) -> RemovalResult:
        """`remove_file` for values given one by one (``--value``), all of ``signal_type``.

        Raises: as `remove_file`; BankImportError names the value's position (1-based).
        """
        actor.require(Permission.MANAGE_BANKS)
        bank = self.bank(name)
        try:
            kind = SignalType(signal_type)
        except ValueError:
            raise SafetyInputError("the signal type is pdq, md5 or sha256") from None
        if not values:
            raise SafetyInputError("no value to remove")
        rows = [signal_row(i, kind, v) for i, v in enumerate(values, start=1)]
        outcome = self._remove(actor, bank, ParsedBankFile(rows), organisation, file_sha256=None)
        return RemovalResult(outcome, [])

    def _remove(
        self,
        actor: Principal,
        bank: HashBank,
        parsed: ParsedBankFile,
        organisation: str,
        *,
        file_sha256: str | None,
    ) -> RemovalOutcome:
        org = check_organisation(organisation)
        now = self._clock()
        outcome = self.repository.apply_removal(bank, distinct_rows(parsed.rows), org, now_ms=now)
        self._audit_on(
            actor.staff_id,
            AuditAction.BANK_REMOVE,
            bank.bank_id,
            now,
            {
                "bank": bank.name,
                "organisation": org,
                "file_sha256": file_sha256,
                "rows": outcome.rows,
                "sources_removed": outcome.sources_removed,
                "entries_removed": outcome.entries_removed,
                "not_found": outcome.not_found,
                "list_version": outcome.list_version,
            },
        )
        return outcome

    def entries(
        self,
        actor: Principal,
        name: str,
        where: EntryFilter = ALL_ACTIVE,
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> EntryPage:
        """One page of a bank's entries (with their sources), by (type, value); audited.

        Raises:
            PermissionDeniedError: no VIEW_BANKS.  NotFoundError: no such bank.
            SafetyInputError: ``limit`` outside 1-`ENTRY_PAGE_MAX` or a negative ``offset``.
        """
        actor.require(Permission.VIEW_BANKS)
        if not 1 <= limit <= ENTRY_PAGE_MAX or offset < 0:
            raise SafetyInputError(f"a page holds 1-{ENTRY_PAGE_MAX} entries from offset >= 0")
        bank = self.bank(name)
        total = self.repository.count_entries(bank.bank_id, where)
        found = self.repository.entries_page(bank.bank_id, where, limit=limit, offset=offset)
        self._audit_on(
            actor.staff_id,
            AuditAction.BANK_VIEW,
            bank.bank_id,
            self._clock(),
            {
                "offset": offset,
                "shown": len(found),
                "signal_type": where.signal_type.value if where.signal_type else None,
                "device_eligible": where.device_eligible,
            },
        )
        return EntryPage(bank, found, total, offset, limit)

    def export(
        self,
        actor: Principal,
        name: str,
        file_format: BankFileFormat | str = BankFileFormat.CSV,
    ) -> Iterator[str]:
        """The lines of the bank's active entries in ``file_format`` (`export_lines`: they
        import back to the same entries); the export is audited before the first line.

        Raises:
            PermissionDeniedError: no MANAGE_BANKS.  NotFoundError: no such bank.
            BankImportError: an unknown format.
        """
        actor.require(Permission.MANAGE_BANKS)
        bank = self.bank(name)
        kind = bank_file_format(file_format)
        total = self.repository.count_entries(bank.bank_id, EntryFilter())
        self._audit_on(
            actor.staff_id,
            AuditAction.BANK_EXPORT,
            bank.bank_id,
            self._clock(),
            {"bank": bank.name, "format": kind.value, "entries": total},
        )
        return export_lines(self._all_active(bank), kind)

    def _all_active(self, bank: HashBank) -> Iterator[BankEntry]:
        after: tuple[SignalType, str] | None = None
        while True:
            page = self.repository.entries_page(
                bank.bank_id, EntryFilter(), limit=EXPORT_BATCH, after=after
            )
            yield from page
            if len(page) < EXPORT_BATCH:
                return
            after = (page[-1].signal_type, page[-1].value)

    # --- the lists (system reads) ----------------------------------------------------------

    def device_list(self) -> list[BankEntry]:
        """The PDQ entries devices match against: active and device eligible (the
        two-jurisdiction rule), from every bank, by (value, bank id). One value held by two
        banks appears once per bank."""
        return self.repository.active_entries(SignalType.PDQ, device_eligible_only=True)

    def active_entries(self, signal_type: SignalType | str) -> list[BankEntry]:
        """Every active entry of ``signal_type`` in every bank (clear-text matching), by
        (value, bank id). Raises SafetyInputError: an unknown signal type."""
        try:
            kind = SignalType(signal_type)
        except ValueError:
            raise SafetyInputError("the signal type is pdq, md5 or sha256") from None
        return self.repository.active_entries(kind)

    def list_version(self) -> int:
        """Increases with every change to the active or the device-eligible entries."""
        return self.repository.list_version()
