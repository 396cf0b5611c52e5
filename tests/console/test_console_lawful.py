"""The lawful-request pages (issue 11): legal takes a request in through the console's form
(the verification token shown once, never again and never in a URL), verifies, reviews,
scopes it narrower (the dropped reasons shown), produces, downloads a zip that verifies
offline, delivers and closes it; an open emergency is listed first; a non-disclosure order is
recorded; other roles are refused every route; CSRF is required; bad input is the typed error
with nothing changed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from tidings.app import open_safety
from tidings.clock import DAY_MS
from tidings.console import ROUTES, ConsoleContext
from tidings.crypto.primitives import ed25519_public
from tidings.safety.audit import AuditAction
from tidings.safety.lawful import LawfulRequestService
from tidings.safety.lawful_model import RequestState
from tidings.safety.lawful_package import verify_package
from tidings.server.config import ServerConfig

from .conftest import LAWFUL_SIGNING_SEED, Seeded, login, make_client, with_lawful
from .test_console_http import actions

TOKEN_RE = re.compile(r'id="token-value">([A-Za-z0-9_-]{40,})<')
CONTROL_RE = re.compile(r"<(input|select|textarea)\b([^>]*)>")


def assert_labelled(html: str) -> None:
    """Every form control but hidden ones has an id that a <label for> names."""
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    for tag, attrs in CONTROL_RE.findall(html):
        if 'type="hidden"' in attrs:
            continue
        found = re.search(r'id="([^"]+)"', attrs)
        assert found and found.group(1) in labels, (tag, attrs)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def intake_form(s: Seeded, csrf: str, **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf": csrf,
        "agency": "FBI Field Office",
        "officer_name": "Dana Scully",
        "officer_email": "dscully@fbi.gov",
        "country": "us",
        "case_number": "2026-FO-117",
        "legal_basis": "18 U.S.C. 2703(c)(2) subpoena",
        "kind": "subpoena",
        "account": "mule",
        "scope": ["subscriber", "devices", "attachments"],
        "due_date": _day(s.clock.now + 10 * DAY_MS),
        "emergency_justification": "",
    }
    form.update(overrides)
    return form


def take_in(c: TestClient, s: Seeded, csrf: str, **overrides: Any) -> tuple[str, str]:
    """POST the intake form; (request id, token) from the page it answers with."""
    r = c.post("/console/lawful/new", data=intake_form(s, csrf, **overrides))
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    assert "location" not in r.headers
    match = TOKEN_RE.search(r.text)
    assert match, "the token is shown on the intake answer"
    request_id = re.search(r"Lawful request <code>(lr_[^<]+)</code>", r.text)
    assert request_id
    return request_id.group(1), match.group(1)


def _state(service: LawfulRequestService, request_id: str) -> RequestState:
    found = service.repository.get(request_id)
    assert found is not None
    return found.state


def test_the_whole_workflow_through_the_console(seeded: Seeded, tmp_path: Path) -> None:
    s = seeded
    service = with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        page = c.get("/console/lawful")
        assert page.status_code == 200 and "No lawful requests." in page.text
        assert 'id="lawful-intake"' in page.text
        for label in ("Agency", "Officer's name", "Case number", "Legal basis", "Type",
                      "Due date", "Emergency justification"):
            assert label in page.text
        assert 'name="scope" value="subscriber"' in page.text  # the inventory's categories
        assert_labelled(page.text)

        request_id, token = take_in(c, s, csrf)
        one = f"/console/lawful/{request_id}"
        assert service.repository.get(request_id) is not None
        # Shown once: never again, not in the list or the request's page, not stored.
        listed = c.get("/console/lawful")
        assert request_id in listed.text and token not in listed.text
        page = c.get(one)
        assert page.status_code == 200 and token not in page.text
        assert 'id="lawful-token"' not in page.text
        assert token not in repr(service.repository.get(request_id).to_json())  # type: ignore[union-attr]
        assert "Dana Scully" in page.text and "2026-FO-117" in page.text
        assert_labelled(page.text)
        assert 'id="lawful-verify"' in page.text
        assert "/review" not in page.text and "/produce" not in page.text  # the state's only

        r = c.post(f"{one}/verify", data={"csrf": csrf, "token": "wrong-token"})
        assert r.status_code == 403 and "verification token is wrong" in r.text
        assert _state(service, request_id) is RequestState.RECEIVED
        r = c.post(f"{one}/verify", data={"csrf": csrf, "token": token})
        assert r.status_code == 303 and r.headers["location"].endswith(
            f"/lawful/{request_id}?done=lawful_verified")
        page = c.get(r.headers["location"].removeprefix("http://testserver"))
        assert "Requester verified" in page.text and 'id="lawful-state">verified<' in page.text

        assert c.post(f"{one}/review", data={"csrf": csrf}).status_code == 303
        page = c.get(one)
        assert 'id="lawful-preview"' in page.text
        assert "attachments</code>: dropped — needs a court_order; this is a subpoena" in page.text
        assert 'id="lawful-scope-form"' in page.text and 'id="lawful-reject"' in page.text
        assert_labelled(page.text)

        # Narrow to the subscriber record: devices narrowed, attachments beyond a subpoena.
        r = c.post(f"{one}/scope", data={"csrf": csrf, "categories": ["subscriber"]})
        assert r.status_code == 303, r.text
        page = c.get(one)
        dropped = page.text.split('id="lawful-dropped">')[1].split("</ul>")[0]
        assert "<code>devices</code>: narrowed by legal" in dropped
        assert "<code>attachments</code>: needs a court_order" in dropped
        kept = page.text.split('id="lawful-scope">')[1].split("</dd>")[0]
        assert "<code>subscriber</code>" in kept and "devices" not in kept

        assert c.post(f"{one}/produce", data={"csrf": csrf}).status_code == 303
        page = c.get(one)
        assert 'id="lawful-download"' in page.text and "Package manifest SHA-256" in page.text
        download = c.get(f"{one}/package")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        assert download.headers["content-disposition"] == (
            f'attachment; filename="tidings-{request_id}-package.zip"')
        assert download.headers["cache-control"] == "no-store"
        archive = tmp_path / "package.zip"
        archive.write_bytes(download.content)
        manifest = verify_package(archive, public_key=ed25519_public(LAWFUL_SIGNING_SEED))
        assert manifest["request_id"] == request_id

        assert c.post(f"{one}/deliver", data={"csrf": csrf}).status_code == 303
        assert 'id="lawful-ndo-form"' not in c.get(one).text  # too late for an order
        r = c.post(f"{one}/close", data={"csrf": csrf})
        assert r.status_code == 303
        page = c.get(r.headers["location"].removeprefix("http://testserver"))
        assert "Request closed." in page.text and 'id="lawful-state">closed<' in page.text
        assert "No further step" in page.text
        trail = page.text.split('id="lawful-trail">')[1].split("</ol>")[0]
        for step in ("received", "verified", "in review", "scoped", "produced", "delivered",
                     "closed"):
            assert step in trail, step
        assert "lawful.package" in trail
    lena = s.staff["lena"].staff_id
    for action in (AuditAction.LAWFUL_RECEIVE, AuditAction.LAWFUL_TRANSITION,
                   AuditAction.LAWFUL_PACKAGE, AuditAction.LAWFUL_VIEW, AuditAction.LAWFUL_LIST):
        assert actions(s, action, lena), action


def test_an_emergency_is_listed_first_and_an_order_is_recorded(seeded: Seeded) -> None:
    s = seeded
    service = with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        later, _ = take_in(c, s, csrf, due_date=_day(s.clock.now + 3 * DAY_MS))
        emergency, _ = take_in(c, s, csrf, kind="emergency", due_date="",
                               emergency_justification="a credible threat to life",
                               officer_email="duty@police.example")
        page = c.get("/console/lawful")
        assert page.text.index(f'id="lawful-{emergency}"') < page.text.index(f'id="lawful-{later}"')
        row = page.text.split(f'id="lawful-{emergency}"')[1].split("</tr>")[0]
        assert "emergency" in row and "unverified domain" in row
        assert 'data-countdown-ms="' in row and "overdue" not in row

        one = f"/console/lawful/{later}"
        until = _day(s.clock.now + 120 * DAY_MS)
        r = c.post(f"{one}/ndo", data={"csrf": csrf, "until_date": until,
                                       "reference": "Order 26-MJ-4411"})
        assert r.status_code == 303 and r.headers["location"].endswith("done=lawful_ndo")
        page = c.get(r.headers["location"].removeprefix("http://testserver"))
        assert "Non-disclosure order recorded" in page.text
        assert "Order 26-MJ-4411, until " + until in page.text
        recorded = service.repository.get(later)
        assert recorded is not None and recorded.ndo_reference == "Order 26-MJ-4411"

        s.clock.advance(4 * DAY_MS)  # past the due date (and the session: sign in again)
        login(c, s, "lena")
        page = c.get("/console/lawful")
        row = page.text.split(f'id="lawful-{later}"')[1].split("</tr>")[0]
        assert "overdue" in row
    assert actions(s, AuditAction.LAWFUL_NDO, s.staff["lena"].staff_id)


def test_an_unlisted_domain_needs_legals_acceptance(seeded: Seeded) -> None:
    s = seeded
    service = with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        request_id, token = take_in(c, s, csrf, officer_email="officer@police.example")
        one = f"/console/lawful/{request_id}"
        assert 'id="lr-accept-domain"' in c.get(one).text
        r = c.post(f"{one}/verify", data={"csrf": csrf, "token": token})
        assert r.status_code == 403 and "unverified domain" in r.text
        assert _state(service, request_id) is RequestState.RECEIVED
        r = c.post(f"{one}/verify", data={"csrf": csrf, "token": token,
                                          "accept_unlisted_domain": "yes"})
        assert r.status_code == 303
        assert _state(service, request_id) is RequestState.VERIFIED


def test_other_roles_are_refused_every_lawful_route(seeded: Seeded) -> None:
    s = seeded
    with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        request_id, _ = take_in(c, s, csrf)
    lawful_routes = [spec for spec in ROUTES if spec.path.startswith("/lawful")]
    assert len(lawful_routes) == 13
    for user in ("rita", "lee", "root"):
        with make_client(s) as c:
            csrf = login(c, s, user)
            assert "/lawful" not in c.get("/console/preferences").text  # no nav entry
            for spec in lawful_routes:
                path = "/console" + spec.path.replace("{request_id}", request_id)
                r = c.get(path) if spec.method == "GET" else c.post(
                    path, data=intake_form(s, csrf))
                assert r.status_code == 403, (user, spec.name, r.status_code)
    assert s.context.lawful is not None and len(s.context.lawful.repository.all()) == 1


def test_csrf_is_required(seeded: Seeded) -> None:
    s = seeded
    service = with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        assert '/lawful"' in c.get("/console/preferences").text  # the nav entry
        r = c.post("/console/lawful/new", data=intake_form(s, "0" * 64))
        assert r.status_code == 403 and not service.repository.all()
        request_id, token = take_in(c, s, csrf)
        r = c.post(f"/console/lawful/{request_id}/verify", data={"token": token})
        assert r.status_code == 403
        assert _state(service, request_id) is RequestState.RECEIVED


def test_invalid_input_is_the_typed_error_and_changes_nothing(seeded: Seeded) -> None:
    s = seeded
    service = with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        r = c.post("/console/lawful/new", data=intake_form(s, csrf, country="USA"))
        assert r.status_code == 400 and "the country must be 1 to 2 printable" in r.text
        r = c.post("/console/lawful/new", data=intake_form(s, csrf, due_date="next week"))
        assert r.status_code == 400 and "the due date is a date, YYYY-MM-DD" in r.text
        r = c.post("/console/lawful/new", data=intake_form(s, csrf, kind="emergency",
                                                           due_date=""))
        assert r.status_code == 400 and "justification" in r.text
        assert not service.repository.all()

        request_id, token = take_in(c, s, csrf, kind="emergency", due_date="",
                                    emergency_justification="imminent risk")
        one = f"/console/lawful/{request_id}"
        r = c.post(f"{one}/produce", data={"csrf": csrf})
        assert r.status_code == 409 and "cannot be given action produce" in r.text
        assert c.post(f"{one}/verify", data={"csrf": csrf, "token": token}).status_code == 303
        assert c.post(f"{one}/review", data={"csrf": csrf}).status_code == 303
        page = c.get(one)
        assert 'id="lr-justification"' in page.text
        r = c.post(f"{one}/scope", data={"csrf": csrf, "categories": ["subscriber"]})
        assert r.status_code == 400 and "justification" in r.text
        r = c.post(f"{one}/scope", data={"csrf": csrf, "justification": "risk"})
        assert r.status_code == 400 and "nothing the request asks for" in r.text
        r = c.post(f"{one}/reject", data={"csrf": csrf, "reason": ""})
        assert r.status_code == 400 and "the reason must be" in r.text
        r = c.post(f"{one}/ndo", data={"csrf": csrf, "until_date": _day(s.clock.now - DAY_MS),
                                       "reference": "x"})
        assert r.status_code == 400 and "ends in the future" in r.text
        assert _state(service, request_id) is RequestState.IN_REVIEW
        assert c.get(f"{one}/package").status_code == 404
        assert c.get("/console/lawful/lr_unknown").status_code == 404
        r = c.post(f"{one}/reject", data={"csrf": csrf, "reason": "not an emergency"})
        assert r.status_code == 303
        page = c.get(one)
        assert 'id="lawful-reject-reason">not an emergency<' in page.text
        assert 'id="lawful-scope-form"' not in page.text


def test_the_served_console_has_the_nodes_lawful_service(tmp_path: Path) -> None:
    """The console `tidings server` mounts is built from the safety facade: its lawful
    pages work the node's `LawfulRequestService` (signing key and allow-list included)."""
    safety = open_safety(ServerConfig().with_overrides(data_dir=tmp_path / "node"))
    try:
        context = ConsoleContext.from_service(safety)
        assert context.lawful is safety.lawful and context.lawful.signing_key is not None
    finally:
        safety.close()


