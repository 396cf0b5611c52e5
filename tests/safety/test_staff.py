"""Staff: the permission matrix (every role x every permission), child-safety clearance with
queue membership, Argon2id, TOTP with replay protection, throttling and sessions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from tests.support.staff import PASSWORD, enrol
from tidings.cli import cli
from tidings.errors import (
    AuthenticationError,
    ChildSafetyPermissionError,
    ConflictError,
    DecryptionError,
    EnrolmentTokenError,
    InvalidKeyError,
    LoginThrottledError,
    PermissionDeniedError,
    SafetyInputError,
    SessionExpiredError,
    TwoPersonRuleError,
)
from tidings.safety.audit import AuditLog, InMemoryAuditRepository
from tidings.safety.categories import DEFAULT_QUEUES, QueueId
from tidings.safety.keyfile import load_staff_key
from tidings.safety.sql import SafetyDatabase, SqlStaffRepository
from tidings.safety.staff import (
    ENROLMENT_TTL_MS,
    LAST_SEEN_STEP_MS,
    Permission,
    Principal,
    Role,
    StaffService,
    permissions_for,
)
from tidings.storage.safety_schema import safety_staff

from .conftest import T0, World, cheap_hasher


def approve_all(world: World, staff_id: str) -> None:
    """The second admin approves every pending grant of ``staff_id``."""
    for grant in world.staff.pending_grants(world.admin2):
        if grant.staff_id == staff_id:
            world.staff.approve_grant(world.admin2, grant.grant_id, now_ms=world.now)

P = Permission
# Restated independently of ROLE_PERMISSIONS: this table is the specification.
EXPECTED: dict[Role, set[Permission]] = {
    Role.REVIEWER: {
        P.VIEW_QUEUE,
        P.CLAIM_CASE,
        P.VIEW_EVIDENCE,
        P.ADD_NOTE,
        P.DECIDE,
        P.ESCALATE,
        P.DECIDE_APPEAL,
    },
    Role.LEAD: {
        P.VIEW_QUEUE,
        P.CLAIM_CASE,
        P.VIEW_EVIDENCE,
        P.ADD_NOTE,
        P.DECIDE,
        P.ESCALATE,
        P.DECIDE_APPEAL,
        P.CONFIRM_DECISION,
        P.APPROVE_REFERRAL,
        P.ASSIGN_CASE,
        P.BREAK_LOCK,
        P.VOID_REPORTER,
        P.MANAGE_QUEUES,
        P.VIEW_AUDIT,
    },
    Role.LEGAL: {
        P.VIEW_QUEUE,
        P.CLAIM_CASE,
        P.VIEW_EVIDENCE,
        P.ADD_NOTE,
        P.EXPORT_EVIDENCE,
        P.MAKE_REFERRAL,
        P.APPROVE_REFERRAL,
        P.VIEW_AUDIT,
        P.VIEW_BANKS,
        P.VIEW_INVENTORY,
        P.VIEW_TRANSPARENCY,
        P.MANAGE_HOLDS,
        P.HANDLE_LAWFUL_REQUESTS,
    },
    Role.ADMIN: {
        P.MANAGE_STAFF,
        P.MANAGE_QUEUES,
        P.VIEW_AUDIT,
        P.ROTATE_KEYS,
        P.VIEW_BANKS,
        P.MANAGE_BANKS,
        P.VIEW_INVENTORY,
        P.VIEW_TRANSPARENCY,
    },
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_permission_matrix(role: Role, permission: Permission) -> None:
    principal = Principal(
        "s", "u", frozenset({role}), permissions_for([role], child_safety=False), frozenset()
    )
    expected = permission in EXPECTED[role]
    assert principal.has(permission) is expected
    if expected:
        principal.require(permission)
    else:
        with pytest.raises(PermissionDeniedError):
            principal.require(permission)


def test_child_safety_comes_only_from_the_clearance() -> None:
    for role in Role:
        assert P.CHILD_SAFETY not in permissions_for([role], child_safety=False)
    assert P.CHILD_SAFETY in permissions_for([Role.REVIEWER], child_safety=True)
    # An admin who is "cleared" still cannot review anything.
    assert P.CHILD_SAFETY not in permissions_for([Role.ADMIN], child_safety=True)
    with pytest.raises(ChildSafetyPermissionError):
        Principal("s", "u", frozenset(), frozenset(), frozenset()).require(P.CHILD_SAFETY)


def test_child_safety_queue_and_clearance_are_enforced_together(world: World) -> None:
    cse = DEFAULT_QUEUES[QueueId.CHILD_SAFETY]
    rita = world.make_staff("rita", Role.REVIEWER)
    with pytest.raises(ChildSafetyPermissionError):
        world.staff.add_to_queue(world.admin, rita.staff_id, cse.queue_id, now_ms=world.now)
    world.staff.set_child_safety(world.admin, rita.staff_id, True, now_ms=world.now)
    # Requested, not granted: still no child-safety queue until a second admin approves.
    with pytest.raises(ChildSafetyPermissionError):
        world.staff.add_to_queue(world.admin, rita.staff_id, cse.queue_id, now_ms=world.now)
    approve_all(world, rita.staff_id)
    world.staff.add_to_queue(world.admin, rita.staff_id, cse.queue_id, now_ms=world.now)
    world.staff.add_to_queue(world.admin, rita.staff_id, QueueId.HARASSMENT, now_ms=world.now)
    rita = world.staff.principal_for(rita.staff_id)
    assert rita.can_access_queue(cse)
    rita.require_queue(cse)
    # Revoking the clearance removes the membership in the same step.
    world.staff.set_child_safety(world.admin, rita.staff_id, False, now_ms=world.now)
    rita = world.staff.principal_for(rita.staff_id)
    assert rita.queues == {QueueId.HARASSMENT}
    with pytest.raises(ChildSafetyPermissionError):
        rita.require_queue(cse)
    # A stale membership row without the clearance still gives nothing.
    world.staff_repo.add_queue_member(rita.staff_id, cse.queue_id)
    rita = world.staff.principal_for(rita.staff_id)
    assert not rita.can_access_queue(cse)
    with pytest.raises(ChildSafetyPermissionError):
        rita.require_queue(cse)


def test_admins_cannot_join_queues_and_nobody_changes_their_own_privileges(
    world: World,
) -> None:
    other_admin = world.make_staff("ada", Role.ADMIN)
    with pytest.raises(PermissionDeniedError):
        world.staff.add_to_queue(
            world.admin, other_admin.staff_id, QueueId.GENERAL, now_ms=world.now
        )
    for change in (
        lambda: world.staff.set_roles(
            world.admin, world.admin.staff_id, [Role.LEAD], now_ms=world.now
        ),
        lambda: world.staff.set_child_safety(
            world.admin, world.admin.staff_id, True, now_ms=world.now
        ),
        lambda: world.staff.disable(world.admin, world.admin.staff_id, now_ms=world.now),
    ):
        with pytest.raises(PermissionDeniedError):
            change()
    rita = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.GENERAL,))
    with pytest.raises(PermissionDeniedError):
        world.staff.create_staff(
            rita, username="x", display_name="x", roles=[Role.ADMIN], now_ms=world.now
        )
    # Losing every reviewing role drops queue memberships.
    world.staff.set_roles(world.admin, rita.staff_id, [Role.ADMIN], now_ms=world.now)
    assert world.staff.principal_for(rita.staff_id).queues == frozenset()


def test_staff_changes_are_audited(world: World) -> None:
    rita = world.make_staff(
        "rita", Role.REVIEWER, child_safety=True, queues=(QueueId.CHILD_SAFETY,)
    )
    actions = [e.action for e in world.audit_repo.rows]
    assert actions[:1] == ["staff.create"]
    assert {
        "staff.create",
        "staff.grant_request",
        "staff.enrol_issue",
        "staff.enrol_begin",
        "staff.enrol",
        "staff.grant_approve",
        "staff.queue",
    } <= set(actions)
    assert all(PASSWORD not in e.details for e in world.audit_repo.rows)
    assert rita.staff_id in world.audit_repo.rows[-1].target


def test_bootstrap_and_input_checks(world: World) -> None:
    with pytest.raises(ConflictError):
        world.staff.bootstrap_admin("second", PASSWORD, now_ms=world.now)
    with pytest.raises(SafetyInputError):
        world.make_staff("bad name!", Role.REVIEWER)
    issued = world.staff.create_staff(
        world.admin, username="shorty", display_name="s", roles=[Role.REVIEWER], now_ms=world.now
    )
    with pytest.raises(SafetyInputError):  # the owner's password follows the policy
        world.staff.begin_enrolment(issued.token, "short", now_ms=world.now)
    with pytest.raises(SafetyInputError):
        world.staff.create_staff(
            world.admin, username="noroles", display_name="n", roles=[], now_ms=world.now
        )
    with pytest.raises(ConflictError):
        world.make_staff("root", Role.REVIEWER)


# --- sign-in ------------------------------------------------------------------------------


def code(world: World, username: str, now_ms: int, offset: int = 0) -> str:
    account = world.staff_repo.get_staff_by_username(username)
    assert account is not None
    return world.totp.code_at(account.totp_secret, world.totp.step(now_ms) + offset)


def test_password_is_argon2id_and_secrets_stay_out_of_reprs(world: World) -> None:
    rita = world.make_staff("rita", Role.REVIEWER)
    account = world.account(rita)
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash
    assert account.password_hash not in repr(account)
    assert account.totp_secret not in repr(account)
    uri = world.staff.provisioning_uri(account)
    assert uri.startswith("otpauth://totp/") and account.totp_secret in uri


def test_login_and_session_lifecycle(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    result = world.staff.login("rita", PASSWORD, code(world, "rita", now), now_ms=now)
    assert result.token not in repr(result)
    assert result.session.session_id != result.token  # only the hash is stored
    assert world.staff_repo.get_session(result.token) is None
    principal = world.staff.authenticate(result.token, now_ms=now + 1000)
    assert principal.username == "rita"
    # Within the last-seen step the stored last-seen stays at the sign-in time.
    remaining = world.staff.session_remaining_ms(result.token, now_ms=now + 1000)
    assert remaining == 30 * 60_000 - 1000
    # Idle for 30 minutes: expired.
    with pytest.raises(SessionExpiredError):
        world.staff.authenticate(result.token, now_ms=now + 1000 + 30 * 60_000)
    with pytest.raises(AuthenticationError):  # and gone
        world.staff.authenticate(result.token, now_ms=now + 1000 + 30 * 60_000)


def test_session_last_seen_is_written_at_most_once_per_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    token = world.staff.login("rita", PASSWORD, code(world, "rita", now), now_ms=now).token
    writes: list[int] = []
    inner = world.staff_repo.update_session
    monkeypatch.setattr(
        world.staff_repo,
        "update_session",
        lambda session: (writes.append(session.last_seen_ms), inner(session))[1],
    )
    # 100 requests over 59 s after sign-in: no session write at all.
    for i in range(100):
        world.staff.authenticate(token, now_ms=now + i * 590)
    assert writes == []
    # Past the step: exactly one write, then quiet again for another step.
    for i in range(100):
        world.staff.authenticate(token, now_ms=now + LAST_SEEN_STEP_MS + i * 500)
    assert writes == [now + LAST_SEEN_STEP_MS]
    # The idle timeout counts from the stored last-seen: 30 min after it, the session is gone,
    # even though the last request was 49.5 s later than that write.
    with pytest.raises(SessionExpiredError):
        world.staff.authenticate(token, now_ms=now + LAST_SEEN_STEP_MS + 30 * 60_000)


def test_absolute_session_expiry_and_logout(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    token = world.staff.login("rita", PASSWORD, code(world, "rita", now), now_ms=now).token
    t = now
    while t + 20 * 60_000 < now + 8 * 3600_000:
        t += 20 * 60_000
        world.staff.authenticate(token, now_ms=t)  # active use slides the idle expiry ...
    with pytest.raises(SessionExpiredError):  # ... but not past the absolute one
        world.staff.authenticate(token, now_ms=now + 8 * 3600_000)
    token = world.staff.login(
        "rita", PASSWORD, code(world, "rita", t + 60_000), now_ms=t + 60_000
    ).token
    world.staff.logout(token, now_ms=t + 60_001)
    with pytest.raises(AuthenticationError):
        world.staff.authenticate(token, now_ms=t + 60_002)


def test_every_failure_looks_the_same_and_is_audited_with_its_reason(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    good = code(world, "rita", now)
    attempts = [
        ("nobody", PASSWORD, good, "unknown_or_disabled"),
        ("rita", "wrong password!!", good, "bad_password"),
        ("rita", PASSWORD, "000000" if good != "000000" else "111111", "bad_totp"),
    ]
    for username, password, totp, reason in attempts:
        with pytest.raises(AuthenticationError) as caught:
            world.staff.login(username, password, totp, now_ms=now)
        assert type(caught.value) is AuthenticationError
        assert caught.value.message == AuthenticationError().message
        assert world.audit_repo.rows[-1].details_obj == {"reason": reason}


def test_totp_code_cannot_be_replayed_within_its_window(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    totp = code(world, "rita", now)
    world.staff.login("rita", PASSWORD, totp, now_ms=now)
    with pytest.raises(AuthenticationError):
        world.staff.login("rita", PASSWORD, totp, now_ms=now + 5_000)
    assert world.audit_repo.rows[-1].details_obj == {"reason": "totp_replayed"}
    # An older (previous-step) code is refused after a newer one was used.
    with pytest.raises(AuthenticationError):
        world.staff.login("rita", PASSWORD, code(world, "rita", now, -1), now_ms=now + 5_000)
    # The next step's code works.
    world.staff.login("rita", PASSWORD, code(world, "rita", now + 30_000), now_ms=now + 30_000)


def test_totp_accepts_one_step_of_clock_skew_only(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    with pytest.raises(AuthenticationError):
        world.staff.login("rita", PASSWORD, code(world, "rita", now, +2), now_ms=now)
    world.staff.login("rita", PASSWORD, code(world, "rita", now, +1), now_ms=now)


def test_totp_code_in_other_scripts_digits_is_a_failed_login_not_a_crash(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    ascii_code = code(world, "rita", now)
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in ascii_code)  # str.isdigit() accepts it
    with pytest.raises(AuthenticationError):
        world.staff.login("rita", PASSWORD, arabic_indic, now_ms=now)
    assert world.audit_repo.rows[-1].details_obj == {"reason": "bad_totp"}
    world.staff.login("rita", PASSWORD, ascii_code, now_ms=now)


def test_login_throttling(world: World) -> None:
    world.make_staff("rita", Role.REVIEWER)
    now = world.now
    for i in range(5):
        with pytest.raises(AuthenticationError):
            world.staff.login(
                "rita", "wrong password!!", "123456", now_ms=now + i, source="10.0.0.1"
            )
    # Locked: even the right password and code are not checked.
    with pytest.raises(LoginThrottledError, match="retry in 60 s"):
        world.staff.login("rita", PASSWORD, code(world, "rita", now), now_ms=now + 10)
    # Another account from the same source is locked out too.
    with pytest.raises(LoginThrottledError):
        world.staff.login("root", PASSWORD, "123456", now_ms=now + 10, source="10.0.0.1")
    later = now + 61_000
    # Another failure after the lockout doubles it.
    with pytest.raises(AuthenticationError):
        world.staff.login("rita", "wrong password!!", "123456", now_ms=later)
    with pytest.raises(LoginThrottledError, match="retry in 120 s"):
        world.staff.login("rita", PASSWORD, code(world, "rita", later), now_ms=later + 1)
    ok_at = later + 121_000
    world.staff.login("rita", PASSWORD, code(world, "rita", ok_at), now_ms=ok_at)
    assert world.staff_repo.get_throttle("account:rita") is None


def test_disabled_staff_lose_sessions_at_once(world: World) -> None:
    rita = world.make_staff("rita", Role.REVIEWER)
    now = world.now
    token = world.staff.login("rita", PASSWORD, code(world, "rita", now), now_ms=now).token
    world.staff.disable(world.admin, rita.staff_id, now_ms=now + 1)
    with pytest.raises(AuthenticationError):
        world.staff.authenticate(token, now_ms=now + 2)
    with pytest.raises(AuthenticationError):
        world.staff.login("rita", PASSWORD, code(world, "rita", now + 30_000), now_ms=now + 30_000)


def test_role_changes_apply_on_the_next_request(world: World) -> None:
    rita = world.make_staff("rita", Role.REVIEWER)
    now = world.now
    token = world.staff.login("rita", PASSWORD, code(world, "rita", now), now_ms=now).token
    assert not world.staff.authenticate(token, now_ms=now + 1).has(P.CONFIRM_DECISION)
    world.staff.set_roles(world.admin, rita.staff_id, [Role.LEAD], now_ms=now + 2)
    # Dropping reviewer is immediate; lead waits for the second admin.
    assert not world.staff.authenticate(token, now_ms=now + 3).has(P.VIEW_QUEUE)
    approve_all(world, rita.staff_id)
    assert world.staff.authenticate(token, now_ms=now + 4).has(P.CONFIRM_DECISION)


# --- enrolment and the two-person rule (issue 7) -------------------------------------------


def test_creating_staff_gives_the_creator_no_secret_and_no_way_to_sign_in_as_it(
    world: World,
) -> None:
    audit_before = len(world.audit_repo.rows)
    issued = world.staff.create_staff(
        world.admin, username="rita", display_name="Rita", roles=[Role.REVIEWER], now_ms=world.now
    )
    account = world.staff_repo.get_staff(issued.account.staff_id)
    assert account is not None and not account.enrolled
    assert account.password_hash == "" and account.totp_secret == ""
    assert account.roles == frozenset()  # requested roles are pending grants
    assert [g.role for g in issued.pending_grants] == [Role.REVIEWER]
    assert len(issued.token) == 64 and issued.token not in repr(issued)
    stored = world.staff_repo.get_enrolment(issued.token)
    assert stored is None  # only the hash is stored
    # The admin knows no password; even a guess with any code is refused, audited.
    for password in (PASSWORD, "", issued.token):
        with pytest.raises(AuthenticationError):
            world.staff.login("rita", password, "000000", now_ms=world.now)
    reasons = [e.details for e in world.audit_repo.rows[audit_before:] if "login" in e.action]
    assert reasons and all('"not_enrolled"' in d for d in reasons)
    assert all(issued.token not in e.details for e in world.audit_repo.rows)


def test_enrolment_is_done_by_the_owner_and_audited_under_each_actor(world: World) -> None:
    issued = world.staff.create_staff(
        world.admin, username="rita", display_name="Rita", roles=[Role.REVIEWER], now_ms=world.now
    )
    staff_id = issued.account.staff_id
    totp = world.staff.begin_enrolment(issued.token, PASSWORD, now_ms=world.now)
    with pytest.raises(AuthenticationError):  # password set, authenticator not confirmed yet
        world.staff.login("rita", PASSWORD, code(world, "rita", world.now), now_ms=world.now)
    with pytest.raises(SafetyInputError):
        world.staff.complete_enrolment(issued.token, "123456", now_ms=world.now)
    good = world.totp.code_at(totp.secret, world.totp.step(world.now) - 1)
    account = world.staff.complete_enrolment(issued.token, good, now_ms=world.now)
    assert account.enrolled and account.sponsor == world.admin.staff_id
    by_action = {e.action: e.actor for e in world.audit_repo.rows if staff_id in e.target}
    assert by_action["staff.create"] == world.admin.staff_id
    assert by_action["staff.enrol_issue"] == world.admin.staff_id
    assert by_action["staff.grant_request"] == world.admin.staff_id
    assert by_action["staff.enrol_begin"] == staff_id
    assert by_action["staff.enrol"] == staff_id
    world.staff.login("rita", PASSWORD, code(world, "rita", world.now), now_ms=world.now)


def test_enrolment_token_is_single_use_expires_and_is_replaced_by_a_new_link(
    world: World,
) -> None:
    first = world.staff.create_staff(
        world.admin, username="rita", display_name="r", roles=[Role.REVIEWER], now_ms=world.now
    )
    staff_id = first.account.staff_id
    # Re-issuing (another admin) invalidates the old link.
    second = world.staff.reissue_enrolment(world.admin2, staff_id, now_ms=world.now)
    with pytest.raises(EnrolmentTokenError):
        world.staff.begin_enrolment(first.token, PASSWORD, now_ms=world.now)
    # Expired: refused, and nothing changes.
    expired_at = world.now + ENROLMENT_TTL_MS
    before = (world.staff_repo.get_staff(staff_id), len(world.audit_repo.rows))
    for attempt in (
        lambda: world.staff.enrolment_account(second.token, now_ms=expired_at),
        lambda: world.staff.begin_enrolment(second.token, PASSWORD, now_ms=expired_at),
        lambda: world.staff.complete_enrolment(second.token, "000000", now_ms=expired_at),
        lambda: world.staff.begin_enrolment("0" * 64, PASSWORD, now_ms=world.now),
    ):
        with pytest.raises(EnrolmentTokenError):
            attempt()
    assert (world.staff_repo.get_staff(staff_id), len(world.audit_repo.rows)) == before
    # Used once: the link is gone.
    world.staff.begin_enrolment(second.token, PASSWORD, now_ms=expired_at - 1)
    totp = world.staff.enrolment_totp(second.token, now_ms=expired_at - 1)
    good = world.totp.code_at(totp.secret, world.totp.step(expired_at - 1))
    account = world.staff.complete_enrolment(second.token, good, now_ms=expired_at - 1)
    assert account.sponsor == world.admin2.staff_id  # who issued the link used
    with pytest.raises(EnrolmentTokenError):
        world.staff.begin_enrolment(second.token, "another long password", now_ms=expired_at - 1)
    with pytest.raises(ConflictError):  # enrolled: no new link (disable and recreate instead)
        world.staff.reissue_enrolment(world.admin, staff_id, now_ms=expired_at)


def test_a_grant_needs_a_second_admin_and_both_are_audited(world: World) -> None:
    issued = world.staff.create_staff(
        world.admin,
        username="rita",
        display_name="r",
        roles=[Role.REVIEWER],
        child_safety=True,
        now_ms=world.now,
    )
    staff_id = issued.account.staff_id
    enrol(world.staff, issued, world.now)
    role_grant, clearance = issued.pending_grants
    assert clearance.role is None and role_grant.role is Role.REVIEWER
    assert world.staff.principal_for(staff_id).permissions == frozenset()  # nothing yet
    with pytest.raises(TwoPersonRuleError):  # the requester alone
        world.staff.approve_grant(world.admin, role_grant.grant_id, now_ms=world.now)
    assert world.staff.principal_for(staff_id).permissions == frozenset()
    world.staff.approve_grant(world.admin2, role_grant.grant_id, now_ms=world.now)
    world.staff.reject_grant(world.admin2, clearance.grant_id, now_ms=world.now)
    rita = world.staff.principal_for(staff_id)
    assert rita.has(P.VIEW_EVIDENCE) and not rita.has(P.CHILD_SAFETY)
    with pytest.raises(ConflictError):  # decided once
        world.staff.approve_grant(world.admin2, clearance.grant_id, now_ms=world.now)
    entries = [e for e in world.audit_repo.rows if role_grant.grant_id in e.details]
    assert [(e.action, e.actor) for e in entries] == [
        ("staff.grant_request", world.admin.staff_id),
        ("staff.grant_approve", world.admin2.staff_id),
    ]
    assert world.admin.staff_id in entries[1].details  # the approval names the requester
    # Role changes go through grants too; revoking is immediate.
    world.staff.set_roles(world.admin, staff_id, [Role.LEGAL], now_ms=world.now)
    assert world.staff.principal_for(staff_id).permissions == frozenset()
    approve_all(world, staff_id)
    assert world.staff.principal_for(staff_id).has(P.EXPORT_EVIDENCE)


def test_a_grant_is_approved_only_once_the_owner_has_enrolled(world: World) -> None:
    issued = world.staff.create_staff(
        world.admin, username="rita", display_name="r", roles=[Role.REVIEWER], now_ms=world.now
    )
    with pytest.raises(ConflictError):
        world.staff.approve_grant(
            world.admin2, issued.pending_grants[0].grant_id, now_ms=world.now
        )


def test_the_puppet_attack_is_refused(world: World) -> None:
    """Issue 7: admin A creates admin B, enrols B through the link A holds, and approves A's
    own requests as B. A is ``world.admin``; ``world.admin2`` is independent (operator-made)."""
    a = world.admin
    issued_b = world.staff.create_staff(
        a, username="bee", display_name="b", roles=[Role.ADMIN], now_ms=world.now
    )
    # A cannot make B an admin alone.
    with pytest.raises(TwoPersonRuleError):
        world.staff.approve_grant(a, issued_b.pending_grants[0].grant_id, now_ms=world.now)
    enrol(world.staff, issued_b, world.now)  # A uses the link themself
    # Even once another admin approved B's admin role (deceived, or colluding)...
    world.staff.approve_grant(world.admin2, issued_b.pending_grants[0].grant_id, now_ms=world.now)
    b = world.staff.principal_for(issued_b.account.staff_id)
    assert world.staff.lineage(b.staff_id) == [a.staff_id]
    # ... B cannot approve what A requests: a puppet reviewer for A ...
    issued_r = world.staff.create_staff(
        a, username="sock", display_name="s", roles=[Role.REVIEWER], now_ms=world.now
    )
    enrol(world.staff, issued_r, world.now)
    with pytest.raises(TwoPersonRuleError):
        world.staff.approve_grant(b, issued_r.pending_grants[0].grant_id, now_ms=world.now)
    # ... nor a reviewing role for A themself ...
    world.staff.set_roles(b, a.staff_id, [Role.ADMIN, Role.REVIEWER], now_ms=world.now)
    for grant in world.staff.pending_grants(b):
        with pytest.raises(TwoPersonRuleError):
            world.staff.approve_grant(b, grant.grant_id, now_ms=world.now)
    # ... and A cannot approve what B requests, nor a puppet's puppet act for A.
    issued_c = world.staff.create_staff(
        b, username="sea", display_name="c", roles=[Role.ADMIN], now_ms=world.now
    )
    enrol(world.staff, issued_c, world.now)
    with pytest.raises(TwoPersonRuleError):
        world.staff.approve_grant(a, issued_c.pending_grants[0].grant_id, now_ms=world.now)
    world.staff.approve_grant(world.admin2, issued_c.pending_grants[0].grant_id, now_ms=world.now)
    c = world.staff.principal_for(issued_c.account.staff_id)
    assert world.staff.lineage(c.staff_id) == [b.staff_id, a.staff_id]
    with pytest.raises(TwoPersonRuleError):
        world.staff.approve_grant(c, issued_r.pending_grants[0].grant_id, now_ms=world.now)
    # Nothing A wanted took effect, and the refusals name the rule.
    assert world.staff.principal_for(issued_r.account.staff_id).permissions == frozenset()
    assert not world.staff.principal_for(a.staff_id).has(P.VIEW_EVIDENCE)
    assert world.staff.approval_blocker(b.staff_id, issued_r.pending_grants[0]) is not None
    # The independent admin can still approve (and is the one who vouches for the owner).
    assert world.staff.approval_blocker(world.admin2.staff_id, issued_r.pending_grants[0]) is None


def test_totp_secrets_are_sealed_at_rest_and_old_plaintext_rows_are_sealed_on_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tidings.db"
    db = SafetyDatabase(f"sqlite:///{path}")
    db.migrate()
    key = os.urandom(32)
    repo = SqlStaffRepository(db, key)
    staff = StaffService(repo, AuditLog(InMemoryAuditRepository()), hasher=cheap_hasher())
    admin = staff.bootstrap_admin("root", PASSWORD, now_ms=T0)
    # A row as a database from before migration 0004 holds it: the secret in the clear.
    legacy_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    with db.write() as c:
        c.execute(
            insert(safety_staff).values(
                staff_id="staff_old",
                username="old",
                display_name="old",
                roles="reviewer",
                child_safety=False,
                password_hash="x",
                totp_secret=legacy_secret,
                totp_last_step=-1,
                disabled=False,
                created_ms=T0,
                version=0,
                enrolled_ms=T0,
            )
        )
    assert repo.seal_legacy() == 1 and repo.seal_legacy() == 0
    old = repo.get_staff("staff_old")
    assert old is not None and old.totp_secret == legacy_secret
    db.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("tidings.db"))
    for secret in (admin.totp_secret, legacy_secret):
        assert secret.encode() not in raw
    # The database alone does not open it: another key (or another row) fails to decrypt.
    with pytest.raises(DecryptionError):
        SqlStaffRepository(SafetyDatabase(f"sqlite:///{path}"), os.urandom(32)).get_staff(
            admin.staff_id
        )
    with pytest.raises(InvalidKeyError):
        SqlStaffRepository(db, b"short")


def test_cli_create_staff_prints_the_enrolment_link_and_never_a_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["admin", "create-staff", "rita", "--role", "reviewer", "--child-safety",
         "--data-dir", str(data), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"id", "username", "roles", "pending_grants", "enrolment_url", "expires_at"}
    assert out["roles"] == [] and out["pending_grants"] == ["reviewer", "child-safety clearance"]
    assert out["enrolment_url"].startswith("http://127.0.0.1:8080/console/enrol/")
    text = runner.invoke(
        cli, ["admin", "create-staff", "remy", "--role", "lead", "--data-dir", str(data)]
    )
    assert text.exit_code == 0 and "/console/enrol/" in text.output
    db = SafetyDatabase(f"sqlite:///{data / 'tidings.db'}")
    repo = SqlStaffRepository(db, load_staff_key(data / "staff.key"))
    for name, output in (("rita", result.output), ("remy", text.output)):
        account = repo.get_staff_by_username(name)
        assert account is not None and account.password_hash == "" and not account.enrolled
        assert "password" not in output.lower() and "otpauth" not in output
    db.dispose()
