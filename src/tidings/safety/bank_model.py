"""Hash banks, the data side: signal types and their canonical values, banks, entries and their
sources, the two-jurisdiction rule, the import/removal merge both repositories share, and the
repository contract (`tidings.safety.bank_memory` in memory, `tidings.safety.sql.banks` on a
database). Pure: no I/O, no clock (times are passed in).

The model: a `HashBank` (unique name, a `Category`) holds `BankEntry` rows, one per (signal
type, value); the same value supplied by several organisations is ONE entry with several
`EntrySource` rows (organisation, jurisdiction, added, removed). An entry is *active* until its
last source is removed (``removed_ms`` set; the row stays, for history) and *device eligible*
only while it is active and at least two active sources in DIFFERENT jurisdictions supplied
it: the 2021 safeguard against one organisation or one government putting a hash on every
device (Bhowmick et al., "The Apple PSI System", and Apple's threat-model review). An
organisation counts once however often it supplies a value, and is recorded with one
jurisdiction only (`merge_import` refuses another), so one source cannot count twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from tidings.errors import BankImportError, SafetyInputError
from tidings.safety.categories import Category
from tidings.safety.jurisdictions import canonical_jurisdiction
from tidings.wire.pdq import PDQ_HEX_CHARS, PDQ_MAX_QUALITY, PDQ_MIN_QUALITY

__all__ = [
    "DEVICE_MIN_JURISDICTIONS",
    "MAX_BANK_DESCRIPTION_CHARS",
    "MAX_BANK_NAME_CHARS",
    "MAX_ORGANISATION_CHARS",
    "BankCounts",
    "BankEntry",
    "BankRepository",
    "EntryFilter",
    "EntrySource",
    "HashBank",
    "ImportOutcome",
    "RemovalOutcome",
    "SignalRow",
    "SignalType",
    "SourceSpec",
    "canonical_bank_name",
    "canonical_signal",
    "merge_import",
    "merge_removal",
]

DEVICE_MIN_JURISDICTIONS = 2
"""An entry reaches devices only when active sources in at least this many different
jurisdictions supplied it."""
MAX_BANK_NAME_CHARS = 64
MAX_BANK_DESCRIPTION_CHARS = 2000
MAX_ORGANISATION_CHARS = 128

_BANK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ORGANISATION = re.compile(r"[^\x00-\x1f\x7f]+")


class SignalType(StrEnum):
    """What a bank entry's value is a hash of, and how it is written. Values are stable."""

    PDQ = "pdq"  # Meta's perceptual photo hash, 256 bits
    MD5 = "md5"  # of the file's bytes
    SHA256 = "sha256"  # of the file's bytes


SIGNAL_HEX_CHARS: Mapping[SignalType, int] = {
    SignalType.PDQ: PDQ_HEX_CHARS,
    SignalType.MD5: 32,
    SignalType.SHA256: 64,
}
_HEX = re.compile(r"[0-9a-f]+")


def canonical_signal(signal_type: SignalType, value: str) -> str:
    """``value`` in canonical form: lowercase hex of the type's length (surrounding spaces
    ignored).

    Raises:
        SafetyInputError: not hex, or not the type's length.
    """
    text = value.strip().lower() if isinstance(value, str) else ""
    want = SIGNAL_HEX_CHARS[signal_type]
    if len(text) != want or not _HEX.fullmatch(text):
        raise SafetyInputError(f"not a valid {signal_type.value} hash ({want} hex digits)")
    return text


def canonical_bank_name(name: str) -> str:
    """A bank name as stored: letters, digits, ``. _ -``, starting with a letter or digit.

    Raises:
        SafetyInputError: empty, too long, or other characters.
    """
    if (
        not isinstance(name, str)
        or len(name) > MAX_BANK_NAME_CHARS
        or not _BANK_NAME.fullmatch(name)
    ):
        raise SafetyInputError(
            f"a bank name is 1-{MAX_BANK_NAME_CHARS} letters, digits, '.', '_' or '-'"
        )
    return name


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HashBank:
    bank_id: str
    name: str
    category: Category
    description: str
    created_ms: int
    created_by: str


