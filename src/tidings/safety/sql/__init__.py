"""SQL implementations of the trust & safety repository Protocols (`tidings.safety`), one
module per aggregate (`audit`, `staff`, `reports`, `cases`) over the shared `engine`.

The domain services are synchronous, so these repositories run on a *synchronous* SQLAlchemy
engine (`SafetyDatabase`) on the same database as the messaging server's async engine:

SQLite and PostgreSQL specifics (``BEGIN IMMEDIATE`` writers, pragmas, ``search_path``, the
migration lock) are in `tidings.storage.engine`, shared with that async engine; the
repositories' common table shapes are `tidings.safety.sql.engine.RecordTable`.

Protocol notes honoured here: `SqlReportRepository.store_verified_report` is one transaction
(report, items, evidence, replay keys) and the replay keys are a primary key, so two copies of
one report cannot both be stored; the audit log is append-only (``seq`` primary key, a lost
race is `ConflictError`; nothing here updates or deletes it); cases and staff use versioned
updates; a partial unique index keeps one open case per subject.
"""

from __future__ import annotations

from tidings.safety.sql.audit import SqlAuditRepository
from tidings.safety.sql.banks import SqlBankRepository
from tidings.safety.sql.cases import SqlCaseRepository, SqlEnforcementRepository
from tidings.safety.sql.detection import SqlDetectionRepository
from tidings.safety.sql.engine import SafetyDatabase, sync_url
from tidings.safety.sql.holds import SqlHoldRepository, SqlSubjectRecords
from tidings.safety.sql.lawful import SqlLawfulRequestRepository
from tidings.safety.sql.referrals import SqlReferralRepository
from tidings.safety.sql.refusals import SqlRefusalCounter
from tidings.safety.sql.reports import SqlEvidenceRepository, SqlReportRepository
from tidings.safety.sql.staff import STAFF_KEY_LEN, SqlStaffRepository

__all__ = [
    "STAFF_KEY_LEN",
    "SafetyDatabase",
    "SqlAuditRepository",
    "SqlBankRepository",
    "SqlCaseRepository",
    "SqlDetectionRepository",
    "SqlEnforcementRepository",
    "SqlEvidenceRepository",
    "SqlHoldRepository",
    "SqlLawfulRequestRepository",
    "SqlReferralRepository",
    "SqlRefusalCounter",
    "SqlReportRepository",
    "SqlStaffRepository",
    "SqlSubjectRecords",
    "sync_url",
]
