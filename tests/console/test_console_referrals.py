"""The referral pages (issue 11): legal prepares a referral from a referred case, a lead
approves it, legal submits it to the local CyberTipline server, all through the console's
forms (CSRF, permission-checked, audited); the page shows the hold and the truthful
"viewed" flags; a reviewer sees no referral page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.safety.conftest import direct_chat, submission
from tests.support.cybertip_server import CyberTiplineServer
from tidings.safety.case_model import DecisionKind
from tidings.safety.categories import QueueId
from tidings.safety.cybertip_client import ReferralConfig
from tidings.safety.reports import AttachmentReveal
from tidings.safety.staff import Role

from .conftest import Seeded, csrf_of, login, make_client, png


@pytest.fixture
def server() -> Iterator[CyberTiplineServer]:
    srv = CyberTiplineServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def referred_case(s: Seeded) -> str:
    """A CSE report with two images, the first viewed by the reviewer; confirmed for
    referral by cleo (reviewer) and cara (lead)."""
    world = s.world
    world.now = s.clock.now
    chat = direct_chat(world.server, "eve", "carol")
    pointers = [chat.upload(png(rgb=(10, 200, 90))), chat.upload(png(rgb=(90, 20, 200)))]
    item = chat.send(("eve", 1), [("carol", 1)], "x",
                     attachments=tuple(p for p, _ in pointers)).to("carol", 1)
    reveals = tuple(AttachmentReveal(0, i, key) for i, (_, key) in enumerate(pointers))
    receipt = world.intake.submit(
        submission(("carol", 1), [item], category="child_sexual_exploitation",
                   attachments=reveals),
        now_ms=world.now,
    )
    cleo, cara = s.staff["cleo"], s.staff["cara"]
    first = min(
        (r for r in world.evidence_repo.evidence_for_report(receipt.report_id)
         if r.kind.startswith("attachment:")),
        key=lambda r: r.kind,
    )
    queue = world.cases.queue_for_case(cleo, receipt.case_id)
    world.vault.open(first.evidence_id, principal=cleo, queue=queue, case_id=receipt.case_id,
                     purpose="review", now_ms=world.now)
    world.cases.claim(cleo, receipt.case_id, now_ms=world.now)
    world.cases.decide(cleo, receipt.case_id, kind=DecisionKind.ESCALATE_REFERRAL,
                       policy_id="CSE-1", reason="known material", now_ms=world.now)
    world.cases.claim(cara, receipt.case_id, now_ms=world.now)
    world.cases.confirm(cara, receipt.case_id, reason="agree", now_ms=world.now)
    return receipt.case_id


def test_prepare_approve_submit_through_the_console(
    seeded: Seeded, server: CyberTiplineServer
) -> None:
    s = seeded
    s.world.make_staff("lou", Role.LEGAL, child_safety=True, queues=(QueueId.CHILD_SAFETY,))
    service = s.context.referrals
    assert service is not None
    service.config = ReferralConfig(
        url=server.url, username=server.username, password=server.password,
        timeout_s=2.0, backoff_s=0.0, max_backoff_s=0.0,
    )
    case_id = referred_case(s)

    with make_client(s) as c:
        csrf = login(c, s, "lou")
        page = c.get("/console/referrals")
        assert page.status_code == 200 and 'id="prepare-referral"' in page.text
        r = c.post("/console/referrals/prepare", data={"csrf": csrf, "case_id": case_id})
        assert r.status_code == 303, r.text
        path = r.headers["location"].split("?")[0].removeprefix("http://testserver")
        referral_id = path.rsplit("/", 1)[-1]
        page = c.get(path)
        assert page.status_code == 200
        assert "waits for a second person" in page.text
        assert ">Approve<" not in page.text  # the preparer is offered no approval
        assert ">Submit to NCMEC<" not in page.text  # nor a submission before it
        files = re.findall(r"<td>(yes|no)</td>\s*<td>(?:yes|no)</td>", page.text)
        assert files == ["yes", "no"]  # viewed: the first file only
        r = c.post(f"{path}/approve", data={"csrf": csrf})
        assert r.status_code == 409 and "cannot approve" in r.text  # the same person
        r = c.post(f"{path}/submit", data={"csrf": csrf})
        assert r.status_code == 409 and server.opened == 0
        r = c.post(f"{path}/submit", data={"csrf": "0" * 64})
        assert r.status_code == 403 and server.opened == 0  # no CSRF token, nothing sent

    with make_client(s) as c:
        csrf = login(c, s, "cara")
        page = c.get(path)
        assert ">Approve<" in page.text and ">Submit to NCMEC<" not in page.text
        assert c.post(f"{path}/approve", data={"csrf": csrf}).status_code == 303
        r = c.post(f"{path}/submit", data={"csrf": csrf})
        assert r.status_code == 403  # a lead approves; legal submits

    with make_client(s) as c:
        csrf = login(c, s, "lou")
        page = c.get(path)
        r = c.post(f"{path}/submit", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303, r.text
        page = c.get(r.headers["location"].removeprefix("http://testserver"))
        assert "Referral submitted to NCMEC" in page.text
        assert re.search(r'id="referral-state">finished<', page.text)
        assert 'id="referral-hold">—' not in page.text
    assert server.opened == 1 and len(server.finished()) == 1
    audit = [(r.actor, r.action) for r in s.world.audit_repo.rows]
    lou = s.account("lou").staff_id
    assert (lou, "referral.prepare") in audit and (lou, "referral.submitted") in audit
    assert (s.staff["cara"].staff_id, "referral.approve") in audit
    assert (lou, "referral.view") in audit
    assert referral_id in {t.split(":", 1)[1] for t in (r.target for r in s.world.audit_repo.rows)
                           if t.startswith("referral:")}


def test_reviewers_see_no_referral_page(seeded: Seeded) -> None:
    with make_client(seeded) as c:
        login(c, seeded, "cleo")
        assert c.get("/console/referrals").status_code == 403
        assert "/referrals" not in c.get("/console/preferences").text
