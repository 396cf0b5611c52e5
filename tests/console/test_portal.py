"""The requester portal through the real app (SQLite and PostgreSQL): a request filed by form
mails its one-time link (to the data directory's outbox), opening the link changes nothing,
confirming shows the access key once, the status page follows the request and, once legal
delivered, downloads a package that verifies offline; CSRF, typed errors with no oracle, an
invalid form that records nothing, and the per-address rate limit."""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.support.app import make_config
from tests.support.services import PG_URL, pg_admin, require_service
from tests.support.staff import active_staff
from tidings.app import create_app
from tidings.crypto.primitives import ed25519_public
from tidings.safety.lawful_model import RequestState
from tidings.safety.lawful_package import read_package_zip, verify_files
from tidings.safety.service import SafetyService
from tidings.safety.staff import Role

PORTAL = "http://testserver/lawful-portal"


@pytest.fixture(params=["sqlite", "postgresql"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    lawful = {"domains": ["fbi.gov"], "portal_url": PORTAL}
    if request.param == "sqlite":
        config = make_config(tmp_path / "data", lawful=lawful)
        with TestClient(create_app(config)) as client:
            yield client
        return
    schema = f"tidings_portal_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    config = make_config(tmp_path / "data", lawful=lawful, database_url=PG_URL,
                         database_schema=schema)
    try:
        with TestClient(create_app(config)) as client:
            yield client
    finally:
        pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _safety(client: TestClient) -> SafetyService:
    service: SafetyService = client.app.state.safety  # type: ignore[attr-defined]
    return service


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, page[:500]
    return found.group(1)


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agency": "FBI Field Office", "officer_name": "Dana Scully",
        "officer_email": "dscully@fbi.gov", "country": "us", "case_number": "2026-FO-200",
        "legal_basis": "18 U.S.C. 2703(d) order <b>of the court</b>", "kind": "court_order",
        "account": "alice", "scope": ["subscriber", "devices", "message_content"],
        "due": (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d"),
        "emergency_justification": "",
    }
    fields.update(overrides)
    return fields


def _outbox(client: TestClient) -> list[email.message.EmailMessage]:
    outbox = _safety(client).lawful.mailer.directory  # type: ignore[union-attr]
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(Path(outbox).glob("*.eml"))]


def _file(client: TestClient, **overrides: Any) -> tuple[str, str]:
    """File a request through the form; (request id, the link mailed)."""
    form = client.get("/lawful-portal/")
    assert form.status_code == 200 and "Subscriber" in form.text
    sent = client.post("/lawful-portal/submit",
                       data={"csrf": _csrf(form.text), **_fields(**overrides)})
    assert sent.status_code == 200, sent.text
    assert "Check your official e-mail" in sent.text
    rid = re.search(r"Request <strong>(lr_[\w-]+)</strong>", sent.text).group(1)  # type: ignore[union-attr]
    mail = _outbox(client)[-1]
    assert mail["To"] == "dscully@fbi.gov"
    (link,) = [ln for ln in mail.get_content().splitlines() if ln.startswith(PORTAL)]
    assert link.split("token=")[1] not in sent.text  # the token is only in the mail
    return rid, link