def test_a_preservation_request_is_held_and_closes_from_review(seeded: Seeded) -> None:
    s = seeded
    service = with_lawful(s)
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        request_id, token = take_in(c, s, csrf, kind="preservation", scope=[])
        one = f"/console/lawful/{request_id}"
        recorded = service.repository.get(request_id)
        assert recorded is not None and recorded.hold_id is not None
        page = c.get(one)
        assert f"#hold-{recorded.hold_id}" in page.text  # the link to the Holds page
        assert c.post(f"{one}/verify", data={"csrf": csrf, "token": token}).status_code == 303
        assert c.post(f"{one}/review", data={"csrf": csrf}).status_code == 303
        page = c.get(one)
        assert 'id="lawful-scope-form"' not in page.text and "/produce" not in page.text
        assert f"{one.removeprefix('/console')}/close" in page.text
        assert c.post(f"{one}/close", data={"csrf": csrf}).status_code == 303
        assert _state(service, request_id) is RequestState.CLOSED
        holds = c.get("/console/holds?account=mule")
        assert f'id="hold-{recorded.hold_id}"' in holds.text


def test_a_new_link_replaces_the_old_token(seeded: Seeded) -> None:
    s = seeded
    service = with_lawful(s)
    sent: list[Any] = []

    class Recorder:
        def send(self, mail: Any) -> None:
            sent.append(mail)

    service.mailer = Recorder()
    with make_client(s) as c:
        csrf = login(c, s, "lena")
        request_id, old = take_in(c, s, csrf)
        one = f"/console/lawful/{request_id}"
        r = c.post(f"{one}/resend", data={"csrf": csrf})
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        match = TOKEN_RE.search(r.text)
        assert match and match.group(1) != old
        assert [m.to for m in sent] == ["dscully@fbi.gov"] * 2
        assert match.group(1) in sent[-1].body and old in sent[0].body
        r = c.post(f"{one}/verify", data={"csrf": csrf, "token": old})
        assert r.status_code == 403 and _state(service, request_id) is RequestState.RECEIVED
        r = c.post(f"{one}/verify", data={"csrf": csrf, "token": match.group(1)})
        assert r.status_code == 303 and _state(service, request_id) is RequestState.VERIFIED
        r = c.post(f"{one}/resend", data={"csrf": csrf})
        assert r.status_code == 409  # verified: no new link
    assert [e for e in actions(s, AuditAction.LAWFUL_RESEND)]
