"""The data inventory (issue 11, docs/operations.md "Data inventory"): every category of data
the provider holds about its users, where it lives, how long it is kept and the legal process a
request for it needs; and what the provider never holds, and why.

This is the one place lawful requests are scoped against: a production may contain only
categories listed here, and of each exactly its `DataCategory.fields` (`tidings.safety.lawful`,
reading through `tidings.safety.lawful_sources`); `tests/safety/test_inventory.py` checks that
every table of the database is either in a category or named in `NOT_PRODUCIBLE` with the
reason — a new table cannot be added without deciding which it is.

The legal process column states the baseline Tidings' legal team applies: the United States'
Stored Communications Act (18 U.S.C. 2703) — a subpoena for basic subscriber records (2703(c)(2)),
a court order on specific and articulable facts for other non-content records (2703(d)), a
search warrant for content (2703(a)-(b)) — or the equivalent instrument under the requester's
law (for example a production order under the UK Investigatory Powers Act 2016 or an order
under the US-UK Data Access Agreement), reviewed by legal in every case. Emergency disclosure
(18 U.S.C. 2702(b)(8), (c)(4)) may release any category listed here, on a recorded
justification. Retention is computed from the node's configuration, so what the inventory says
is what the node does.

Pure: a function of the configuration's retention settings; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tidings.clock import DAY_MS
from tidings.safety.evidence import DEFAULT_EVIDENCE_RETENTION_MS

__all__ = [
    "NEVER_HELD",
    "NOT_PRODUCIBLE",
    "DataCategory",
    "LegalProcess",
    "NeverHeld",
    "RetentionSettings",
    "inventory",
]


class LegalProcess(StrEnum):
    """The least process a request for a category needs (module docstring)."""

    SUBPOENA = "subpoena"
    COURT_ORDER = "court_order"
    SEARCH_WARRANT = "search_warrant"


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """The retention figures the inventory states, from the node's configuration
    (`from_config`) so the inventory cannot drift from what the node does."""

    message_ttl_s: int
    attachment_ttl_s: int

    @classmethod
    def from_config(cls, config: Any) -> RetentionSettings:
        """From a `tidings.server.config.ServerConfig` (duck-typed: the safety layer does not
        import the server's)."""
        return cls(message_ttl_s=int(config.message_ttl_s),
                   attachment_ttl_s=int(config.attachment_ttl_s))


@dataclass(frozen=True, slots=True)
class DataCategory:
    """One category of data held: ``key`` (stable, what a request scope names), what it is,
    the ``tables`` and ``fields`` it consists of, how long it is kept and the process it needs.
    ``excluded`` names fields of those tables that are never produced, and why; ``derived``
    names fields of ``fields`` that are computed rather than stored (a length), with what they
    are. Evidence is listed (id, kind, size; the matched hashes with the matches), never its
    bytes: sealed ciphertext is useless to a requester, and abuse imagery goes to NCMEC, not
    into a package."""

    key: str
    title: str
    description: str
    tables: tuple[str, ...]
    fields: tuple[str, ...]
    retention: str
    process: LegalProcess
    excluded: tuple[tuple[str, str], ...] = ()
    derived: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "description": self.description,
            "tables": list(self.tables),
            "fields": list(self.fields),
            "retention": self.retention,
            "process": self.process.value,
            "excluded": [{"field": f, "why": why} for f, why in self.excluded],
            "derived": [{"field": f, "what": what} for f, what in self.derived],
        }


@dataclass(frozen=True, slots=True)
class NeverHeld:
    """Something a requester may ask for that the provider does not have, and why."""

    what: str
    why: str

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "why": self.why}


def _days(seconds: int | None, setting: str) -> str:
    if seconds is None:
        return f"the node's {setting}"
    days = seconds / 86_400
    return f"{days:g} days" if days != 1 else "1 day"


_CREDENTIAL = "a credential (a hash of the device secret): never produced to anyone"
_SEALED = ("sealed evidence bytes: useless to a requester, and abuse imagery goes to NCMEC, "
           "never into a package")
_EVIDENCE = ("safety_evidence.evidence_id", "safety_evidence.report_id", "safety_evidence.kind",
             "safety_evidence.plaintext_size", "safety_evidence.child_safety",
             "safety_evidence.created_ms")
_EVIDENCE_EXCLUDED = (("safety_evidence.ciphertext", _SEALED),
                      ("safety_evidence.nonce", _SEALED), ("safety_evidence.key_id", _SEALED))


