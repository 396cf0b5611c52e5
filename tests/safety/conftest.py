"""Shared fixtures: a franking "server", chats that produce real franked report items, and a
fully wired in-memory trust & safety world."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.services import PG_URL, require_service
from tests.support.staff import PASSWORD, enrol
from tidings.crypto import attachment, franking
from tidings.crypto.franking import ReportItem
from tidings.safety.audit import AuditEntry, AuditLog, InMemoryAuditRepository
from tidings.safety.cases import (
    CaseRecord,
    CaseService,
    InMemoryCaseRepository,
    InMemoryEnforcementRepository,
)
from tidings.safety.categories import QueueId
from tidings.safety.evidence import (
    EvidenceKeyRing,
    EvidenceRecord,
    EvidenceVault,
    InMemoryEvidenceRepository,
)
from tidings.safety.passwords import StaffPasswordHasher
from tidings.safety.refusals import InMemoryRefusalCounter
from tidings.safety.reports import (
    FrankingKey,
    FrankingKeyRing,
    InMemoryReportRepository,
    ReportIntake,
    ReportRecord,
    ReportSubmission,
)
from tidings.safety.sql import (
    SafetyDatabase,
    SqlAuditRepository,
    SqlCaseRepository,
    SqlEnforcementRepository,
    SqlEvidenceRepository,
    SqlRefusalCounter,
    SqlReportRepository,
    SqlStaffRepository,
)
from tidings.safety.staff import (
    ROLE_PERMISSIONS,
    InMemoryStaffRepository,
    IssuedEnrolment,
    Principal,
    Role,
    StaffAccount,
    StaffService,
    TotpVerifier,
)
from tidings.storage.safety_schema import (
    safety_cases,
    safety_evidence,
    safety_report_replay,
    safety_reports,
)
from tidings.storage.schema import metadata
from tidings.wire import encode, pb

T0 = 1_700_000_000_000
OLD_KEY = os.urandom(32)
NEW_KEY = os.urandom(32)
STAFF_KEY = os.urandom(32)
ROTATED_AT = T0 + 1_000_000
OPERATOR = Principal(
    staff_id="operator:cli",
    username="operator",
    roles=frozenset({Role.ADMIN}),
    permissions=ROLE_PERMISSIONS[Role.ADMIN],
    queues=frozenset(),
)


def activate(
    staff: StaffService, issued: IssuedEnrolment, approver: Principal, now_ms: int
) -> Principal:
    """A created account enrolled by its owner, every pending grant approved by ``approver``
    (a second, independent admin): the domain-level way tests get active staff."""
    enrol(staff, issued, now_ms)
    for grant in issued.pending_grants:
        staff.approve_grant(approver, grant.grant_id, now_ms=now_ms)
    return staff.principal_for(issued.account.staff_id)


@dataclass
class Sent:
    """One message as every recipient device received it."""

    items: dict[tuple[str, int], ReportItem]
    commitment: bytes

    def to(self, account: str, device: int = 1) -> ReportItem:
        return self.items[(account, device)]


@dataclass
class Server:
    """The server's side of franking: timestamps, message ids, tags (with key rotation)."""

    clock: int = T0
    attachments: dict[str, bytes] = field(default_factory=dict)

    def key_at(self, timestamp: int) -> bytes:
        return OLD_KEY if timestamp < ROTATED_AT else NEW_KEY

    def fetch(self, attachment_id: str) -> bytes | None:
        return self.attachments.get(attachment_id)


