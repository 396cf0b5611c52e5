"""Clear-text matching of media against the hash banks: one index of the listed hashes, cached
by the banks' list version, for everyone on the provider side who holds a plaintext.

Two callers, one `BankMatcher` per node (`tidings.safety.service.SafetyService.bank_matcher`):

- reported attachments (`tidings.safety.reports.ReportIntake`): a reporter revealed the
  attachment's key, so the provider legitimately sees its bytes; they are matched against
  EVERY active entry of every bank (PDQ within `PDQ_MATCH_DISTANCE` over the 8 dihedral
  hashes, and exact MD5 / SHA-256) — not only the device list, whose two-jurisdiction rule
  exists to limit what is put on users' devices, not what the provider may compare with
  content it was handed (docs/detection.md "Reported attachments");
- detection confirmation (`tidings.safety.detection.DetectionService`): a recovered image is
  checked against the device-eligible PDQ entries only (``device_only``), the list the
  vouchers were built against.

`BankIndex` is an immutable snapshot (a `PdqIndex` and an `ExactHashIndex` over positions in
its entry table); `BankMatcher` holds the snapshot of the current `list_version()` and builds
a new one when the version moves (every change to the active or the device-eligible entries
moves it, so a removed entry stops matching on the next call). Queries never wait for a
rebuild started by another thread to finish unless they need the new version.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidings.errors import TidingsError
from tidings.media.digests import ContentDigests, DigestKind, content_digests
from tidings.media.pdq import PdqHash, dihedral_hashes
from tidings.safety.bank_model import SignalType
from tidings.safety.pdq_index import ExactHashIndex, PdqIndex
from tidings.wire.pdq import PDQ_MATCH_DISTANCE

__all__ = [
    "BankIndex",
    "BankMatcher",
    "HashSource",
    "ListedHash",
    "MatchedEntry",
    "MediaMatch",
    "bank_hash_source",
    "entries_from_text",
    "entries_text",
]

_EXACT: dict[SignalType, DigestKind] = {SignalType.MD5: "md5", SignalType.SHA256: "sha256"}


@dataclass(frozen=True, slots=True)
class MatchedEntry:
    """One bank entry a piece of media matched: its bank's name, id, signal type, distance
    (PDQ: Hamming distance, at most `PDQ_MATCH_DISTANCE`; MD5 / SHA-256: 0, an exact match)
    and the (organisation, jurisdiction) of each of its active sources."""

    bank: str
    entry_id: str
    distance: int
    sources: tuple[tuple[str, str], ...]
    signal_type: str = SignalType.PDQ.value

    @property
    def exact(self) -> bool:
        return self.signal_type != SignalType.PDQ.value

    def to_json(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "entry_id": self.entry_id,
            "signal_type": self.signal_type,
            "distance": self.distance,
            "sources": [{"organisation": o, "jurisdiction": j} for o, j in self.sources],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MatchedEntry:
        """The entry `to_json` wrote (rows written before ``signal_type`` existed are PDQ)."""
        sources = data.get("sources")
        return cls(
            bank=str(data["bank"]),
            entry_id=str(data["entry_id"]),
            distance=int(str(data["distance"])),
            sources=tuple(
                (str(s["organisation"]), str(s["jurisdiction"]))
                for s in (sources if isinstance(sources, list) else [])
            ),
            signal_type=str(data.get("signal_type", SignalType.PDQ.value)),
        )


def entries_text(entries: Iterable[MatchedEntry]) -> str:
    """How a stored match (of a report's attachment, of a detection) keeps its entries in
    one column: a JSON list of `MatchedEntry.to_json`, keys sorted."""
    return json.dumps([e.to_json() for e in entries], sort_keys=True)


def entries_from_text(text: str) -> tuple[MatchedEntry, ...]:
    """The entries `entries_text` wrote. Raises `json.JSONDecodeError`, `KeyError` or
    `ValueError` for a column it did not write."""
    return tuple(MatchedEntry.from_json(e) for e in json.loads(text))


def _rank(entry: MatchedEntry) -> tuple[int, str, str]:
    return entry.distance, entry.bank, entry.entry_id


@dataclass(frozen=True, slots=True)
class ListedHash:
    """One active bank entry as the matchers see it: its id, its bank's name, its signal type
    and raw value (32 bytes of PDQ, 16 of MD5, 32 of SHA-256), the (organisation,
    jurisdiction) of its active sources, and whether it is on the device list."""

    entry_id: str
    bank: str
    value: bytes = field(repr=False)
    sources: tuple[tuple[str, str], ...]
    signal_type: SignalType = SignalType.PDQ
    device_eligible: bool = True

    @property
    def pdq(self) -> bytes:
        """The value of a PDQ entry (the device list holds PDQ entries only)."""
        return self.value

    def matched(self, distance: int) -> MatchedEntry:
        return MatchedEntry(
            bank=self.bank,
            entry_id=self.entry_id,
            distance=distance,
            sources=self.sources,
            signal_type=self.signal_type.value,
        )


class HashSource(Protocol):
    """Where the listed hashes come from (`bank_hash_source`, or detection's
    `tidings.safety.detection.DeviceListSource`)."""

    def listed_hashes(self) -> list[ListedHash]: ...

    def list_version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MediaMatch:
    """What matching one plaintext found: its digests, its PDQ hash (the unrotated one; None
    when it is not an image that hashes, or its hash is of unusable quality) and the matched
    entries, nearest first (ties by bank, entry id)."""

    digests: ContentDigests
    pdq: PdqHash | None
    entries: tuple[MatchedEntry, ...]

    @property
    def distance(self) -> int:
        """The best distance over the entries (call only when there are some)."""
        return self.entries[0].distance


class BankIndex:
    """An immutable snapshot of listed hashes: PDQ by Hamming radius, MD5 / SHA-256 exactly.
    Thread-safe (queries only read)."""

    def __init__(self, listed: Iterable[ListedHash], version: int = 0) -> None:
        self.version = version
        self.listed: tuple[ListedHash, ...] = tuple(listed)
        self._pdq = PdqIndex(
            (i, PdqHash(h.value))
            for i, h in enumerate(self.listed)
            if h.signal_type is SignalType.PDQ
        )
        self._exact = ExactHashIndex()
        for i, h in enumerate(self.listed):
            kind = _EXACT.get(h.signal_type)
            if kind is not None:
                self._exact.add(i, kind, h.value)

    def __len__(self) -> int:
        return len(self.listed)

    def match_pdq(
        self, hashes: Sequence[PdqHash], *, device_only: bool = False
    ) -> tuple[MatchedEntry, ...]:
        """The PDQ entries within `PDQ_MATCH_DISTANCE` of any of ``hashes`` (typically the 8
        of `dihedral_hashes`), each once with its smallest distance, nearest first;
        ``device_only``: only device-eligible entries."""
        found = (
            self.listed[m.entry_id].matched(m.distance)
            for m in self._pdq.query_dihedral(list(hashes), PDQ_MATCH_DISTANCE)
            if not device_only or self.listed[m.entry_id].device_eligible
        )
        return tuple(sorted(found, key=_rank))

    def match_digests(self, digests: ContentDigests) -> tuple[MatchedEntry, ...]:
        """The MD5 / SHA-256 entries equal to ``digests`` (distance 0), by bank and entry id."""
        found = (self.listed[m.entry_id].matched(0) for m in self._exact.query(digests))
        return tuple(sorted(found, key=_rank))

    def match_media(self, plaintext: bytes) -> MediaMatch:
        """Every entry ``plaintext`` matches: by digest always, by PDQ when it is an image
        `dihedral_hashes` decodes and its hash is usable (a decode error, a truncated or an
        oversized image is matched by its digests only). CPU-bound (~40 ms for a photo):
        call it off the event loop. Never raises for any bytes."""
        digests = content_digests(plaintext)
        exact = self.match_digests(digests)
        try:
            turned: tuple[PdqHash, ...] = dihedral_hashes(plaintext)
        except TidingsError:
            turned = ()
        if turned and not turned[0].is_usable:
            turned = ()
        near = self.match_pdq(turned) if turned else ()
        return MediaMatch(
            digests=digests,
            pdq=turned[0] if turned else None,
            entries=tuple(sorted((*exact, *near), key=_rank)),
        )


class BankMatcher:
    """The `BankIndex` of the source's current list version, rebuilt when it moves (one
    rebuild at a time; other threads keep using the snapshot they hold). Every call reads
    ``source.list_version()`` (one small query on SQL) so that a change made on another node
    is seen at once."""

    def __init__(self, source: HashSource) -> None:
        self._source = source
        self._index: BankIndex | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        index = self._index
        return f"BankMatcher(version={None if index is None else index.version})"

    def index(self) -> BankIndex:
        """The index of the current list version.

        Raises:
            Whatever the source raises reading the banks (SQLAlchemyError: the database is
            unreachable); the previous snapshot stays for the next call.
        """
        # The version is read before the entries: a change in between leaves a snapshot
        # labelled older than what it holds, which the next call replaces (never the reverse).
        version = self._source.list_version()
        cached = self._index
        if cached is not None and cached.version == version:
            return cached
        with self._lock:
            cached = self._index
            if cached is not None and cached.version == version:
                return cached
            index = BankIndex(self._source.listed_hashes(), version)
            self._index = index
            return index

    def match_media(self, plaintext: bytes) -> MediaMatch:
        """`BankIndex.match_media` on the current index (every active entry of the source)."""
        return self.index().match_media(plaintext)


def bank_hash_source(banks: Any, *, device_only: bool = False) -> HashSource:
    """A `HashSource` over a `tidings.safety.banks.BankService`: every active entry of every
    signal type, or (``device_only``) the device list (`BankService.device_list`)."""
    return _BankHashes(banks, device_only)


class _BankHashes:
    def __init__(self, banks: Any, device_only: bool) -> None:
        self._banks = banks
        self._device_only = device_only

    def listed_hashes(self) -> list[ListedHash]:
        # A system read (no principal): the names shown beside a match on the case.
        names = {b.bank_id: b.name for b in self._banks.repository.list_banks()}
        if self._device_only:
            entries = list(self._banks.device_list())
        else:
            entries = [e for kind in SignalType for e in self._banks.active_entries(kind)]
        return [
            ListedHash(
                entry_id=str(entry.entry_id),
                bank=names.get(entry.bank_id, entry.bank_id),
                value=bytes.fromhex(entry.value),
                sources=tuple((s.organisation, s.jurisdiction) for s in entry.active_sources),
                signal_type=SignalType(entry.signal_type),
                device_eligible=bool(entry.device_eligible),
            )
            for entry in entries
        ]

    def list_version(self) -> int:
        return int(self._banks.list_version())