@dataclass(frozen=True, slots=True)
class EntrySource:
    """One organisation's supply of one entry. At most one source row per organisation and
    entry is active (``removed_ms`` None); removed rows stay, for history."""

    organisation: str
    jurisdiction: str
    added_ms: int
    removed_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.removed_ms is None


@dataclass(frozen=True, slots=True)
class BankEntry:
    """One (signal type, value) of one bank, with every source that ever supplied it."""

    entry_id: str
    bank_id: str
    signal_type: SignalType
    value: str
    added_ms: int
    removed_ms: int | None = None
    quality: int | None = None  # PDQ only, when a source gave it
    sources: tuple[EntrySource, ...] = ()

    @property
    def active(self) -> bool:
        return self.removed_ms is None

    @property
    def active_sources(self) -> tuple[EntrySource, ...]:
        return tuple(s for s in self.sources if s.active)

    @property
    def jurisdictions(self) -> frozenset[str]:
        """The jurisdictions of the active sources."""
        return frozenset(s.jurisdiction for s in self.active_sources)

    @property
    def device_eligible(self) -> bool:
        """Active, and supplied by active sources in at least `DEVICE_MIN_JURISDICTIONS`
        different jurisdictions (the two-jurisdiction rule)."""
        return self.active and len(self.jurisdictions) >= DEVICE_MIN_JURISDICTIONS


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One parsed row of a bank file: its 1-based line, type, canonical value, quality."""

    line: int
    signal_type: SignalType
    value: str
    quality: int | None = None

    @property
    def key(self) -> tuple[SignalType, str]:
        return (self.signal_type, self.value)


def signal_row(
    line: int, signal_type: SignalType, value: str, quality: int | None = None
) -> SignalRow:
    """A checked `SignalRow`.

    Raises:
        BankImportError (naming ``line``): a bad value, a quality outside 0-100, a quality on
            a non-PDQ row, or a PDQ quality below `PDQ_MIN_QUALITY` (refused: too unreliable
            to match on).
    """
    try:
        canonical = canonical_signal(signal_type, value)
    except SafetyInputError as exc:
        raise BankImportError(exc.message, line=line) from None
    if quality is not None:
        if signal_type is not SignalType.PDQ:
            raise BankImportError("only a pdq hash has a quality", line=line)
        if not 0 <= quality <= PDQ_MAX_QUALITY:
            raise BankImportError(f"a quality is 0-{PDQ_MAX_QUALITY}", line=line)
        if quality < PDQ_MIN_QUALITY:
            raise BankImportError(
                f"pdq quality {quality} is below {PDQ_MIN_QUALITY}: too unreliable to match on",
                line=line,
            )
    return SignalRow(line, signal_type, canonical, quality)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Who supplies (or withdraws) a file's rows."""

    organisation: str
    jurisdiction: str

    @classmethod
    def checked(cls, organisation: str, jurisdiction: str) -> SourceSpec:
        """Raises SafetyInputError: an empty, over-long or control-character organisation,
        or a jurisdiction that is not an ISO 3166-1 alpha-2 code."""
        return cls(check_organisation(organisation), canonical_jurisdiction(jurisdiction))


def check_organisation(organisation: str) -> str:
    """The organisation name, stripped. Raises SafetyInputError: empty, longer than
    `MAX_ORGANISATION_CHARS`, or holding control characters."""
    text = organisation.strip() if isinstance(organisation, str) else ""
    if not text or len(text) > MAX_ORGANISATION_CHARS or not _ORGANISATION.fullmatch(text):
        raise SafetyInputError(
            f"the source organisation is 1-{MAX_ORGANISATION_CHARS} printable characters"
        )
    return text


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    rows: int  # distinct (type, value) rows in the file
    entries_added: int  # new entries, and removed ones the import brought back
    sources_added: int  # new active sources on existing entries
    unchanged: int  # rows this source already supplied
    list_version: int