@dataclass
class Chat:
    """A conversation (1:1 or group) whose messages are franked and tagged like the real thing
    (frank -> commitment -> server tag -> ReportItem), without the ratchet in between (the
    ratchet is covered by tests/crypto; franking does not depend on it)."""

    server: Server
    conversation_id: bytes
    group_id: bytes | None = None
    heads: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def send(
        self,
        sender: tuple[str, int],
        recipients: list[tuple[str, int]],
        text: str,
        *,
        attachments: tuple[pb.AttachmentPointer, ...] = (),
        server_key: bytes | None = None,
    ) -> Sent:
        data = pb.DataMessage(body=text)
        data.attachments.extend(attachments)
        if self.group_id is not None:
            data.group.CopyFrom(pb.GroupContext(group_id=self.group_id))
        content = pb.Content(
            version=1,
            sent_at_ms=self.server.clock,
            conversation_id=self.conversation_id,
            previous_commitment=self.heads.get(sender, b""),
            data=data,
        )
        franked = franking.frank(content)
        self.heads[sender] = franked.commitment
        items: dict[tuple[str, int], ReportItem] = {}
        for recipient in recipients:
            self.server.clock += 1
            tag_input = franking.FrankingTagInput(
                commitment=franked.commitment,
                sender=sender[0],
                sender_device=sender[1],
                recipient=recipient[0],
                recipient_device=recipient[1],
                server_timestamp_ms=self.server.clock,
                message_id=os.urandom(16),
            )
            key = server_key or self.server.key_at(self.server.clock)
            items[recipient] = ReportItem(
                content=franked.content,
                franking_key=franked.franking_key,
                commitment=franked.commitment,
                franking_tag=franking.compute_franking_tag(key, tag_input),
                sender=sender[0],
                sender_device=sender[1],
                recipient=recipient[0],
                recipient_device=recipient[1],
                server_timestamp_ms=self.server.clock,
                message_id=tag_input.message_id,
            )
        return Sent(items, franked.commitment)

    def upload(
        self, plaintext: bytes, *, key: bytes | None = None, content_type: str = "image/png"
    ) -> tuple[pb.AttachmentPointer, bytes]:
        """Encrypt and store an attachment; return its pointer and key."""
        key = key or attachment.generate_key()
        ciphertext, digest = attachment.encrypt_bytes(key, plaintext, chunk_size=256)
        attachment_id = os.urandom(8).hex()
        self.server.attachments[attachment_id] = ciphertext
        pointer = pb.AttachmentPointer(
            id=attachment_id,
            key=key,
            digest=digest,
            size=len(plaintext),
            chunk_size=256,
            content_type=content_type,
        )
        return pointer, key


def direct_chat(server: Server, a: str, b: str) -> Chat:
    return Chat(server, franking.direct_conversation_id(a, b))


def group_chat(server: Server) -> Chat:
    group_id = os.urandom(16)
    return Chat(server, franking.group_conversation_id(group_id), group_id)


def cheap_hasher() -> StaffPasswordHasher:
    return StaffPasswordHasher.cheap_for_tests()


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.n:04d}"


@dataclass
class World:
    server: Server
    audit_repo: InMemoryAuditRepository
    audit: AuditLog
    evidence_repo: InMemoryEvidenceRepository
    report_repo: InMemoryReportRepository
    case_repo: InMemoryCaseRepository
    enforcement_repo: InMemoryEnforcementRepository
    vault: EvidenceVault
    staff: StaffService
    staff_repo: InMemoryStaffRepository
    cases: CaseService
    intake: ReportIntake
    admin: Principal
    admin2: Principal  # a second, independent admin (enrolled through an operator's link)
    refusals: Any = None  # the refused-report counter the intake counts into
    totp: TotpVerifier = field(default_factory=TotpVerifier)
    now: int = T0 + 10_000_000

    def submit(self, submission: ReportSubmission) -> str:
        return self.intake.submit(submission, now_ms=self.now).case_id

    def make_staff(
        self, username: str, *roles: Role, child_safety: bool = False, queues: tuple[str, ...] = ()
    ) -> Principal:
        """An active staff member: created by ``admin``, enrolled by its owner, its grants
        approved by ``admin2``, then added to ``queues``."""
        issued = self.staff.create_staff(
            self.admin,
            username=username,
            display_name=username,
            roles=roles,
            child_safety=child_safety,
            now_ms=self.now,
        )
        activate(self.staff, issued, self.admin2, self.now)
        for queue in queues:
            self.staff.add_to_queue(self.admin, issued.account.staff_id, queue, now_ms=self.now)
        return self.staff.principal_for(issued.account.staff_id)

    def account(self, principal: Principal) -> StaffAccount:
        account = self.staff_repo.get_staff(principal.staff_id)
        assert account is not None
        return account

    def stored_nothing(self, audit_before: int) -> bool:
        return (
            not self.report_repo.reports
            and not self.report_repo.replay
            and not self.evidence_repo.rows
            and not self.case_repo.cases
            and len(self.audit_repo.rows) == audit_before
        )