def inventory(retention: RetentionSettings | None) -> tuple[DataCategory, ...]:
    """Every category of user data the provider holds, in the order the docs list them;
    ``retention`` None (no configuration at hand) names the settings instead of their values."""
    evidence_days = DEFAULT_EVIDENCE_RETENTION_MS // DAY_MS
    message_ttl = None if retention is None else retention.message_ttl_s
    attachment_ttl = None if retention is None else retention.attachment_ttl_s
    evidence = f"{evidence_days} days from capture, longer under a hold"
    return (
        DataCategory(
            key="subscriber",
            title="Subscriber records",
            description="The account name and when the account was created. No name, phone "
            "number, e-mail address or payment details are asked for, so none are held.",
            tables=("accounts",),
            fields=("accounts.username", "accounts.created_at_ms"),
            retention="while the account exists; deleted with it, unless held",
            process=LegalProcess.SUBPOENA,
        ),
        DataCategory(
            key="devices",
            title="Devices and last connection",
            description="Each device of the account: its name, when it was added and when it "
            "last connected.",
            tables=("devices",),
            fields=("devices.device_id", "devices.name", "devices.created_at_ms",
                    "devices.last_seen_ms"),
            retention="while the device is registered; deleted when it is removed, unless held",
            process=LegalProcess.SUBPOENA,
            excluded=(("devices.credential_hash", _CREDENTIAL),),
        ),
        DataCategory(
            key="public_keys",
            title="Device public keys",
            description="Each device's public identity key, signed prekeys and unused one-time "
            "prekeys: what anyone who messages the account fetches, and a linked device's "
            "key-transparency link binding (an HMAC the account's devices check). Public keys "
            "only; the private keys never leave the device.",
            tables=("devices", "one_time_prekeys", "kem_prekeys"),
            fields=("devices.device_id", "devices.identity_key", "devices.registration_id",
                    "devices.signed_prekey", "devices.last_resort_kem_prekey",
                    "one_time_prekeys.device_id", "one_time_prekeys.key_id",
                    "one_time_prekeys.prekey", "kem_prekeys.device_id", "kem_prekeys.key_id",
                    "kem_prekeys.prekey"),
            retention="while the device is registered; one-time prekeys until fetched",
            process=LegalProcess.SUBPOENA,
            excluded=(("devices.link_binding", "an HMAC under a secret only the account's "
                       "devices knew, checked by them when a device is linked: it identifies "
                       "nothing and proves nothing to anyone else"),),
        ),
        DataCategory(
            key="queued_envelopes",
            title="Undelivered encrypted envelopes",
            description="End-to-end encrypted envelopes waiting for a device that has not "
            "fetched them: the recipient device, when each arrived and its size. The provider "
            "cannot decrypt them; a production gives the records, never a readable message.",
            tables=("messages",),
            fields=("messages.device_id", "messages.created_at_ms", "messages.expires_at_ms",
                    "messages.size"),
            retention="until delivered and acknowledged, at most "
            + _days(message_ttl, "message_ttl_s"),
            process=LegalProcess.COURT_ORDER,
            excluded=(("messages.envelope", "ciphertext under keys only the devices hold"),),
            derived=(("messages.size", "the envelope's length in bytes"),),
        ),
        DataCategory(
            key="attachments",
            title="Encrypted attachments",
            description="Which account uploaded an attachment, when, and its size. The file is "
            "encrypted with a key only the sender and recipients hold.",
            tables=("attachments",),
            fields=("attachments.id", "attachments.size",
                    "attachments.created_at_ms", "attachments.expires_at_ms"),
            retention=f"{_days(attachment_ttl, 'attachment_ttl_s')} from upload, unless held",
            process=LegalProcess.COURT_ORDER,
        ),
        DataCategory(
            key="reports",
            title="Verified reports",
            description="Reports about the account (it is the reported party; reports it filed "
            "are the other accounts' records): who reported it and when, each reported "
            "message's franking proof that the account sent it (sender, recipient, time, "
            "commitment), the evidence sealed with it listed by id, kind and size, and the "
            "SHA-256 and PDQ hashes of reported images with the hash-bank entries they "
            "matched. The revealed text and the images themselves are not produced.",
            tables=("safety_reports", "safety_report_items", "safety_report_matches",
                    "safety_evidence"),
            fields=("safety_reports.*", "safety_report_items.*", "safety_report_matches.*",
                    *_EVIDENCE),
            retention=evidence,
            process=LegalProcess.SEARCH_WARRANT,
            excluded=_EVIDENCE_EXCLUDED,
        ),
        DataCategory(
            key="enforcement",
            title="Trust & safety cases and actions",
            description="Cases about the account, the decisions taken (warnings, suspensions, "
            "bans) with their reasons, and appeals with their outcomes. Reviewers' internal "
            "notes are not produced.",
            tables=("safety_cases", "safety_decisions", "safety_appeals",
                    "account_enforcements"),
            fields=("safety_cases.*", "safety_decisions.decision_id", "safety_decisions.case_id",
                    "safety_decisions.subject", "safety_decisions.kind",
                    "safety_decisions.policy_id", "safety_decisions.reason",
                    "safety_decisions.decided_by", "safety_decisions.decided_ms",
                    "safety_decisions.until_ms", "safety_decisions.status",
                    "safety_decisions.second_reviewer", "safety_decisions.second_review_ms",
                    "safety_appeals.*", "account_enforcements.*"),
            retention="kept; no automatic deletion yet (a retention rule is still to be set)",
            process=LegalProcess.COURT_ORDER,
            excluded=(("safety_decisions.second_review_reason",
                       "a second reviewer's deliberation, like reviewers' notes"),),
        ),
        DataCategory(
            key="detection",
            title="Detection cases",
            description="Images sent by the account that matched a listed hash of known child "
            "sexual abuse material after crossing the threshold (docs/detection.md): the "
            "device, time, content type, PDQ hashes and the bank entries they matched, and the "
            "sealed image listed by id and size. The images themselves go to NCMEC, never "
            "into a package.",
            tables=("safety_detection_matches", "safety_evidence"),
            fields=("safety_detection_matches.*", *_EVIDENCE),
            retention=evidence,
            process=LegalProcess.SEARCH_WARRANT,
            excluded=_EVIDENCE_EXCLUDED,
        ),
        DataCategory(
            key="preservation",
            title="Preservation holds",
            description="Holds placed on the account (for a referral, or at a preservation "
            "request), each with the copy of the subscriber record, devices, public keys and "
            "attachment list frozen when it was placed.",
            tables=("safety_holds",),
            fields=("safety_holds.*",),
            retention="until the hold ends or legal releases it",
            process=LegalProcess.SUBPOENA,
        ),
        DataCategory(
            key="referrals",
            title="Referrals to NCMEC",
            description="The record of what was reported to NCMEC's CyberTipline about the "
            "account: the case, the report sent (account name, device ids, incident time, the "
            "files' names, MD5 and PDQ hashes and whether staff viewed them; never the files' "
            "bytes, which stay in the evidence), who prepared and approved it, each submission "
            "step and NCMEC's report id, and the preservation hold it placed.",
            tables=("safety_referrals",),
            fields=("safety_referrals.*",),
            retention="kept as the record of the provider's report (no automatic deletion); "
            "the evidence it names is held one year from the report (18 U.S.C. 2258A(h))",
            process=LegalProcess.COURT_ORDER,
        ),
    )


