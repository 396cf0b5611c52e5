"""Enrolment and the two-person rule: the `StaffGrants` half of `tidings.safety.staff.StaffService`.

Separation of duties (no admin can become, or puppet, a reviewer):

- Enrolment instead of creator-known secrets. `StaffService.create_staff` gives a new account
  no password and no TOTP secret: it returns a single-use enrolment token (256 random bits,
  stored only as its SHA-256, expiring after `ENROLMENT_TTL_MS`) for the creator to hand to
  the owner as a link. The owner sets the password (`begin_enrolment`, which also draws a
  fresh TOTP secret shown to the owner only) and confirms the authenticator with a valid code
  (`complete_enrolment`); only then can the account sign in, and the token is consumed.
  `reissue_enrolment` replaces the link of an account that has not enrolled yet. Every step is
  audited under whoever did it: the creator, then the enrolling staff member.
- Two-person rule. Every role (`GATED_ROLES`: reviewer, lead, legal *and admin*) and the
  child-safety clearance is granted through a `StaffGrant` that stays PENDING, with no effect,
  until a second admin approves it (`approve_grant`) or someone rejects it. Revoking is
  immediate (less privilege is always safe).
- The puppet attack (admin A creates account B, enrols B through the link A holds, and then
  approves A's own requests as B) is refused by *enrolment lineage*: each account records its
  sponsor, the issuer of the link it enrolled through, and so transitively a chain of
  sponsors (`StaffService.lineage`). An approval is refused (`TwoPersonRuleError`) when the
  approver is the requester or the grantee, when the requester is in the approver's lineage
  (the approver may be the requester's puppet, or a puppet's puppet), or when the approver is
  in the requester's or the grantee's lineage (the approver held their enrolment link). A
  grant is approved only once the grantee has enrolled, so the approver can confirm with the
  owner that they enrolled themselves (a link used by someone else shows the owner "already
  used"). Granting admin is gated too: no admin alone makes another admin.
  The operator at the command line (``operator:cli``, who holds the key files and the
  database, so is trusted by construction) is outside the rule: an account enrolled through
  an operator-issued link starts a new lineage, so the second, independent admin of a
  deployment is created with `tidings admin create-staff --role admin` and approved by the
  first admin; an operator's requests need one admin's approval.

"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import pyotp

from tidings.errors import (
    ConflictError,
    EnrolmentTokenError,
    NotFoundError,
    SafetyInputError,
    TwoPersonRuleError,
)
from tidings.safety.audit import AuditAction, AuditLog, AuditsOneKind
from tidings.safety.passwords import StaffPasswordHasher
from tidings.safety.staff_model import (
    ENROLMENT_TOKEN_BYTES,
    ENROLMENT_TTL_MS,
    MAX_LINEAGE,
    EnrolmentToken,
    GrantKind,
    GrantStatus,
    IssuedEnrolment,
    Permission,
    Principal,
    Role,
    StaffAccount,
    StaffGrant,
    TotpEnrolment,
    check_password,
    permissions_for,
    token_digest,
)

if TYPE_CHECKING:
    from tidings.safety.staff import StaffRepository, TotpVerifier

__all__ = ["TOTP_ISSUER", "StaffGrants"]

TOTP_ISSUER = "Tidings T&S"


def _role_value(role: Role | None) -> str | None:
    return role.value if role is not None else None


def _decided_grant_details(grant: StaffGrant, **outcome: object) -> dict[str, object]:
    """The audit details of an approved or rejected grant: what it was, plus ``outcome``."""
    return {
        "grant": grant.grant_id,
        "kind": grant.kind.value,
        "role": _role_value(grant.role),
        "requested_by": grant.requested_by,
        **outcome,
    }


class StaffGrants(AuditsOneKind):
    """Enrolment links and privilege grants; `StaffService` supplies the state declared here."""

    audit_kind = "staff"

    _repo: StaffRepository
    _audit: AuditLog
    _hasher: StaffPasswordHasher
    _totp: TotpVerifier
    _token_source: Callable[[int], bytes]

    def _get(self, staff_id: str) -> StaffAccount:
        raise NotImplementedError

    def _update(self, account: StaffAccount, **changes: object) -> StaffAccount:
        raise NotImplementedError

    def _not_self(self, actor: Principal, staff_id: str) -> None:
        raise NotImplementedError

    # --- enrolment ----------------------------------------------------------------------------

    def _issue_enrolment(
        self, actor: Principal, account: StaffAccount, now_ms: int
    ) -> IssuedEnrolment:
        token = self._token_source(ENROLMENT_TOKEN_BYTES).hex()
        record = EnrolmentToken(
            token_hash=token_digest(token),
            staff_id=account.staff_id,
            issued_by=actor.staff_id,
            created_ms=now_ms,
            expires_ms=now_ms + ENROLMENT_TTL_MS,
        )
        self._repo.replace_enrolment(record)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_ENROL_ISSUE, account.staff_id, now_ms,
            details={"expires_ms": record.expires_ms, "link": record.token_hash[:16]},
        )
        return IssuedEnrolment(account, token, record.expires_ms)

    def reissue_enrolment(self, actor: Principal, staff_id: str, *, now_ms: int) -> IssuedEnrolment:
        """A new enrolment link for an account that has not enrolled yet; the old link (and a
        password set through it) stops working.

        Raises:
            PermissionDeniedError: no MANAGE_STAFF, or the actor is the target.
            NotFoundError.  ConflictError: the account has enrolled already, or is disabled.
        """
        actor.require(Permission.MANAGE_STAFF)
        self._not_self(actor, staff_id)
        account = self._get(staff_id)
        if account.enrolled or account.disabled:
            raise ConflictError("only an account that has not enrolled yet gets a new link")
        if account.password_hash or account.totp_secret:
            account = self._update(account, password_hash="", totp_secret="")
        return self._issue_enrolment(actor, account, now_ms)

    def _enrolment(self, token: str, now_ms: int) -> tuple[EnrolmentToken, StaffAccount]:
        """The live token and its (unenrolled, enabled) account; `EnrolmentTokenError` if the
        token is unknown, used, replaced or expired. Changes nothing."""
        if not isinstance(token, str) or not 1 <= len(token) <= 256:
            raise EnrolmentTokenError()
        record = self._repo.get_enrolment(token_digest(token))
        if record is None or now_ms >= record.expires_ms:
            raise EnrolmentTokenError()
        account = self._repo.get_staff(record.staff_id)
        if account is None or account.enrolled or account.disabled:
            raise EnrolmentTokenError()
        return record, account

    def enrolment_account(self, token: str, *, now_ms: int) -> StaffAccount:
        """The account a live enrolment token is for. Raises `EnrolmentTokenError`."""
        return self._enrolment(token, now_ms)[1]

    def begin_enrolment(self, token: str, password: str, *, now_ms: int) -> TotpEnrolment:
        """First enrolment step, by the owner: set the password (Argon2id, the usual policy)
        and draw a fresh TOTP secret, returned for the authenticator app. The account still
        cannot sign in until `complete_enrolment`. Repeating it draws a new secret.

        Raises:
            EnrolmentTokenError: the token is not live.  SafetyInputError: password policy.
        """
        _, account = self._enrolment(token, now_ms)
        check_password(password)
        account = self._update(
            account, password_hash=self._hasher.hash(password), totp_secret=pyotp.random_base32()
        )
        self._audit_on(account.staff_id, AuditAction.STAFF_ENROL_BEGIN, account.staff_id, now_ms)
        return self.enrolment_totp(token, now_ms=now_ms)

    def enrolment_totp(self, token: str, *, now_ms: int) -> TotpEnrolment:
        """The secret drawn by `begin_enrolment`, for showing it again before confirmation.

        Raises:
            EnrolmentTokenError: the token is not live.  SafetyInputError: no password set yet.
        """
        _, account = self._enrolment(token, now_ms)
        if not account.password_hash or not account.totp_secret:
            raise SafetyInputError("set your password first")
        return self.totp_enrolment(account)

    def totp_enrolment(self, account: StaffAccount) -> TotpEnrolment:
        """The account's TOTP secret and otpauth:// URI, for its owner's authenticator app."""
        return TotpEnrolment(account.username, account.totp_secret, self.provisioning_uri(account))

    def provisioning_uri(self, account: StaffAccount, issuer: str = TOTP_ISSUER) -> str:
        """The otpauth:// URI for enrolling an authenticator app (contains the secret)."""
        return pyotp.TOTP(account.totp_secret).provisioning_uri(
            name=account.username, issuer_name=issuer
        )

    def complete_enrolment(self, token: str, code: str, *, now_ms: int) -> StaffAccount:
        """Last enrolment step: a valid code from the new authenticator activates the account
        and consumes the token. The link's issuer becomes the account's sponsor (lineage).

        Raises:
            EnrolmentTokenError: the token is not live.
            SafetyInputError: no password set yet, or the code does not match.
            ConflictError: a concurrent enrolment of the same account won.
        """
        record, account = self._enrolment(token, now_ms)
        if not account.password_hash or not account.totp_secret:
            raise SafetyInputError("set your password first")
        step = self._totp.match(account.totp_secret, code, now_ms)
        if step is None:
            raise SafetyInputError(
                "that code does not match: check the app shows the new entry and the clock of "
                "the device is right, then try again"
            )
        account = self._update(
            account, enrolled_ms=now_ms, sponsor=record.issued_by, totp_last_step=step
        )
        self._repo.delete_enrolments_for(account.staff_id)
        self._audit_on(
            account.staff_id, AuditAction.STAFF_ENROL, account.staff_id, now_ms,
            details={"sponsor": record.issued_by, "link": record.token_hash[:16]},
        )
        return account

    # --- grants (two-person rule) -------------------------------------------------------------

    def _request(
        self,
        actor: Principal,
        account: StaffAccount,
        kind: GrantKind,
        role: Role | None,
        now_ms: int,
    ) -> StaffGrant | None:
        """A pending grant for ``account`` (the existing one if the same is pending already);
        None if the account holds the privilege already."""
        held = account.child_safety if kind is GrantKind.CHILD_SAFETY else role in account.roles
        if held:
            return None
        for grant in self._repo.pending_grants():
            if grant.staff_id == account.staff_id and (grant.kind, grant.role) == (kind, role):
                return grant
        grant = StaffGrant(
            grant_id="grant_" + self._token_source(12).hex(),
            staff_id=account.staff_id,
            kind=kind,
            role=role,
            requested_by=actor.staff_id,
            requested_ms=now_ms,
        )
        self._repo.add_grant(grant)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_GRANT_REQUEST, account.staff_id, now_ms,
            details={"grant": grant.grant_id, "kind": kind.value, "role": _role_value(role)},
        )
        return grant

    def _withdraw(
        self, actor: Principal, staff_id: str, keep: Callable[[StaffGrant], bool], now_ms: int
    ) -> None:
        for grant in self._repo.pending_grants():
            if grant.staff_id != staff_id or keep(grant):
                continue
            with contextlib.suppress(ConflictError):  # decided meanwhile: nothing to withdraw
                self._repo.decide_grant(
                    replace(
                        grant,
                        status=GrantStatus.WITHDRAWN,
                        decided_by=actor.staff_id,
                        decided_ms=now_ms,
                    )
                )
                self._audit_on(
                    actor.staff_id, AuditAction.STAFF_GRANT_REJECT, staff_id, now_ms,
                    details={"grant": grant.grant_id, "withdrawn": True},
                )

    def pending_grants(self, actor: Principal) -> list[StaffGrant]:
        """Every pending grant, oldest first. Raises `PermissionDeniedError` (MANAGE_STAFF)."""
        actor.require(Permission.MANAGE_STAFF)
        return self._repo.pending_grants()

    def lineage(self, staff_id: str) -> list[str]:
        """The sponsor chain of an account: who issued the link it enrolled through, who issued
        that one's, ... (staff accounts only: the operator and the bootstrap end a chain)."""
        chain: list[str] = []
        account = self._repo.get_staff(staff_id)
        while account is not None and account.sponsor and len(chain) < MAX_LINEAGE:
            sponsor = self._repo.get_staff(account.sponsor)
            if sponsor is None or sponsor.staff_id in chain or sponsor.staff_id == staff_id:
                break
            chain.append(sponsor.staff_id)
            account = sponsor
        return chain

    def approval_blocker(self, approver_id: str, grant: StaffGrant) -> str | None:
        """Why ``approver_id`` may not approve ``grant`` (None: the two-person rule allows it).
        See the module docstring for the rule."""
        if approver_id == grant.requested_by:
            return "you requested this grant: a different admin must approve it"
        if approver_id == grant.staff_id:
            return "staff cannot approve their own privileges"
        if grant.requested_by in self.lineage(approver_id):
            return "you enrolled through a link the requester (or an account they enrolled) issued"
        if approver_id in self.lineage(grant.requested_by):
            return "the requester enrolled through a link you (or an account you enrolled) issued"
        if approver_id in self.lineage(grant.staff_id):
            return "the grantee enrolled through a link you (or an account you enrolled) issued"
        return None

    def _pending_for(self, grant_id: str) -> StaffGrant:
        grant = self._repo.get_grant(grant_id) if isinstance(grant_id, str) else None
        if grant is None:
            raise NotFoundError("no such grant")
        if grant.status is not GrantStatus.PENDING:
            raise ConflictError("this grant was already decided")
        return grant

    def approve_grant(self, actor: Principal, grant_id: str, *, now_ms: int) -> StaffAccount:
        """Approve a pending grant as the second admin; the privilege takes effect at once.

        Raises:
            PermissionDeniedError: no MANAGE_STAFF.
            TwoPersonRuleError: the approver is not independent of the requester and grantee
                (see the module docstring), or is not an enrolled staff account.
            NotFoundError: unknown grant.  ConflictError: decided already, or the grantee is
                disabled or has not finished enrolment.
        """
        actor.require(Permission.MANAGE_STAFF)
        grant = self._pending_for(grant_id)
        approver = self._repo.get_staff(actor.staff_id)
        if approver is None or not approver.enrolled:
            raise TwoPersonRuleError("grants are approved by an enrolled admin account")
        blocker = self.approval_blocker(actor.staff_id, grant)
        if blocker is not None:
            raise TwoPersonRuleError(blocker)
        account = self._get(grant.staff_id)
        if account.disabled or not account.enrolled:
            raise ConflictError(
                "approve once the owner has enrolled (and confirm with them that they did)"
            )
        self._repo.decide_grant(
            replace(
                grant, status=GrantStatus.APPROVED, decided_by=actor.staff_id, decided_ms=now_ms
            )
        )
        before = sorted(r.value for r in account.roles)
        if grant.kind is GrantKind.CHILD_SAFETY:
            account = self._update(account, child_safety=True)
        elif grant.role is not None:
            account = self._update(account, roles=account.roles | {grant.role})
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_GRANT_APPROVE, grant.staff_id, now_ms,
            details=_decided_grant_details(
                grant,
                roles_before=before,
                roles_after=sorted(r.value for r in account.roles),
                child_safety=account.child_safety,
            ),
        )
        return account

    def reject_grant(self, actor: Principal, grant_id: str, *, now_ms: int) -> None:
        """Reject a pending grant (any admin, the requester too: that is a withdrawal). Queue
        memberships that only the rejected role would have used are removed.

        Raises: PermissionDeniedError (MANAGE_STAFF), NotFoundError, ConflictError (decided).
        """
        actor.require(Permission.MANAGE_STAFF)
        grant = self._pending_for(grant_id)
        self._repo.decide_grant(
            replace(
                grant, status=GrantStatus.REJECTED, decided_by=actor.staff_id, decided_ms=now_ms
            )
        )
        removed: list[str] = []
        if grant.kind is GrantKind.ROLE and not self._may_review(grant.staff_id):
            for queue_id in sorted(self._repo.queues_of(grant.staff_id)):
                self._repo.remove_queue_member(grant.staff_id, queue_id)
                removed.append(queue_id)
        self._audit_on(
            actor.staff_id, AuditAction.STAFF_GRANT_REJECT, grant.staff_id, now_ms,
            details=_decided_grant_details(grant, removed_queues=removed),
        )

    def _may_review(self, staff_id: str) -> bool:
        """Whether the account's roles, held or pending, review queues (queue membership may be
        set up while a reviewing role awaits approval: membership alone opens nothing)."""
        account = self._get(staff_id)
        pending = {
            g.role
            for g in self._repo.pending_grants()
            if g.staff_id == staff_id and g.role is not None
        }
        roles = account.roles | pending
        return Permission.VIEW_QUEUE in permissions_for(roles, child_safety=False)