ALL_QUEUES = tuple(q.value for q in QueueId if q is not QueueId.CHILD_SAFETY)


def build_world(*, anchor_key: bytes | None = None, db: SafetyDatabase | None = None) -> World:
    """The wired world on in-memory repositories, or on the SQL ones over ``db``."""
    server = Server()
    if db is None:
        audit_repo: Any = InMemoryAuditRepository()
        evidence_repo: Any = InMemoryEvidenceRepository()
        report_repo: Any = InMemoryReportRepository(evidence_repo)
        case_repo: Any = InMemoryCaseRepository()
        enforcement_repo: Any = InMemoryEnforcementRepository()
        staff_repo: Any = InMemoryStaffRepository()
        refusals: Any = InMemoryRefusalCounter()
    else:
        audit_repo = AuditRows(db)
        evidence_repo = EvidenceRows(db)
        report_repo = ReportRows(db)
        case_repo = CaseRows(db)
        enforcement_repo = SqlEnforcementRepository(db)
        staff_repo = SqlStaffRepository(db, STAFF_KEY)
        refusals = SqlRefusalCounter(db)
    audit = AuditLog(audit_repo, anchor_key=anchor_key)
    vault = EvidenceVault(evidence_repo, EvidenceKeyRing({"ev1": os.urandom(32)}, "ev1"), audit)
    ids = Counter()
    staff = StaffService(
        staff_repo, audit, hasher=cheap_hasher(), id_source=lambda: "staff_" + ids()
    )
    admin_account = staff.bootstrap_admin("root", PASSWORD, now_ms=T0)
    admin = staff.principal_for(admin_account.staff_id)
    second = staff.create_staff(
        OPERATOR, username="root2", display_name="root2", roles=[Role.ADMIN], now_ms=T0
    )
    admin2 = activate(staff, second, admin, T0)
    cases = CaseService(
        cases=case_repo,
        reports=report_repo,
        enforcements=enforcement_repo,
        audit=audit,
        principals=staff.principal_for,
    )
    keys = FrankingKeyRing(
        [
            FrankingKey("f1", OLD_KEY, T0 - 1, ROTATED_AT),
            FrankingKey("f2", NEW_KEY, ROTATED_AT, None),
        ]
    )
    intake = ReportIntake(
        franking_keys=keys,
        fetcher=server,
        reports=report_repo,
        vault=vault,
        cases=cases,
        audit=audit,
        refusals=refusals,
    )
    return World(
        server=server,
        audit_repo=audit_repo,
        audit=audit,
        evidence_repo=evidence_repo,
        report_repo=report_repo,
        case_repo=case_repo,
        enforcement_repo=enforcement_repo,
        vault=vault,
        staff=staff,
        staff_repo=staff_repo,
        cases=cases,
        intake=intake,
        admin=admin,
        admin2=admin2,
        refusals=refusals,
    )


# --- SQL backends ---------------------------------------------------------------------------
# Every test that takes the `world` fixture runs on the in-memory repositories, on the SQL
# repositories over SQLite, and on the SQL repositories over PostgreSQL (a fresh schema per
# session, tables emptied between tests, dropped at the end; skipped when PostgreSQL is
# unreachable, except under CI=true where that is a failure). The subclasses below give the
# SQL repositories the read views (``rows``, ``reports``...) the tests inspect and tamper with
# (test code only: production repositories have no such views).


class _WriteThrough(dict[str, Any]):
    def __init__(self, data: dict[str, Any], on_set: Any) -> None:
        super().__init__(data)
        self._on_set = on_set

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._on_set(value)


class AuditRows(SqlAuditRepository):
    @property
    def rows(self) -> list[AuditEntry]:
        return list(self.entries())


