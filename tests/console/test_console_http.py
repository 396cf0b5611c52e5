"""Console over HTTP (Starlette TestClient): sign-in with TOTP, CSRF, session expiry, least
privilege on every route for every role, child-safety gating, decisions, evidence auditing,
enrolment links and the two-person rule, 429 with Retry-After, HSTS over HTTPS."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from tests.support.staff import PASSWORD
from tidings.console import ROUTES, build_console, web
from tidings.console.web import PUBLIC
from tidings.safety.audit import AuditAction
from tidings.safety.cases import CaseState, DecisionKind, DecisionStatus, EnforcementKind
from tidings.safety.categories import QueueId
from tidings.safety.staff import ENROLMENT_TTL_MS, Role, permissions_for

from .conftest import Seeded, csrf_of, login, make_client, totp_code, with_lawful

MIN = 60_000


def actions(s: Seeded, action: AuditAction, actor: str | None = None) -> list[object]:
    return [
        e
        for e in s.world.audit_repo.rows
        if e.action == action.value and (actor is None or e.actor == actor)
    ]


# --- sign-in ----------------------------------------------------------------------------------


def test_login_with_password_then_totp_sets_a_strict_httponly_cookie(
    client: TestClient, seeded: Seeded
) -> None:
    page = client.get("/console/login")
    assert page.status_code == 200 and 'name="password"' in page.text
    r = client.post(
        "/console/login",
        data={"username": "rita", "password": PASSWORD, "csrf": csrf_of(page.text)},
    )
    assert r.status_code == 303
    assert "tidings_console=" not in r.headers.get("set-cookie", "")  # no session yet
    page = client.get("/console/login/totp")
    assert "rita" in page.text and 'autocomplete="one-time-code"' in page.text
    r = client.post(
        "/console/login/totp", data={"code": totp_code(seeded, "rita"), "csrf": csrf_of(page.text)}
    )
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("tidings_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP test server
    assert client.get("/console/queues").status_code == 200
    assert actions(seeded, AuditAction.LOGIN, seeded.staff["rita"].staff_id)


def test_secure_cookie_when_https(seeded: Seeded) -> None:
    with make_client(seeded, secure=True) as c:
        page = c.get("/console/login")
        assert "Secure" in page.headers["set-cookie"]


def test_wrong_totp_or_password_is_refused_the_same_way(client: TestClient, seeded: Seeded) -> None:
    for password, code in ((PASSWORD, "000000"), ("wrong password!!", totp_code(seeded, "rita"))):
        page = client.get("/console/login")
        client.post(
            "/console/login",
            data={"username": "rita", "password": password, "csrf": csrf_of(page.text)},
        )
        page = client.get("/console/login/totp")
        r = client.post("/console/login/totp", data={"code": code, "csrf": csrf_of(page.text)})
        assert r.status_code == 401
        assert "Sign-in failed" in r.text and password not in r.text
        assert "tidings_console=" not in r.headers.get("set-cookie", "").replace("_pre", "")
    assert client.get("/console/queues").status_code == 303


def test_totp_code_cannot_be_replayed(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "rita")
    code = totp_code(seeded, "rita")
    client.post("/console/logout", data={"csrf": csrf_of(client.get("/console/queues").text)})
    page = client.get("/console/login")
    client.post(
        "/console/login",
        data={"username": "rita", "password": PASSWORD, "csrf": csrf_of(page.text)},
    )
    page = client.get("/console/login/totp")
    r = client.post("/console/login/totp", data={"code": code, "csrf": csrf_of(page.text)})
    assert r.status_code == 401


def test_login_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/console/login")
    r = client.post("/console/login", data={"username": "rita", "password": PASSWORD})
    assert r.status_code == 403


# --- CSRF and sessions ------------------------------------------------------------------------


def test_post_without_or_with_a_foreign_csrf_token_is_refused(seeded: Seeded) -> None:
    with make_client(seeded) as a, make_client(seeded) as b:
        login(a, seeded, "rita")
        other = login(b, seeded, "rob")
        url = f"/console/cases/{seeded.harassment_case}/claim"
        assert a.post(url, data={}).status_code == 403
        assert a.post(url, data={"csrf": "0" * 64}).status_code == 403
        assert a.post(url, data={"csrf": other}).status_code == 403
        case = seeded.world.case_repo.get_case(seeded.harassment_case)
        assert case is not None and case.lock_holder is None
        assert not actions(seeded, AuditAction.CASE_LOCK)


def test_session_idle_expiry_sends_back_to_sign_in(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "rita")
    seeded.clock.advance(29 * MIN)
    assert client.get("/console/queues").status_code == 200  # activity slides the idle expiry
    seeded.clock.advance(31 * MIN)
    r = client.get("/console/queues")
    assert r.status_code == 303 and r.headers["location"].endswith("/console/login?expired=1")
    assert "expired" in client.get(r.headers["location"]).text
    r = client.post(f"/console/cases/{seeded.harassment_case}/claim", data={"csrf": csrf})
    assert r.status_code == 401


def test_logout_ends_the_session(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "rita")
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/console/queues").status_code == 303
    assert actions(seeded, AuditAction.LOGOUT)


def test_security_headers_on_every_page(client: TestClient, seeded: Seeded) -> None:
    for r in (client.get("/console/login"), client.get("/console/queues")):
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"


# --- least privilege: every role x every route --------------------------------------------------

ROLE_USER = {Role.REVIEWER: "rita", Role.LEAD: "lee", Role.LEGAL: "lena", Role.ADMIN: "root"}


def _path(spec_path: str, s: Seeded, target_staff: str, appeal_id: str) -> str:
    return (
        spec_path.replace("{case_id}", s.spam_case)
        .replace("{queue_id}", QueueId.FRAUD_SPAM.value)
        .replace("{appeal_id}", appeal_id)
        .replace("{staff_id}", target_staff)
        .replace("{grant_id}", "grant_unknown")
        .replace("{name}", "console.css")
        .replace("{bank_name}", "cse")
        .replace("{hold_id}", "hold_unknown")
        .replace("{referral_id}", "rf_unknown")
        .replace("{request_id}", "lr_unknown")
    )


def test_route_table_names_each_route_once(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    # The page modules declare their own routes; one table must still name each route once.
    assert len({spec.name for spec in ROUTES}) == len(ROUTES)
    assert len({(spec.method, spec.path) for spec in ROUTES}) == len(ROUTES)
    routes, build = web.PAGES[1]
    monkeypatch.setattr(web, "PAGES", (*web.PAGES, (routes[:1], build)))
    with pytest.raises(ValueError, match=routes[0].name):
        build_console(seeded.context)


@pytest.mark.parametrize("role", list(Role))
def test_every_route_refuses_roles_without_its_permission(seeded: Seeded, role: Role) -> None:
    s = seeded
    # An appeal to aim the appeal route at (decided by rob, so nobody here took part).
    rob = s.staff["rob"]
    s.world.cases.claim(rob, s.harassment_case, now_ms=s.clock.now)
    outcome = s.world.cases.decide(
        rob,
        s.harassment_case,
        kind=DecisionKind.WARN,
        policy_id="HAR-1",
        reason="r",
        now_ms=s.clock.now,
    )
    appeal = s.world.cases.file_appeal(
        "mallory", outcome.decision.decision_id, statement="not me", now_ms=s.clock.now
    )
    target = s.world.make_staff("target", Role.REVIEWER).staff_id
    assert s.context.banks is not None
    s.context.banks.create_bank(s.world.admin, name="cse", category="child_sexual_exploitation")
    with_lawful(s)
    perms = permissions_for([role], child_safety=False)
    with make_client(s) as c:
        csrf = login(c, s, ROLE_USER[role])
        for spec in ROUTES:
            if spec.permission == PUBLIC or spec.name == "logout":
                continue
            path = "/console" + _path(spec.path, s, target, appeal.appeal_id)
            r = c.get(path) if spec.method == "GET" else c.post(path, data={"csrf": csrf})
            allowed = spec.permission is None or spec.permission in perms
            if allowed:
                assert r.status_code != 403, (role, spec.name, r.status_code)
                assert r.status_code != 401 and r.status_code < 500, (role, spec.name)
                assert r.text != "Not Found", path
            else:
                assert r.status_code == 403, (role, spec.name, r.status_code, path, r.text[-300:])
                assert "this action requires" in r.text


def test_admin_cannot_read_cases_or_evidence(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "root")
    r = client.get(f"/console/cases/{seeded.harassment_case}")
    assert r.status_code == 403 and "you again" not in r.text
    assert not actions(seeded, AuditAction.EVIDENCE_VIEW)


def test_queue_membership_is_enforced(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "cleo")  # cleared, but only a member of the child-safety queue
    assert client.get(f"/console/cases/{seeded.spam_case}").status_code == 403
    assert client.get("/console/queues/fraud_spam").status_code == 403


# --- child safety -----------------------------------------------------------------------------


def test_child_safety_cases_need_the_clearance(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "rita")
    r = client.get(f"/console/cases/{seeded.cse_case}")
    assert r.status_code == 403 and "cse-report-text" not in r.text
    assert client.get("/console/queues/child_safety").status_code == 403
    assert "Child safety" not in client.get("/console/queues").text
    with make_client(seeded) as cleared:
        login(cleared, seeded, "cleo")
        r = cleared.get(f"/console/cases/{seeded.cse_case}")
        assert r.status_code == 200 and "cse-report-text" in r.text
        assert "Child safety" in cleared.get("/console/queues").text


def test_child_safety_membership_needs_the_clearance_first(
    client: TestClient, seeded: Seeded
) -> None:
    csrf = login(client, seeded, "root")
    rita = seeded.staff["rita"].staff_id
    url = f"/console/staff/{rita}/queues"
    r = client.post(url, data={"csrf": csrf, "queues": ["harassment", "child_safety"]})
    assert r.status_code == 403
    assert "child_safety" not in seeded.world.staff_repo.queues_of(rita)
    client.post(f"/console/staff/{rita}/child-safety", data={"csrf": csrf, "granted": "1"})
    # Requested is not granted: a second admin approves first.
    assert client.post(url, data={"csrf": csrf, "queues": ["child_safety"]}).status_code == 403
    (grant,) = seeded.world.staff.pending_grants(seeded.world.admin)
    approve = f"/console/grants/{grant.grant_id}/approve"
    r = client.post(approve, data={"csrf": csrf})
    assert r.status_code == 403 and "different admin" in r.text
    with make_client(seeded) as other:
        other_csrf = login(other, seeded, "root2")
        assert other.post(approve, data={"csrf": other_csrf}).status_code == 303
    assert client.post(url, data={"csrf": csrf, "queues": ["child_safety"]}).status_code == 303
    assert seeded.world.staff_repo.queues_of(rita) == {"child_safety"}
    # Revoking the clearance drops the membership in the same step.
    client.post(f"/console/staff/{rita}/child-safety", data={"csrf": csrf, "granted": "0"})
    assert seeded.world.staff_repo.queues_of(rita) == frozenset()


# --- case view, evidence, decisions -----------------------------------------------------------


def test_case_page_shows_verified_evidence_and_audits_every_opening(
    client: TestClient, seeded: Seeded
) -> None:
    login(client, seeded, "rita")
    r = client.get(f"/console/cases/{seeded.harassment_case}")
    assert r.status_code == 200
    assert "I know where you live" in r.text and "you again" in r.text  # the context transcript
    assert r.text.count("✓ franking verified") == 3
    assert "this keeps happening" in r.text  # the reporter's comment
    assert 'class="media blur grey"' in r.text and "data:image/png;base64," in r.text
    views = actions(seeded, AuditAction.EVIDENCE_VIEW, seeded.staff["rita"].staff_id)
    assert len(views) == 3  # messages, comment, attachment
    assert all('"case":"' + seeded.harassment_case in e.details for e in views)  # type: ignore[attr-defined]
    assert actions(seeded, AuditAction.CASE_VIEW, seeded.staff["rita"].staff_id)


def test_decision_needs_lock_policy_and_reason_and_is_audited(
    client: TestClient, seeded: Seeded
) -> None:
    csrf = login(client, seeded, "rita")
    case = seeded.harassment_case
    base = {"csrf": csrf, "kind": "suspend", "days": "7", "policy": "HAR-1", "reason": "threats"}
    assert client.post(f"/console/cases/{case}/decide", data=base).status_code == 409  # no lock
    assert client.post(f"/console/cases/{case}/claim", data={"csrf": csrf}).status_code == 303
    assert "You" in client.get(f"/console/cases/{case}").text
    for missing in ({"reason": ""}, {"policy": ""}, {"policy": "NOPE"}, {"days": ""}):
        r = client.post(f"/console/cases/{case}/decide", data={**base, **missing})
        assert r.status_code == 400
    assert not seeded.world.case_repo.decisions
    r = client.post(f"/console/cases/{case}/decide", data=base)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=decided")
    [decision] = seeded.world.case_repo.decisions.values()
    assert (decision.kind, decision.policy_id, decision.reason) == (
        DecisionKind.SUSPEND,
        "HAR-1",
        "threats",
    )
    assert decision.until_ms == seeded.clock.now + 7 * 86_400_000
    [entry] = actions(seeded, AuditAction.DECISION)
    assert '"policy":"HAR-1"' in entry.details and '"kind":"suspend"' in entry.details  # type: ignore[attr-defined]
    [enf] = seeded.world.cases.active_enforcements("mallory", now_ms=seeded.clock.now)
    assert enf.kind is EnforcementKind.SUSPEND
    page = client.get(f"/console/cases/{case}")
    assert "Decision recorded" not in page.text  # no flash without ?done
    assert (
        "actioned" in page.text
        and "threats" in page.text
        and "<strong>active</strong>" in page.text
    )


def test_ban_takes_a_second_reviewer(seeded: Seeded) -> None:
    case = seeded.harassment_case
    with make_client(seeded) as rita, make_client(seeded) as lee:
        csrf = login(rita, seeded, "rita")
        rita.post(f"/console/cases/{case}/claim", data={"csrf": csrf})
        r = rita.post(
            f"/console/cases/{case}/decide",
            data={"csrf": csrf, "kind": "ban", "policy": "HAR-1", "reason": "repeated threats"},
        )
        assert r.headers["location"].endswith("?done=proposed")
        assert not seeded.world.cases.active_enforcements("mallory", now_ms=seeded.clock.now)
        # The proposer cannot confirm (reviewers lack the permission; leads must differ).
        assert rita.post(f"/console/cases/{case}/confirm", data={"csrf": csrf}).status_code == 403
        csrf2 = login(lee, seeded, "lee")
        page = lee.get(f"/console/cases/{case}")
        assert "Awaiting second review" in page.text and "Confirm ban" in page.text
        r = lee.post(f"/console/cases/{case}/confirm", data={"csrf": csrf2, "reason": "agree"})
        assert r.status_code == 409  # must hold the lock
        lee.post(f"/console/cases/{case}/claim", data={"csrf": csrf2})
        r = lee.post(f"/console/cases/{case}/confirm", data={"csrf": csrf2, "reason": ""})
        assert r.status_code == 400
        r = lee.post(f"/console/cases/{case}/confirm", data={"csrf": csrf2, "reason": "agree"})
        assert r.status_code == 303
    [enf] = seeded.world.cases.active_enforcements("mallory", now_ms=seeded.clock.now)
    assert enf.kind is EnforcementKind.BAN
    [d] = seeded.world.case_repo.decisions.values()
    assert d.status is DecisionStatus.FINAL and d.second_reviewer == seeded.staff["lee"].staff_id
    assert actions(seeded, AuditAction.DECISION_CONFIRM, seeded.staff["lee"].staff_id)


def test_escalation_and_notes(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "rita")
    case = seeded.harassment_case
    client.post(f"/console/cases/{case}/claim", data={"csrf": csrf})
    assert (
        client.post(f"/console/cases/{case}/note", data={"csrf": csrf, "text": "hmm"}).status_code
        == 303
    )
    r = client.post(f"/console/cases/{case}/escalate", data={"csrf": csrf, "reason": "unsure"})
    assert r.status_code == 303
    stored = seeded.world.case_repo.get_case(case)
    assert stored is not None and stored.state is CaseState.PENDING_SECOND_REVIEW
    page = client.get(f"/console/cases/{case}")
    assert "hmm" in page.text and "Escalated for a second reviewer: unsure" in page.text


def test_appeal_is_decided_by_a_different_reviewer(seeded: Seeded) -> None:
    case = seeded.harassment_case
    with make_client(seeded) as rita, make_client(seeded) as rob:
        csrf = login(rita, seeded, "rita")
        rita.post(f"/console/cases/{case}/claim", data={"csrf": csrf})
        rita.post(
            f"/console/cases/{case}/decide",
            data={"csrf": csrf, "kind": "warn", "policy": "HAR-1", "reason": "rude"},
        )
        [d] = seeded.world.case_repo.decisions.values()
        appeal = seeded.world.cases.file_appeal(
            "mallory", d.decision_id, statement="it was a joke", now_ms=seeded.clock.now
        )
        page = rita.get("/console/appeals")
        assert "it was a joke" in page.text and "no (took part)" in page.text
        rita.post(f"/console/cases/{case}/claim", data={"csrf": csrf})
        r = rita.post(
            f"/console/appeals/{appeal.appeal_id}/decide",
            data={"csrf": csrf, "outcome": "overturn", "reason": "self"},
        )
        assert r.status_code == 409
        rita.post(f"/console/cases/{case}/release", data={"csrf": csrf})
        csrf2 = login(rob, seeded, "rob")
        rob.post(f"/console/cases/{case}/claim", data={"csrf": csrf2})
        r = rob.post(
            f"/console/appeals/{appeal.appeal_id}/decide",
            data={"csrf": csrf2, "outcome": "overturn", "reason": "context shows a joke"},
        )
        assert r.status_code == 303
    assert not seeded.world.cases.active_enforcements("mallory", now_ms=seeded.clock.now)
    assert actions(seeded, AuditAction.APPEAL_DECIDED, seeded.staff["rob"].staff_id)


def test_queue_page_and_navigation(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "rita")
    page = client.get("/console/queues/harassment")
    assert seeded.harassment_case in page.text and 'data-kind="sla"' in page.text
    r = client.get("/console/queues/harassment/step")
    assert r.headers["location"].endswith(f"/console/cases/{seeded.harassment_case}")
    r = client.get(f"/console/queues/harassment/step?case={seeded.harassment_case}&dir=next")
    assert r.headers["location"].endswith("/console/queues/harassment?done=end")


# --- wellbeing --------------------------------------------------------------------------------


def test_exposure_counter_and_personal_blur_override(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "rita")
    for n in (1, 2):
        r = client.post("/console/wellbeing/exposure", data={"csrf": csrf})
        assert r.json() == {"exposure": n}
    assert 'id="exposure-count">2<' in client.get("/console/queues").text
    client.post("/console/preferences", data={"csrf": csrf, "blur": "off", "greyscale": "default"})
    page = client.get(f"/console/cases/{seeded.harassment_case}")
    assert 'class="media grey"' in page.text and "reveal-toggle" not in page.text


# --- audit and staff --------------------------------------------------------------------------


def test_audit_page_shows_entries_and_chain_verification(
    client: TestClient, seeded: Seeded
) -> None:
    login(client, seeded, "lee")
    page = client.get("/console/audit")
    assert page.status_code == 200 and "Chain verified" in page.text
    assert "staff.login" in page.text
    rows = seeded.world.audit_repo.rows
    from dataclasses import replace

    rows[3] = replace(rows[3], target="staff:someone-else")
    page = client.get("/console/audit")
    assert "Chain verification FAILED at seq 4: edited" in page.text


def _create(client: TestClient, csrf: str, username: str, **extra: object) -> str:
    r = client.post(
        "/console/staff",
        data={"csrf": csrf, "username": username, "display_name": username, **extra},
    )
    assert r.status_code == 201, r.text[-500:]
    match = re.search(r'value="(http://testserver/console/enrol/[0-9a-f]{64})"', r.text)
    assert match, "no enrolment link on the creation page"
    return match.group(1).removeprefix("http://testserver")


def test_creation_page_shows_an_enrolment_link_and_no_secret(
    client: TestClient, seeded: Seeded
) -> None:
    csrf = login(client, seeded, "root")
    page = client.get("/console/staff")
    assert 'name="password"' not in page.text  # the creator chooses no password
    r = client.post(
        "/console/staff",
        data={"csrf": csrf, "username": "nina", "display_name": "Nina", "roles": ["reviewer"]},
    )
    assert r.status_code == 201 and "/console/enrol/" in r.text
    nina = seeded.account("nina")
    assert nina.password_hash == "" and nina.totp_secret == "" and not nina.enrolled
    assert "otpauth" not in r.text and "secret" not in r.text.lower()
    # The admin cannot sign in as the new account: it has no password until its owner enrols.
    with make_client(seeded) as other:
        page = other.get("/console/login")
        other.post(
            "/console/login",
            data={"username": "nina", "password": PASSWORD, "csrf": csrf_of(page.text)},
        )
        page = other.get("/console/login/totp")
        r = other.post("/console/login/totp", data={"code": "000000", "csrf": csrf_of(page.text)})
        assert r.status_code == 401 and "tidings_console=" not in r.headers.get("set-cookie", "")
    # Shown once: the staff page lists the account as awaiting enrolment, without the link.
    page = client.get("/console/staff")
    assert "awaiting enrolment" in page.text and "/console/enrol/" not in page.text


def test_the_owner_enrols_through_the_link_once(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "root")
    link = _create(client, csrf, "nina", roles=["reviewer"])
    nina_id = seeded.account("nina").staff_id
    with make_client(seeded) as owner:
        page = owner.get(link)
        assert page.status_code == 200 and 'autocomplete="new-password"' in page.text
        form = csrf_of(page.text)
        r = owner.post(link, data={"csrf": form, "password": PASSWORD, "password2": "different"})
        assert r.status_code == 400 and seeded.account("nina").password_hash == ""
        r = owner.post(link, data={"csrf": form, "password": PASSWORD, "password2": PASSWORD})
        secret = seeded.account("nina").totp_secret
        assert r.status_code == 200 and secret in r.text and "otpauth://totp/" in r.text
        r = owner.post(link + "/confirm", data={"csrf": form, "code": "000000"})
        assert r.status_code == 400 and not seeded.account("nina").enrolled
        code = seeded.world.totp.code_at(secret, seeded.world.totp.step(seeded.clock.now) - 1)
        r = owner.post(link + "/confirm", data={"csrf": form, "code": code})
        assert r.status_code == 200 and "Enrolment complete" in r.text
        assert seeded.account("nina").enrolled
        # Used: the same clear page for a used, unknown or expired link, and nothing changes.
        before = (seeded.account("nina"), len(seeded.world.audit_repo.rows))
        for attempt in (
            owner.get(link),
            owner.post(link, data={"csrf": form, "password": "x" * 20, "password2": "x" * 20}),
            owner.get("/console/enrol/" + "0" * 64),
        ):
            assert attempt.status_code == 410 and "cannot be used" in attempt.text
        assert (seeded.account("nina"), len(seeded.world.audit_repo.rows)) == before
        login(owner, seeded, "nina")
    enrolled = [e for e in seeded.world.audit_repo.rows if e.action == "staff.enrol"]
    assert enrolled[-1].actor == nina_id


def test_an_expired_or_replaced_link_changes_nothing(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "root")
    old = _create(client, csrf, "nina", roles=["reviewer"])
    nina_id = seeded.account("nina").staff_id
    r = client.post(f"/console/staff/{nina_id}/enrolment", data={"csrf": csrf})
    assert r.status_code == 200 and "/console/enrol/" in r.text
    with make_client(seeded) as owner:
        assert owner.get(old).status_code == 410
        new = re.search(r'value="http://testserver(/console/enrol/[0-9a-f]{64})"', r.text)
        page = owner.get(new.group(1)) if new else None
        assert new and page and page.status_code == 200
        form = csrf_of(page.text)
        seeded.clock.advance(ENROLMENT_TTL_MS)
        assert owner.get(new.group(1)).status_code == 410
        r = owner.post(
            new.group(1), data={"csrf": form, "password": PASSWORD, "password2": PASSWORD}
        )
        assert r.status_code == 410 and seeded.account("nina").password_hash == ""


def test_roles_need_a_second_admin_through_the_console(
    client: TestClient, seeded: Seeded
) -> None:
    csrf = login(client, seeded, "root")
    link = _create(client, csrf, "nina", roles=["reviewer"])
    with make_client(seeded) as owner:
        page = owner.get(link)
        form = csrf_of(page.text)
        owner.post(link, data={"csrf": form, "password": PASSWORD, "password2": PASSWORD})
        secret = seeded.account("nina").totp_secret
        code = seeded.world.totp.code_at(secret, seeded.world.totp.step(seeded.clock.now) - 1)
        owner.post(link + "/confirm", data={"csrf": form, "code": code})
    nina = seeded.account("nina")
    assert nina.roles == frozenset()
    (grant,) = [g for g in seeded.world.staff_repo.pending_grants() if g.staff_id == nina.staff_id]
    page = client.get("/console/staff")
    assert "Pending grants" in page.text and "a different admin must approve it" in page.text
    r = client.post(f"/console/grants/{grant.grant_id}/approve", data={"csrf": csrf})
    assert r.status_code == 403 and seeded.account("nina").roles == frozenset()
    with make_client(seeded) as other:
        other_csrf = login(other, seeded, "root2")
        assert f"/console/grants/{grant.grant_id}/approve" in other.get("/console/staff").text
        r = other.post(f"/console/grants/{grant.grant_id}/approve", data={"csrf": other_csrf})
        assert r.status_code == 303
        # Decided once.
        r = other.post(f"/console/grants/{grant.grant_id}/approve", data={"csrf": other_csrf})
        assert r.status_code == 409
    assert seeded.account("nina").roles == {Role.REVIEWER}
    root, root2 = seeded.staff["root"].staff_id, seeded.staff["root2"].staff_id
    entries = [e for e in seeded.world.audit_repo.rows if grant.grant_id in e.details]
    assert [(e.action, e.actor) for e in entries] == [
        ("staff.grant_request", root),
        ("staff.grant_approve", root2),
    ]


def test_staff_management_is_audited(client: TestClient, seeded: Seeded) -> None:
    csrf = login(client, seeded, "root")
    _create(client, csrf, "nina", roles=["reviewer"])
    nina = seeded.account("nina")
    assert nina.roles == frozenset()
    client.post(
        f"/console/staff/{nina.staff_id}/queues", data={"csrf": csrf, "queues": ["general"]}
    )
    client.post(f"/console/staff/{nina.staff_id}/roles", data={"csrf": csrf, "roles": ["lead"]})
    pending = {g.role for g in seeded.world.staff_repo.pending_grants()}
    assert Role.LEAD in pending and Role.REVIEWER not in pending  # replaced, not added
    r = client.post(f"/console/staff/{nina.staff_id}/roles", data={"csrf": csrf, "roles": []})
    assert r.status_code == 400
    # Admins cannot raise their own privileges.
    root = seeded.staff["root"].staff_id
    r = client.post(f"/console/staff/{root}/child-safety", data={"csrf": csrf, "granted": "1"})
    assert r.status_code == 403
    for action in (
        AuditAction.STAFF_CREATE,
        AuditAction.STAFF_GRANT_REQUEST,
        AuditAction.STAFF_ENROL_ISSUE,
        AuditAction.STAFF_QUEUE,
    ):
        assert actions(seeded, action, root)
    # Disabling ends the person's sessions at once.
    with make_client(seeded) as rita:
        login(rita, seeded, "rita")
        rita_id = seeded.staff["rita"].staff_id
        assert (
            client.post(f"/console/staff/{rita_id}/disable", data={"csrf": csrf}).status_code == 303
        )
        assert rita.get("/console/queues").status_code == 303
    page = client.get("/console/staff")
    assert "disabled" in page.text and "/console/enrol/" not in page.text  # shown once


def test_sign_in_lockout_answers_429_with_retry_after(client: TestClient, seeded: Seeded) -> None:
    for _ in range(6):
        page = client.get("/console/login")
        client.post(
            "/console/login",
            data={"username": "rita", "password": "wrong password!", "csrf": csrf_of(page.text)},
        )
        page = client.get("/console/login/totp")
        r = client.post("/console/login/totp", data={"code": "000000", "csrf": csrf_of(page.text)})
    assert r.status_code == 429
    assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1


def test_hsts_only_over_https(seeded: Seeded) -> None:
    console = build_console(seeded.context, clock=seeded.clock, secret=b"k" * 32)
    app = Starlette(routes=[Mount("/console", app=console)])
    with TestClient(app, base_url="https://testserver") as https:
        r = https.get("/console/login")
        assert r.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert "Secure" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
    with make_client(seeded) as http:
        assert "strict-transport-security" not in http.get("/console/login").headers


def test_no_secrets_in_logs_or_pages(
    client: TestClient, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    login(client, seeded, "rita")
    token = client.cookies.get("tidings_console")
    assert token
    secret = seeded.account("rita").totp_secret
    page = client.get(f"/console/cases/{seeded.harassment_case}").text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for value in (PASSWORD, token, secret):
        assert value not in logged and value not in page
    assert not re.search(r"Traceback", page)
    # The audit log never carries evidence either.
    assert all("where you live" not in e.details for e in seeded.world.audit_repo.rows)


def test_context_from_a_service_facade(seeded: Seeded) -> None:
    from types import SimpleNamespace

    from tidings.console import ConsoleContext

    w = seeded.world
    facade = SimpleNamespace(
        staff=w.staff,
        cases=w.cases,
        vault=w.vault,
        audit=w.audit,
        staff_repo=w.staff_repo,
        case_repo=w.case_repo,
        enforcement_repo=w.enforcement_repo,
        list_staff=seeded.context.list_staff,
    )
    ctx = ConsoleContext.from_service(facade)
    assert ctx.staff is w.staff and ConsoleContext.from_service(ctx) is ctx
    assert len(ctx.list_staff()) == len(seeded.context.list_staff())
    with pytest.raises(TypeError):
        ConsoleContext.from_service(SimpleNamespace(staff=w.staff))
