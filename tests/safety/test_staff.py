"""Staff: the permission matrix (every role x every permission), child-safety clearance with
queue membership, Argon2id, TOTP with replay protection, throttling and sessions."""

from __future__ import annotations

import pytest

from tidings.errors import (
    AuthenticationError,
    ChildSafetyPermissionError,
    ConflictError,
    LoginThrottledError,
    PermissionDeniedError,
    SafetyInputError,
    SessionExpiredError,
)
from tidings.safety.categories import DEFAULT_QUEUES, QueueId
from tidings.safety.staff import Permission, Principal, Role, permissions_for

from .conftest import PASSWORD, World

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
        P.VIEW_AUDIT,
    },
    Role.ADMIN: {P.MANAGE_STAFF, P.MANAGE_QUEUES, P.VIEW_AUDIT, P.ROTATE_KEYS},
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
            rita,
            username="x",
            display_name="x",
            roles=[Role.ADMIN],
            password=PASSWORD,
            now_ms=world.now,
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
    assert {"staff.create", "staff.child_safety", "staff.queue"} <= set(actions)
    assert all(PASSWORD not in e.details for e in world.audit_repo.rows)
    assert rita.staff_id in world.audit_repo.rows[-1].target


def test_bootstrap_and_input_checks(world: World) -> None:
    with pytest.raises(ConflictError):
        world.staff.bootstrap_admin("second", PASSWORD, now_ms=world.now)
    with pytest.raises(SafetyInputError):
        world.make_staff("bad name!", Role.REVIEWER)
    with pytest.raises(SafetyInputError):
        world.staff.create_staff(
            world.admin,
            username="shorty",
            display_name="s",
            roles=[Role.REVIEWER],
            password="short",
            now_ms=world.now,
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
    assert world.staff.session_remaining_ms(result.token, now_ms=now + 1000) == 30 * 60_000
    # Idle for 30 minutes: expired.
    with pytest.raises(SessionExpiredError):
        world.staff.authenticate(result.token, now_ms=now + 1000 + 30 * 60_000)
    with pytest.raises(AuthenticationError):  # and gone
        world.staff.authenticate(result.token, now_ms=now + 1000 + 30 * 60_000)


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
    assert world.staff.authenticate(token, now_ms=now + 3).has(P.CONFIRM_DECISION)