class EvidenceRows(SqlEvidenceRepository):
    def __init__(self, db: SafetyDatabase) -> None:
        super().__init__(db)
        self.db = db

    @property
    def rows(self) -> dict[str, EvidenceRecord]:
        with self.db.read() as c:
            ids = [r.evidence_id for r in c.execute(select(safety_evidence.c.evidence_id))]
        data = {i: self.get_evidence(i) for i in ids}
        return _WriteThrough(data, self._tamper)

    def _tamper(self, record: EvidenceRecord) -> None:
        with self.db.write() as c:
            c.execute(
                update(safety_evidence)
                .where(safety_evidence.c.evidence_id == record.evidence_id)
                .values(
                    report_id=record.report_id,
                    kind=record.kind,
                    key_id=record.key_id,
                    nonce=record.nonce,
                    ciphertext=record.ciphertext,
                )
            )


class ReportRows(SqlReportRepository):
    def __init__(self, db: SafetyDatabase) -> None:
        super().__init__(db)
        self.db = db

    @property
    def reports(self) -> dict[str, ReportRecord]:
        with self.db.read() as c:
            ids = [r.report_id for r in c.execute(select(safety_reports.c.report_id))]
        return {i: r for i in ids if (r := self.get_report(i)) is not None}

    @property
    def replay(self) -> dict[str, str]:
        with self.db.read() as c:
            return {r.key: r.kind for r in c.execute(select(safety_report_replay))}


class CaseRows(SqlCaseRepository):
    def __init__(self, db: SafetyDatabase) -> None:
        super().__init__(db)
        self.db = db

    @property
    def cases(self) -> dict[str, CaseRecord]:
        with self.db.read() as c:
            ids = [r.case_id for r in c.execute(select(safety_cases.c.case_id))]
        return {i: r for i in ids if (r := self.get_case(i)) is not None}


SAFETY_TABLES = [t.name for t in metadata.sorted_tables if t.name.startswith("safety_")] + [
    "account_enforcements"
]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once; each test copies it (migrations per test would be slow)."""
    path = tmp_path_factory.mktemp("safety-template") / "tidings.db"
    db = SafetyDatabase(f"sqlite:///{path}")
    db.migrate()
    db.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def pg_safety_db() -> Iterator[SafetyDatabase]:
    schema = f"tidings_safety_{secrets.token_hex(4)}"
    try:
        admin = SafetyDatabase(PG_URL)
        with admin.write() as c:
            c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        admin.dispose()
    except Exception as exc:  # unreachable, no such database, refused
        require_service("PostgreSQL", False, f"{PG_URL} ({type(exc).__name__})")
    db = SafetyDatabase(PG_URL, schema=schema)
    db.migrate()
    yield db
    db.dispose()
    admin = SafetyDatabase(PG_URL)
    with admin.write() as c:
        c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


def backend_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafetyDatabase | None]:
    backend = request.param
    if backend == "memory":
        yield None
    elif backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "tidings.db"
        shutil.copy(template, path)
        db = SafetyDatabase(f"sqlite:///{path}")
        yield db
        db.dispose()
    else:
        pg: SafetyDatabase = request.getfixturevalue("pg_safety_db")
        with pg.write() as c:
            c.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in SAFETY_TABLES))
        yield pg


BACKENDS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def safety_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafetyDatabase | None]:
    """None (in memory), or a clean SQL database (SQLite, PostgreSQL)."""
    yield from backend_db(request, tmp_path)


@pytest.fixture
def world(safety_db: SafetyDatabase | None) -> Iterator[World]:
    yield build_world(db=safety_db)


def submission(
    reporter: tuple[str, int],
    items: list[ReportItem],
    *,
    reported: int = -1,
    category: str = "harassment",
    **kw: object,
) -> ReportSubmission:
    return ReportSubmission(
        reporter=reporter[0],
        reporter_device=reporter[1],
        category=category,
        items=tuple(items),
        reported_index=reported % len(items) if items else 0,
        **kw,  # type: ignore[arg-type]
    )


def altered_content(item: ReportItem, text: str) -> bytes:
    content = pb.Content()
    content.ParseFromString(item.content)
    content.data.body = text
    return encode(content)