NOT_PRODUCIBLE: dict[str, str] = {
    "provisioning_codes": "hashes of one-time device-linking codes, valid ten minutes",
    "safety_report_replay": "replay protection for reports: commitments already reported",
    "safety_notes": "reviewers' internal notes (deliberation, not records about the user)",
    "safety_detection_pending": "vouchers not yet processed: nothing the provider can read",
    "safety_detection_opened": "threshold shares below the threshold: they reveal nothing",
    "safety_detection_lists": "the published blinded list (public)",
    "safety_banks": "the provider's hash banks (reference data, not about users)",
    "safety_bank_entries": "the provider's hash banks (reference data, not about users)",
    "safety_bank_sources": "the provider's hash banks (reference data, not about users)",
    "safety_bank_list": "the provider's hash banks (reference data, not about users)",
    "safety_audit_log": "the staff audit log (about staff actions; shown to oversight)",
    "safety_staff": "staff accounts (not user data)",
    "safety_staff_grants": "staff role grants (not user data)",
    "safety_staff_enrolment": "staff enrolment tokens (not user data)",
    "safety_staff_queues": "staff queue membership (not user data)",
    "safety_staff_sessions": "staff console sessions (not user data)",
    "safety_staff_preferences": "staff display preferences (not user data)",
    "safety_console_pending": "half-finished staff sign-ins (not user data)",
    "safety_login_throttle": "staff sign-in throttling (not user data)",
    "safety_report_refusals": "how many reports verification refused per day and reason "
    "(aggregate counts, not user data: nothing of a report is kept)",
    "kt_device_lists": "the public key-transparency log: each account's signed device lists "
    "(device ids and public identity keys, as in public_keys), served to anyone at /v1/kt; "
    "kept for good (append-only), no process needed",
    "kt_epochs": "the public key-transparency log's signed epoch heads, audit proofs and "
    "witness co-signatures (about the directory, not a user); kept for good (append-only)",
    "safety_lawful_requests": "requests from authorities about an account (the provider's "
    "record of the request and its handling; shown in the transparency report as counts)",
    "safety_lawful_packages": "what was produced for a lawful request, kept with the request "
    "as the record of the disclosure (produced to its requester only)",
}
"""Tables that hold no user data a request could be for, each with the reason. With the
categories' tables this covers every table (tests/safety/test_inventory.py)."""


NEVER_HELD: tuple[NeverHeld, ...] = (
    NeverHeld("Message content", "Messages are end-to-end encrypted on the devices; the "
              "server relays ciphertext and deletes it once delivered."),
    NeverHeld("Encryption keys", "Identity, session, message and attachment keys are made and "
              "kept on the devices. The server has public keys only."),
    NeverHeld("Contacts and address books", "The client never uploads them."),
    NeverHeld("Group memberships", "Groups live on the members' devices (sender keys); the "
              "server sees only that one device sent one envelope to several devices."),
    NeverHeld("IP addresses", "Rate limits count by address in memory only; addresses are not "
              "written to the database, and the access log is off."),
    NeverHeld("Location, phone numbers, e-mail addresses", "Registration asks for none."),
    NeverHeld("Message metadata after delivery", "A delivered envelope is deleted with its "
              "record once the recipient device acknowledges it: who wrote to whom is not kept. "
              "Reported messages are the exception, as the reporter revealed them."),
)
"""What the provider does not have, so cannot produce, and why."""

