"""The holds page: legal places a hold for a preservation request, sees it with what it froze,
extends and releases it (each audited under them, CSRF-protected forms); bad input is a typed
error page with nothing changed; other roles are refused."""

from __future__ import annotations

from dataclasses import replace

from tests.console.conftest import Seeded, csrf_of, login, make_client
from tests.console.test_console_http import actions
from tidings.safety.audit import AuditAction
from tidings.safety.holds import (
    HoldKind,
    HoldService,
    InMemoryHoldRepository,
    InMemorySubjectRecords,
)


def _with_holds(s: Seeded) -> HoldService:
    subjects = InMemorySubjectRecords()
    subjects.accounts["mule"] = {"created_at_ms": 1, "devices": [{"device_id": 1}]}
    subjects.attachments["A" * 43] = {"account": "mule", "size": 10, "created_at_ms": 1,
                                      "expires_at_ms": 2}
    service = HoldService(InMemoryHoldRepository(), s.world.audit, subjects, clock=s.clock)
    s.context = replace(s.context, holds=service)
    return service


def test_legal_places_extends_and_releases_a_hold(seeded: Seeded) -> None:
    service = _with_holds(seeded)
    with make_client(seeded) as client:
        csrf = login(client, seeded, "lena")
        page = client.get("/console/holds")
        assert page.status_code == 200 and "No holds." in page.text
        r = client.post("/console/holds", data={"csrf": csrf_of(page.text), "account": "mule",
                                                 "reference": "FBI case 77", "days": "90"})
        assert r.status_code == 303, r.text
        (hold,) = service.repository.all()
        page = client.get("/console/holds?done=hold_placed")
        assert f'id="hold-{hold.hold_id}"' in page.text
        assert "account, 1 device(s), 1 attachment(s)" in page.text and "active" in page.text
        r = client.post(f"/console/holds/{hold.hold_id}/extend", data={"csrf": csrf,
                                                                      "days": "200"})
        assert r.status_code == 303
        r = client.post(f"/console/holds/{hold.hold_id}/release", data={"csrf": csrf,
                                                                       "reason": ""})
        assert r.status_code == 400  # a reason is required; nothing changed
        assert service.repository.get(hold.hold_id).released_ms is None  # type: ignore[union-attr]
        r = client.post(f"/console/holds/{hold.hold_id}/release",
                        data={"csrf": csrf, "reason": "request withdrawn"})
        assert r.status_code == 303
        assert "released" in client.get("/console/holds").text
    who = seeded.staff["lena"].staff_id
    for action in (AuditAction.HOLD_PLACE, AuditAction.HOLD_EXTEND, AuditAction.HOLD_RELEASE,
                   AuditAction.HOLD_VIEW):
        assert actions(seeded, action, who), action


def test_bad_days_and_other_roles_are_refused(seeded: Seeded) -> None:
    service = _with_holds(seeded)
    with make_client(seeded) as client:
        csrf = login(client, seeded, "lena")
        r = client.post("/console/holds", data={"csrf": csrf, "account": "mule",
                                                 "reference": "x", "days": "ninety"})
        assert r.status_code == 400 and service.repository.all() == []
    with make_client(seeded) as client:
        login(client, seeded, "rita")
        assert client.get("/console/holds").status_code == 403


def test_the_case_page_shows_the_accounts_hold(seeded: Seeded) -> None:
    service = _with_holds(seeded)
    case = seeded.world.case_repo.get_case(seeded.harassment_case)
    assert case is not None
    service.place(seeded.staff["lena"], case.subject, HoldKind.PRESERVATION_REQUEST, days=90,
                  reference="Met Police 9")
    with make_client(seeded) as client:
        login(client, seeded, "lena")
        page = client.get(f"/console/cases/{seeded.harassment_case}")
    assert page.status_code == 200, page.text
    assert 'id="preservation"' in page.text and "Met Police 9" in page.text
    assert f'href="/console/holds?account={case.subject}"' in page.text
    with make_client(seeded) as client:
        login(client, seeded, "rita")  # a reviewer sees the hold, not the holds page link
        page = client.get(f"/console/cases/{seeded.harassment_case}")
    assert "Met Police 9" in page.text and "/console/holds?" not in page.text
