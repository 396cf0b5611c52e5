"""Staff as the tests get them: the owner's side of enrolment (`enrol`) and an active staff
member on a running `SafetyService` (`active_staff`), for the safety, console and client
tests (and the console benchmark)."""

from __future__ import annotations

from typing import Any

from tidings.safety.staff import IssuedEnrolment, Role, StaffAccount, StaffService, TotpVerifier

PASSWORD = "correct horse battery staple"


def enrol(
    staff: StaffService, issued: IssuedEnrolment, now_ms: int, password: str = PASSWORD
) -> StaffAccount:
    """The owner's side of enrolment: set the password, confirm the fresh TOTP secret."""
    totp = staff.begin_enrolment(issued.token, password, now_ms=now_ms)
    verifier = TotpVerifier()
    # The previous step's code (within the allowed skew), so a sign-in at ``now_ms`` is not
    # refused as a replay of the enrolment code.
    code = verifier.code_at(totp.secret, verifier.step(now_ms) - 1)
    return staff.complete_enrolment(issued.token, code, now_ms=now_ms)


def active_staff(
    safety: Any,
    username: str,
    roles: Any,
    *,
    queues: Any = (),
    child_safety: bool = False,
    password: str = PASSWORD,
) -> StaffAccount:
    """An active staff member on a `SafetyService`: created by the operator (as `tidings admin
    create-staff`), enrolled by its owner with ``password``, its grants approved by the first
    admin (created if missing), then added to ``queues``. Returns the stored account (the
    owner's TOTP secret is in ``totp_secret``: the test plays the owner)."""
    if safety.staff_repo.count_staff() == 0:
        safety.ensure_first_admin()
    admin = next(a for a in safety.list_staff() if Role.ADMIN in a.roles and a.enrolled)
    now = safety.clock()
    issued = safety.create_staff(
        safety.operator(), username=username, roles=roles, child_safety=child_safety
    )
    enrol(safety.staff, issued, now, password)
    for grant in issued.pending_grants:
        safety.staff.approve_grant(
            safety.staff.principal_for(admin.staff_id), grant.grant_id, now_ms=now
        )
    for queue in queues:
        safety.add_to_queue(safety.operator(), issued.account.staff_id, str(queue))
    account: StaffAccount | None = safety.staff_repo.get_staff(issued.account.staff_id)
    assert account is not None
    return account