def test_from_the_form_to_a_delivered_package_that_verifies(node: TestClient) -> None:
    client, safety = node, _safety(node)
    rid, link = _file(client)
    stored = safety.lawful.repository.get(rid)
    assert stored is not None and stored.received_by == "portal"
    assert stored.requested_keys() == ["subscriber", "devices", "message_content"]
    # Opening the link (a mail scanner may) changes nothing.
    parts = urlsplit(link)
    page = client.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200 and "Confirm the request" in page.text
    assert safety.lawful.repository.get(rid).state is RequestState.RECEIVED  # type: ignore[union-attr]
    confirmed = client.post(parts.path, data={"csrf": _csrf(page.text),
                                              "token": parts.query.split("token=")[1]})
    assert confirmed.status_code == 200, confirmed.text
    key = re.search(r'<code id="access-key" class="secret">([\w-]+)</code>',
                    confirmed.text).group(1)  # type: ignore[union-attr]
    again = client.post(parts.path, data={"csrf": _csrf(page.text),
                                          "token": parts.query.split("token=")[1]})
    assert again.status_code == 409  # one-time
    status_form = client.get("/lawful-portal/status")
    csrf = _csrf(status_form.text)
    shown = client.post("/lawful-portal/status", data={"csrf": csrf, "request_id": rid,
                                                       "key": key})
    assert shown.status_code == 200 and ">verified<" in shown.text
    assert "Download the package" not in shown.text
    # Legal's steps (the console's), then the requester sees why a category was dropped.
    legal = safety.staff.principal_for(active_staff(safety, "lena", {Role.LEGAL}).staff_id)
    safety.lawful.review(legal, rid)
    safety.lawful.scope(legal, rid)
    early = client.post("/lawful-portal/status/package",
                        data={"csrf": csrf, "request_id": rid, "key": key})
    assert early.status_code == 404
    safety.lawful.produce(legal, rid)
    safety.lawful.deliver(legal, rid)
    shown = client.post("/lawful-portal/status", data={"csrf": csrf, "request_id": rid,
                                                       "key": key})
    assert ">delivered<" in shown.text
    assert "message_content: not in the data inventory" in shown.text
    download = client.post("/lawful-portal/status/package",
                           data={"csrf": csrf, "request_id": rid, "key": key})
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert f"tidings-{rid}-package.zip" in download.headers["content-disposition"]
    public = ed25519_public(safety.lawful.signing_key)  # type: ignore[arg-type]
    manifest = verify_files(read_package_zip(download.content), public_key=public)
    assert manifest["request_id"] == rid
    audit = [e for e in safety.audit_repo.entries() if e.target == f"lawful:{rid}"]
    assert {e.actor for e in audit} == {"requester:dscully@fbi.gov", legal.staff_id}
    assert [e.action for e in audit if e.actor.startswith("requester:")] == [
        "lawful.receive", "lawful.transition", "lawful.view", "lawful.view", "lawful.view",
        "lawful.view", "lawful.package"]


def test_no_oracle_and_csrf_and_headers(node: TestClient) -> None:
    client = node
    rid, _ = _file(client)
    csrf = _csrf(client.get("/lawful-portal/status").text)
    wrong = client.post("/lawful-portal/status", data={"csrf": csrf, "request_id": rid,
                                                       "key": "guess"})
    unknown = client.post("/lawful-portal/status", data={"csrf": csrf, "request_id": "lr_nope",
                                                         "key": "guess"})
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.text == unknown.text
    assert client.post("/lawful-portal/submit", data=_fields()).status_code == 403
    other = TestClient(client.app)
    assert other.post("/lawful-portal/submit",  # another browser's token: no cookie
                      data={"csrf": csrf, **_fields()}).status_code == 403
    page = TestClient(client.app).get("/lawful-portal/")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/lawful-portal" in cookie


def test_an_invalid_form_records_nothing_and_says_why(node: TestClient) -> None:
    client, safety = node, _safety(node)
    form = client.get("/lawful-portal/")
    for bad, why in (
        ({"country": "USA"}, "the country"),
        ({"country": "1X"}, "ISO 3166-1"),
        ({"kind": "emergency", "due": ""}, "justification"),
        ({"due": "31/01/2099"}, "YYYY-MM-DD"),
        ({"officer_email": "not-an-address"}, "name@domain"),
    ):
        page = client.post("/lawful-portal/submit",
                           data={"csrf": _csrf(form.text), **_fields(**bad)})
        assert page.status_code == 400 and why in page.text, (bad, page.text[-800:])
        assert "Dana Scully" in page.text  # the form again, as filled in
    assert safety.lawful.repository.all() == []
    assert not list(Path(safety.lawful.mailer.directory).glob("*.eml"))  # type: ignore[union-attr]


def test_the_portal_is_rate_limited_per_address(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", rate_lawful_portal_per_hour=2,
                         lawful={"domains": ["fbi.gov"]})
    with TestClient(create_app(config)) as client:
        form = client.get("/lawful-portal/")
        answers = [client.post("/lawful-portal/submit",
                               data={"csrf": _csrf(form.text), **_fields()}).status_code
                   for _ in range(3)]
    assert answers == [200, 200, 429]
