"""Hash banks: signal values, the two-jurisdiction rule, the import formats (and export round
trips), incremental re-imports, removal, atomic refusal of bad files, the list version, and
the audit of every change and view — on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.safety.conftest import OPERATOR, T0, Counter
from tidings.errors import (
    BankImportError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    SafetyInputError,
)
from tidings.safety.audit import AuditAction, AuditLog, InMemoryAuditRepository
from tidings.safety.bank_formats import TE_SIGNAL_NAMES, export_lines, parse_bank_file
from tidings.safety.bank_memory import InMemoryBankRepository
from tidings.safety.bank_model import (
    BankEntry,
    EntryFilter,
    EntrySource,
    SignalType,
    canonical_signal,
)
from tidings.safety.banks import BankService
from tidings.safety.jurisdictions import ISO_3166_ALPHA2, canonical_jurisdiction
from tidings.safety.sql import SafetyDatabase, SqlAuditRepository, SqlBankRepository
from tidings.safety.staff import ROLE_PERMISSIONS, Principal, Role
from tidings.wire.pdq import PDQ_MIN_QUALITY


def pdq() -> str:
    return secrets.token_hex(32)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1
        return self.now


@dataclass
class Banks:
    service: BankService
    audit: AuditLog
    clock: Clock

    def actions(self) -> list[str]:
        return [e.action for e in self.audit.repository.entries()]

    def import_rows(self, name: str, rows: list[str], org: str, cc: str, fmt: str = "csv") -> int:
        data = ("\n".join(rows) + "\n").encode()
        result = self.service.import_file(
            OPERATOR, name, data, organisation=org, jurisdiction=cc, file_format=fmt
        )
        return result.outcome.list_version

    def entry(self, name: str, value: str) -> BankEntry:
        page = self.service.entries(OPERATOR, name, EntryFilter(include_removed=True), limit=500)
        return next(e for e in page.entries if e.value == value)


@pytest.fixture
def banks(safety_db: SafetyDatabase | None) -> Iterator[Banks]:
    clock = Clock()
    if safety_db is None:
        audit = AuditLog(InMemoryAuditRepository())
        repo: object = InMemoryBankRepository()
    else:
        audit = AuditLog(SqlAuditRepository(safety_db))
        repo = SqlBankRepository(safety_db)
    service = BankService(repo, audit, clock=clock, id_source=Counter())  # type: ignore[arg-type]
    service.create_bank(OPERATOR, name="ncmec-like", category="child_sexual_exploitation")
    yield Banks(service, audit, clock)


# --- values and jurisdictions ---------------------------------------------------------------


def test_signal_values_are_canonical_lowercase_hex_of_the_types_length() -> None:
    value = "AB" * 32
    assert canonical_signal(SignalType.PDQ, f"  {value} ") == value.lower()
    assert canonical_signal(SignalType.MD5, "0" * 32) == "0" * 32
    for kind, bad in [
        (SignalType.PDQ, "a" * 63),
        (SignalType.PDQ, "g" * 64),
        (SignalType.MD5, "a" * 64),
        (SignalType.SHA256, "a" * 32),
        (SignalType.SHA256, "a" * 63 + "\u0661"),  # a non-ASCII digit
    ]:
        with pytest.raises(SafetyInputError):
            canonical_signal(kind, bad)


def test_our_validators_agree_with_threatexchange() -> None:
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal
    from threatexchange.signal_type.sha256 import VideoSHA256Signal

    theirs = {
        SignalType.PDQ: PdqSignal,
        SignalType.MD5: VideoMD5Signal,
        SignalType.SHA256: VideoSHA256Signal,
    }
    for ours, cls in theirs.items():
        assert TE_SIGNAL_NAMES[cls.get_name()] is ours
        for sample in (*cls.get_examples(), "a" * 32, "b" * 64, "z" * 64, "a" * 65):
            try:
                expected: str | None = cls.validate_signal_str(sample)
            except ValueError:
                expected = None
            try:
                got: str | None = canonical_signal(ours, sample)
            except SafetyInputError:
                got = None
            assert got == expected, (ours, sample)
    assert PdqSignal.QUALITY_THRESHOLD == PDQ_MIN_QUALITY


def test_jurisdictions_are_iso_3166_alpha2() -> None:
    assert canonical_jurisdiction(" gb ") == "GB"
    assert len(ISO_3166_ALPHA2) == 249
    for bad in ("UK", "XX", "USA", "", "E1"):
        with pytest.raises(SafetyInputError):
            canonical_jurisdiction(bad)
    tz_table = Path("/usr/share/zoneinfo/iso3166.tab")
    if tz_table.is_file():  # the list's source, where the system ships it
        lines = tz_table.read_text(encoding="utf-8").splitlines()
        codes = {line.split("\t")[0] for line in lines if line and not line.startswith("#")}
        assert codes == ISO_3166_ALPHA2


# --- the two-jurisdiction rule --------------------------------------------------------------


def test_device_eligible_needs_two_active_sources_in_different_jurisdictions() -> None:
    def entry(*sources: EntrySource, removed: int | None = None) -> BankEntry:
        return BankEntry("e", "b", SignalType.PDQ, pdq(), 1, removed, None, sources)

    us, gb = EntrySource("NCMEC", "US", 1), EntrySource("IWF", "GB", 1)
    assert entry(us, gb).device_eligible
    assert not entry(us).device_eligible
    assert not entry(us, EntrySource("Other US org", "US", 1)).device_eligible
    assert not entry(us, EntrySource("IWF", "GB", 1, removed_ms=2)).device_eligible
    assert not entry(us, gb, removed=5).device_eligible


def test_one_value_from_two_jurisdictions_is_one_device_eligible_entry(banks: Banks) -> None:
    value = pdq()
    v1 = banks.import_rows("ncmec-like", [f"pdq,{value}"], "NCMEC", "US")
    assert [e.value for e in banks.service.active_entries("pdq")] == [value]
    assert banks.service.device_list() == []
    v2 = banks.import_rows("ncmec-like", [f"pdq,{value.upper()}"], "IWF", "gb")
    entry = banks.entry("ncmec-like", value)
    assert [(s.organisation, s.jurisdiction) for s in entry.active_sources] == [
        ("NCMEC", "US"),
        ("IWF", "GB"),
    ]
    assert entry.device_eligible
    assert [e.value for e in banks.service.device_list()] == [value]
    assert v2 > v1 > 0
    counts = banks.service.list_banks(OPERATOR)[0].counts
    assert (counts.active, counts.device_eligible, counts.removed) == (1, 1, 0)


def test_a_second_source_in_the_same_jurisdiction_is_not_enough(banks: Banks) -> None:
    value = pdq()
    banks.import_rows("ncmec-like", [f"pdq,{value}"], "NCMEC", "US")
    banks.import_rows("ncmec-like", [f"pdq,{value}"], "Another US hotline", "US")
    assert len(banks.entry("ncmec-like", value).active_sources) == 2
    assert banks.service.device_list() == []


def test_an_organisation_keeps_one_jurisdiction(banks: Banks) -> None:
    value = pdq()
    banks.import_rows("ncmec-like", [f"pdq,{pdq()}"], "NCMEC", "US")
    audited = len(banks.actions())
    with pytest.raises(BankImportError, match=r"line 1: .*recorded with jurisdiction US"):
        banks.import_rows("ncmec-like", [f"pdq,{value}"], "NCMEC", "GB")
    assert len(banks.service.active_entries("pdq")) == 1
    assert len(banks.actions()) == audited


def test_only_pdq_entries_reach_devices(banks: Banks) -> None:
    md5 = secrets.token_hex(16)
    for org, cc in (("NCMEC", "US"), ("IWF", "GB")):
        banks.import_rows("ncmec-like", [f"md5,{md5}"], org, cc)
    assert banks.entry("ncmec-like", md5).device_eligible
    assert banks.service.device_list() == []
    assert [e.value for e in banks.service.active_entries(SignalType.MD5)] == [md5]


# --- import formats, incremental, idempotent --------------------------------------------------


def test_csv_with_or_without_header_extra_columns_noted() -> None:
    value = pdq()
    plain = parse_bank_file(f"pdq,{value}\nmd5,{'a' * 32}\n".encode())
    assert [(r.signal_type, r.value) for r in plain.rows] == [
        (SignalType.PDQ, value),
        (SignalType.MD5, "a" * 32),
    ]
    assert plain.notes == []
    te_csv = (
        "signal_type,signal_str,collab,category,tags\n"
        f"pdq,{value},Sample,POSITIVE_CLASS,a b\n"
        f"video_md5,{'b' * 32},Sample,POSITIVE_CLASS,\n"
    )
    parsed = parse_bank_file(te_csv.encode())
    assert [r.signal_type for r in parsed.rows] == [SignalType.PDQ, SignalType.MD5]
    assert parsed.notes == ["ignored column(s): collab, category, tags"]
    extra = parse_bank_file(f"\ufeffpdq,{value},whatever\n".encode())
    assert extra.rows[0].value == value and extra.notes


def test_te_and_jsonl_formats() -> None:
    value, sha = pdq(), secrets.token_hex(32)
    te = f"pdq {value}\nvideo_sha256 {sha} 'collab' {{}}\n# comment\n\n"
    parsed = parse_bank_file(te.encode(), "te")
    assert [(r.signal_type, r.value) for r in parsed.rows] == [
        (SignalType.PDQ, value),
        (SignalType.SHA256, sha),
    ]
    assert parsed.notes
    jsonl = "\n".join(
        [
            json.dumps({"signal_type": "pdq", "signal_value": value, "quality": 90}),
            json.dumps({"signal_type": "photo_md5", "signal_str": "c" * 32, "tags": ["x"]}),
        ]
    )
    parsed = parse_bank_file(jsonl.encode(), "jsonl")
    assert [(r.signal_type, r.quality) for r in parsed.rows] == [
        (SignalType.PDQ, 90),
        (SignalType.MD5, None),
    ]
    assert parsed.notes == ["ignored key(s): tags"]


@pytest.mark.parametrize(
    ("text", "fmt", "line"),
    [
        ("pdq,{v}\npdq,nothex\n", "csv", 2),
        ("pdq,{v}\nsha1,{v}\n", "csv", 2),
        ("pdq,{v}\n\npdq\n", "csv", 3),
        ("signal_type,other\npdq,{v}\n", "csv", 1),
        ("signal_type,signal_value,quality\npdq,{v},49\n", "csv", 2),
        ("signal_type,signal_value,quality\nmd5,{m},80\n", "csv", 2),
        ("signal_type,signal_value,quality\npdq,{v},high\n", "csv", 2),
        ("pdq {v}\npdq\n", "te", 2),
        ('{{"signal_type": "pdq", "signal_value": "{v}"}}\n[1]\n', "jsonl", 2),
        ('{{"signal_type": "pdq", "signal_value": "{v}", "quality": 101}}\n', "jsonl", 1),
        ('{{"signal_type": "pdq", "signal_value": "{v}", "quality": true}}\n', "jsonl", 1),
        ("not json\n", "jsonl", 1),
    ],
)
def test_bad_rows_name_their_line_and_nothing_is_imported(
    banks: Banks, text: str, fmt: str, line: int
) -> None:
    before = (banks.service.list_version(), len(banks.actions()))
    data = text.format(v=pdq(), m="a" * 32).encode()
    with pytest.raises(BankImportError) as raised:
        banks.service.import_file(
            OPERATOR, "ncmec-like", data, organisation="NCMEC", jurisdiction="US", file_format=fmt
        )
    assert raised.value.line == line and raised.value.message.startswith(f"line {line}: ")
    assert banks.service.active_entries("pdq") == []
    assert (banks.service.list_version(), len(banks.actions())) == before


def test_file_level_refusals(banks: Banks) -> None:
    for data, fmt in [(b"", "csv"), (b"# only a comment\n", "csv"), (b"\xff\xfe", "csv")]:
        with pytest.raises(BankImportError):
            parse_bank_file(data, fmt)
    with pytest.raises(BankImportError, match="csv, te or jsonl"):
        parse_bank_file(b"pdq,00\n", "xml")
    with pytest.raises(SafetyInputError):
        banks.import_rows("ncmec-like", [f"pdq,{pdq()}"], "NCMEC", "ZZ")
    with pytest.raises(SafetyInputError):
        banks.import_rows("ncmec-like", [f"pdq,{pdq()}"], "  ", "US")
    with pytest.raises(NotFoundError):
        banks.import_rows("no-such-bank", [f"pdq,{pdq()}"], "NCMEC", "US")


def test_reimport_is_idempotent_and_incremental(banks: Banks) -> None:
    first = [f"pdq,{pdq()}" for _ in range(3)]
    version = banks.import_rows("ncmec-like", first, "NCMEC", "US")
    again = banks.service.import_file(
        OPERATOR,
        "ncmec-like",
        ("\n".join(first + first[:1]) + "\n").encode(),  # repeats collapse
        organisation="NCMEC",
        jurisdiction="US",
    ).outcome
    assert (again.rows, again.entries_added, again.unchanged) == (3, 0, 3)
    assert again.list_version == version  # nothing changed: no new version
    more = banks.import_rows("ncmec-like", [*first, f"pdq,{pdq()}"], "NCMEC", "US")
    assert more == version + 1
    assert len(banks.service.active_entries("pdq")) == 4


def test_a_quality_below_the_minimum_is_refused_a_good_one_kept(banks: Banks) -> None:
    value = pdq()
    with pytest.raises(BankImportError, match="below 50"):
        banks.import_rows(
            "ncmec-like", ["signal_type,signal_value,quality", f"pdq,{value},12"], "NCMEC", "US"
        )
    banks.import_rows(
        "ncmec-like", ["signal_type,signal_value,quality", f"pdq,{value},88"], "NCMEC", "US"
    )
    assert banks.entry("ncmec-like", value).quality == 88


@pytest.mark.parametrize("fmt", ["csv", "te", "jsonl"])
def test_export_round_trips_with_import(banks: Banks, fmt: str) -> None:
    rows = [
        "signal_type,signal_value,quality",
        f"pdq,{pdq()},77",
        f"pdq,{pdq()},",
        f"md5,{secrets.token_hex(16)},",
        f"sha256,{secrets.token_hex(32)},",
    ]
    banks.import_rows("ncmec-like", rows, "NCMEC", "US")
    exported = "\n".join(banks.service.export(OPERATOR, "ncmec-like", fmt)) + "\n"
    assert AuditAction.BANK_EXPORT.value in banks.actions()
    banks.service.create_bank(OPERATOR, name="copy", category="child_sexual_exploitation")
    banks.import_rows("copy", exported.splitlines(), "NCMEC", "US", fmt)

    def shape(name: str) -> list[tuple[SignalType, str, int | None]]:
        page = banks.service.entries(OPERATOR, name, limit=500).entries
        quality = fmt != "te"  # te lines carry no quality
        return [(e.signal_type, e.value, e.quality if quality else None) for e in page]

    assert shape("copy") == shape("ncmec-like") and len(shape("copy")) == 4


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(SignalType)), st.integers(50, 100) | st.none()),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["csv", "jsonl"]),
)
def test_export_lines_parse_back_property(
    shapes: list[tuple[SignalType, int | None]], fmt: str
) -> None:
    entries = [
        BankEntry(
            f"e{i}",
            "b",
            kind,
            secrets.token_hex(16 if kind is SignalType.MD5 else 32),
            1,
            quality=quality if kind is SignalType.PDQ else None,
        )
        for i, (kind, quality) in enumerate(shapes)
    ]
    text = "\n".join(export_lines(entries, fmt))
    parsed = parse_bank_file(text.encode(), fmt).rows
    assert [(r.signal_type, r.value, r.quality) for r in parsed] == [
        (e.signal_type, e.value, e.quality) for e in entries
    ]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["csv", "te", "jsonl"]))
def test_arbitrary_bytes_parse_or_raise_a_typed_error(data: bytes, fmt: str) -> None:
    try:
        parse_bank_file(data, fmt)
    except BankImportError:
        pass


# --- removal --------------------------------------------------------------------------------


def test_removal_withdraws_one_source_and_the_last_removes_the_entry(banks: Banks) -> None:
    value, other = pdq(), pdq()
    banks.import_rows("ncmec-like", [f"pdq,{value}", f"pdq,{other}"], "NCMEC", "US")
    banks.import_rows("ncmec-like", [f"pdq,{value}"], "IWF", "GB")
    assert [e.value for e in banks.service.device_list()] == [value]
    version = banks.service.list_version()

    first = banks.service.remove_values(OPERATOR, "ncmec-like", [value], organisation="IWF")
    assert (first.outcome.sources_removed, first.outcome.entries_removed) == (1, 0)
    assert banks.service.device_list() == []  # eligibility gone at once
    assert first.outcome.list_version == version + 1
    entry = banks.entry("ncmec-like", value)
    assert entry.active and [s.organisation for s in entry.active_sources] == ["NCMEC"]
    assert any(s.organisation == "IWF" and s.removed_ms for s in entry.sources)  # history

    data = f"pdq,{value}\npdq,{pdq()}\n".encode()
    second = banks.service.remove_file(OPERATOR, "ncmec-like", data, organisation="NCMEC")
    assert (second.outcome.entries_removed, second.outcome.not_found) == (1, 1)
    gone = banks.entry("ncmec-like", value)
    assert gone.removed_ms is not None and not gone.device_eligible
    assert [e.value for e in banks.service.active_entries("pdq")] == [other]
    page = banks.service.entries(OPERATOR, "ncmec-like")
    assert [e.value for e in page.entries] == [other] and page.total == 1
    assert banks.service.list_banks(OPERATOR)[0].counts.removed == 1
    assert banks.actions().count(AuditAction.BANK_REMOVE.value) == 2

    # Removing again changes nothing; a re-import brings the entry back.
    again = banks.service.remove_file(OPERATOR, "ncmec-like", data, organisation="NCMEC")
    assert again.outcome.not_found == 2
    assert again.outcome.list_version == second.outcome.list_version
    banks.import_rows("ncmec-like", [f"pdq,{value}"], "NCMEC", "US")
    assert banks.entry("ncmec-like", value).active


def test_a_bad_removal_file_removes_nothing(banks: Banks) -> None:
    value = pdq()
    banks.import_rows("ncmec-like", [f"pdq,{value}"], "NCMEC", "US")
    with pytest.raises(BankImportError, match="line 2"):
        banks.service.remove_file(
            OPERATOR, "ncmec-like", f"pdq,{value}\npdq,zz\n".encode(), organisation="NCMEC"
        )
    with pytest.raises(BankImportError, match="line 1"):
        banks.service.remove_values(OPERATOR, "ncmec-like", ["zz"], organisation="NCMEC")
    assert banks.entry("ncmec-like", value).active


# --- banks, paging, permissions, audit ------------------------------------------------------


def test_bank_names_are_unique_and_checked(banks: Banks) -> None:
    with pytest.raises(ConflictError):
        banks.service.create_bank(OPERATOR, name="ncmec-like", category="terrorism")
    for name, category in [("bad name", "terrorism"), ("", "terrorism"), ("ok", "nope")]:
        with pytest.raises(SafetyInputError):
            banks.service.create_bank(OPERATOR, name=name, category=category)
    with pytest.raises(SafetyInputError):
        banks.service.create_bank(OPERATOR, name="long", category="spam", description="x" * 2001)


def test_entries_page_filters_and_pages_in_order(banks: Banks) -> None:
    values = sorted(pdq() for _ in range(7))
    banks.import_rows("ncmec-like", [f"pdq,{v}" for v in values], "NCMEC", "US")
    banks.import_rows("ncmec-like", [f"pdq,{v}" for v in values[:3]], "IWF", "GB")
    banks.import_rows("ncmec-like", [f"md5,{'d' * 32}"], "NCMEC", "US")
    s = banks.service
    page = s.entries(OPERATOR, "ncmec-like", EntryFilter(signal_type=SignalType.PDQ), limit=4)
    assert [e.value for e in page.entries] == values[:4] and page.total == 7
    rest = s.entries(
        OPERATOR, "ncmec-like", EntryFilter(signal_type=SignalType.PDQ), limit=4, offset=4
    )
    assert [e.value for e in rest.entries] == values[4:]
    eligible = s.entries(OPERATOR, "ncmec-like", EntryFilter(device_eligible=True))
    assert [e.value for e in eligible.entries] == values[:3]
    not_eligible = s.entries(OPERATOR, "ncmec-like", EntryFilter(device_eligible=False))
    assert not_eligible.total == 5  # 4 pdq + 1 md5
    with pytest.raises(SafetyInputError):
        s.entries(OPERATOR, "ncmec-like", limit=0)
    with pytest.raises(NotFoundError):
        s.entries(OPERATOR, "nope")
    assert banks.actions().count(AuditAction.BANK_VIEW.value) == 4


@pytest.mark.parametrize("role", list(Role))
def test_permissions_by_role(banks: Banks, role: Role) -> None:
    principal = Principal(
        f"staff_{role.value}", role.value, frozenset({role}), ROLE_PERMISSIONS[role], frozenset()
    )
    can_view = role in (Role.LEGAL, Role.ADMIN)
    if can_view:
        assert banks.service.list_banks(principal)[0].bank.name == "ncmec-like"
        banks.service.entries(principal, "ncmec-like")
        entry = banks.audit.repository.entries()
        assert list(entry)[-1].actor == principal.staff_id
    else:
        with pytest.raises(PermissionDeniedError):
            banks.service.list_banks(principal)
        with pytest.raises(PermissionDeniedError):
            banks.service.entries(principal, "ncmec-like")
    if role is not Role.ADMIN:
        with pytest.raises(PermissionDeniedError):
            banks.service.import_file(
                principal, "ncmec-like", b"pdq,00\n", organisation="x", jurisdiction="US"
            )
        with pytest.raises(PermissionDeniedError):
            banks.service.create_bank(principal, name="b2", category="spam")


def test_every_change_is_audited_under_its_actor(banks: Banks) -> None:
    value = pdq()
    banks.import_rows("ncmec-like", [f"pdq,{value}"], "NCMEC", "US")
    banks.service.remove_values(OPERATOR, "ncmec-like", [value], organisation="NCMEC")
    entries = list(banks.audit.repository.entries())
    assert [e.action for e in entries] == ["bank.create", "bank.import", "bank.remove"]
    assert {e.actor for e in entries} == {"operator:cli"}
    details = json.loads(entries[1].details)
    assert details["organisation"] == "NCMEC" and details["entries_added"] == 1
    assert len(details["file_sha256"]) == 64
    assert banks.audit.verify().ok


def test_a_large_import_on_postgresql_refreshes_the_planner_statistics(
    request: pytest.FixtureRequest,
) -> None:
    db: SafetyDatabase = request.getfixturevalue("pg_safety_db")
    with db.write() as c:
        c.exec_driver_sql("TRUNCATE safety_banks, safety_bank_entries, safety_bank_sources")
    repo = SqlBankRepository(db, analyze_after_rows=3)
    service = BankService(repo, AuditLog(SqlAuditRepository(db)), clock=Clock())
    service.create_bank(OPERATOR, name="big", category="child_sexual_exploitation")

    def analyzed() -> object:
        with db.read() as c:
            return c.exec_driver_sql(
                "SELECT last_analyze FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() AND relname = 'safety_bank_entries'"
            ).scalar()

    service.import_file(
        OPERATOR, "big", b"pdq,%s\n" % pdq().encode(), organisation="A", jurisdiction="US"
    )
    assert analyzed() is None  # below the threshold: no ANALYZE
    rows = "".join(f"pdq,{pdq()}\n" for _ in range(3)).encode()
    service.import_file(OPERATOR, "big", rows, organisation="A", jurisdiction="US")
    assert analyzed() is not None