@dataclass(frozen=True, slots=True)
class RemovalOutcome:
    rows: int
    sources_removed: int
    entries_removed: int  # entries whose last source this was
    not_found: int  # rows this source did not (or no longer) supply
    list_version: int


@dataclass(frozen=True, slots=True)
class BankCounts:
    active: int = 0
    device_eligible: int = 0
    removed: int = 0


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries of a bank a page lists: a signal type, eligibility, removed ones too."""

    signal_type: SignalType | None = None
    device_eligible: bool | None = None
    include_removed: bool = False

    def admits(self, entry: BankEntry) -> bool:
        return (
            (self.include_removed or entry.active)
            and (self.signal_type is None or entry.signal_type is self.signal_type)
            and (self.device_eligible is None or entry.device_eligible == self.device_eligible)
        )


# --- the merge both repositories apply -----------------------------------------------------


def _eligibility_changed(before: BankEntry | None, after: BankEntry) -> bool:
    was_active = before is not None and before.active
    was_eligible = before is not None and before.device_eligible
    return was_active != after.active or was_eligible != after.device_eligible


def merge_import(
    existing: Mapping[tuple[SignalType, str], BankEntry],
    rows: Sequence[SignalRow],
    *,
    bank_id: str,
    source: SourceSpec,
    known_jurisdiction: str | None,
    now_ms: int,
    new_id: Callable[[], str],
) -> tuple[list[BankEntry], ImportOutcome, bool]:
    """Apply ``rows`` supplied by ``source`` to the bank's ``existing`` entries (those of the
    rows' keys, with their sources): returns the entries to store (new or changed), the
    outcome (``list_version`` 0: the repository fills it in) and whether either list (active
    entries, device-eligible entries) changed. Re-importing rows the source already supplies
    changes nothing; a removed entry comes back; a quality, when given, is kept.

    ``known_jurisdiction``: the jurisdiction this organisation is already recorded with
    anywhere (None: never seen).

    Raises:
        BankImportError: the organisation is recorded with another jurisdiction (the line of
            the first row; nothing is applied).
    """
    if known_jurisdiction is not None and known_jurisdiction != source.jurisdiction:
        raise BankImportError(
            f"organisation {source.organisation[:64]!r} is recorded with jurisdiction "
            f"{known_jurisdiction}, not {source.jurisdiction}: one organisation counts as one "
            "source",
            line=rows[0].line if rows else 0,
        )
    changed: dict[tuple[SignalType, str], BankEntry] = {}
    added = sources_added = unchanged = 0
    lists_changed = False
    for row in rows:
        before = changed.get(row.key) or existing.get(row.key)
        if before is None:
            entry = BankEntry(
                entry_id=new_id(),
                bank_id=bank_id,
                signal_type=row.signal_type,
                value=row.value,
                added_ms=now_ms,
                quality=row.quality,
                sources=(EntrySource(source.organisation, source.jurisdiction, now_ms),),
            )
            added += 1
        else:
            mine = [s for s in before.active_sources if s.organisation == source.organisation]
            quality = row.quality if row.quality is not None else before.quality
            if mine and before.active:
                if quality == before.quality:
                    unchanged += 1
                    continue
                entry = replace(before, quality=quality)
                unchanged += 1
            else:
                # Removed rows stay as history; a removal and a re-import in the same
                # millisecond reuse the row (its key is organisation + added time).
                kept = tuple(
                    s
                    for s in before.sources
                    if not (s.organisation == source.organisation and s.added_ms == now_ms)
                )
                fresh = EntrySource(source.organisation, source.jurisdiction, now_ms)
                entry = replace(before, removed_ms=None, quality=quality, sources=(*kept, fresh))
                if before.active:
                    sources_added += 1
                else:
                    added += 1
        lists_changed = lists_changed or _eligibility_changed(existing.get(row.key), entry)
        changed[row.key] = entry
    outcome = ImportOutcome(len(rows), added, sources_added, unchanged, 0)
    return list(changed.values()), outcome, lists_changed


def merge_removal(
    existing: Mapping[tuple[SignalType, str], BankEntry],
    rows: Sequence[SignalRow],
    *,
    organisation: str,
    now_ms: int,
) -> tuple[list[BankEntry], RemovalOutcome, bool]:
    """Withdraw ``organisation``'s supply of ``rows`` from ``existing`` (as `merge_import`):
    returns the changed entries, the outcome and whether either list changed. An entry whose
    last active source goes is removed at ``now_ms``; rows the organisation does not supply
    are counted, not refused (a removal file may be re-run)."""
    changed: dict[tuple[SignalType, str], BankEntry] = {}
    removed_sources = removed_entries = not_found = 0
    lists_changed = False
    for row in rows:
        before = changed.get(row.key) or existing.get(row.key)
        if before is None or not any(s.organisation == organisation for s in before.active_sources):
            not_found += 1
            continue
        sources = tuple(
            replace(s, removed_ms=now_ms) if s.active and s.organisation == organisation else s
            for s in before.sources
        )
        gone = not any(s.active for s in sources)
        entry = replace(before, sources=sources, removed_ms=now_ms if gone else None)
        removed_sources += 1
        removed_entries += int(gone)
        lists_changed = lists_changed or _eligibility_changed(existing.get(row.key), entry)
        changed[row.key] = entry
    outcome = RemovalOutcome(len(rows), removed_sources, removed_entries, not_found, 0)
    return list(changed.values()), outcome, lists_changed


def distinct_rows(rows: Iterable[SignalRow]) -> list[SignalRow]:
    """``rows`` with later repeats of a (type, value) dropped (a quality on a repeat is kept
    when the first had none)."""
    seen: dict[tuple[SignalType, str], SignalRow] = {}
    for row in rows:
        first = seen.get(row.key)
        if first is None:
            seen[row.key] = row
        elif first.quality is None and row.quality is not None:
            seen[row.key] = replace(first, quality=row.quality)
    return list(seen.values())


# --- storage --------------------------------------------------------------------------------


class BankRepository(Protocol):
    """Storage of banks, entries and sources, and the list version. `apply_import` and
    `apply_removal` are each ONE transaction: a file is applied whole or not at all, and the
    list version moves in the same transaction as the change it counts."""

    def add_bank(self, bank: HashBank) -> None:
        """Raises ConflictError: the name (or id) is taken."""
        ...

    def bank_by_name(self, name: str) -> HashBank | None: ...

    def list_banks(self) -> list[HashBank]:
        """Every bank, by name."""
        ...

    def bank_counts(self) -> dict[str, BankCounts]:
        """Per bank id (banks with no entries are absent)."""
        ...

    def apply_import(
        self,
        bank: HashBank,
        rows: Sequence[SignalRow],
        source: SourceSpec,
        *,
        now_ms: int,
        new_id: Callable[[], str],
    ) -> ImportOutcome:
        """`merge_import` over the stored entries, stored in one transaction (the list
        version +1 when a list changed). Raises: as `merge_import`; ConflictError when a
        concurrent import raced this one (nothing applied; retry)."""
        ...

    def apply_removal(
        self, bank: HashBank, rows: Sequence[SignalRow], organisation: str, *, now_ms: int
    ) -> RemovalOutcome:
        """`merge_removal` over the stored entries, in one transaction (as `apply_import`)."""
        ...

    def entries_page(
        self,
        bank_id: str,
        where: EntryFilter,
        *,
        limit: int,
        offset: int = 0,
        after: tuple[SignalType, str] | None = None,
    ) -> list[BankEntry]:
        """At most ``limit`` of the bank's entries ``where`` admits, by (signal type, value),
        skipping ``offset`` of them, or (keyset, for walking a whole bank) those up to and
        including the key ``after``."""
        ...

    def count_entries(self, bank_id: str, where: EntryFilter) -> int: ...

    def active_entries(
        self, signal_type: SignalType, *, device_eligible_only: bool = False
    ) -> list[BankEntry]:
        """Every active entry of ``signal_type`` in every bank (only the device-eligible ones
        when asked), by (value, bank id)."""
        ...

    def list_version(self) -> int:
        """0 for a database no change ever touched."""
        ...
