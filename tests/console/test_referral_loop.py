"""Issue 11's referral proof, in a real browser on the real composed app: a user reports an
image as child sexual exploitation; in Chromium a cleared reviewer reveals it and proposes a
referral, a lead confirms it, legal prepares the CyberTipline report from the case, a second
legal officer approves it, and the first submits it to a local server implementing NCMEC's
documented API — which ends up with exactly one finished report holding the file (MD5 as
sent, "viewed by the provider" true because the reviewer revealed it). The one-year hold is
visible on the case page, and an evidence purge long after the normal retention leaves the
referred evidence while it deletes an unheld report's.

The node is configured through its ``[referrals]`` table (`ServerConfig.referrals`). Skips when
/usr/bin/chromium or Playwright is missing, except under CI=true where it fails. Screenshots go
to ``screenshots/console/referral-*.png``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.console.test_full_loop import (  # noqa: F401 - browser: the shared fixture
    PASS,
    STAFF_PASSWORD,
    Live,
    browser,
    live_node,
    run,
    sign_in,
)
from tests.support.browser import SHOTS
from tests.support.cybertip_server import CyberTiplineServer
from tests.support.staff import active_staff
from tidings.client.sdk import Client
from tidings.client.store import KdfParams
from tidings.clock import DAY_MS
from tidings.safety.categories import QueueId


def _photo() -> bytes:
    import skimage.data
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(skimage.data.astronaut())).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def clearinghouse() -> Iterator[CyberTiplineServer]:
    server = CyberTiplineServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live(tmp_path: Path, clearinghouse: CyberTiplineServer) -> Iterator[Live]:
    referrals = {
        "url": clearinghouse.url,
        "username": clearinghouse.username,
        "password": clearinghouse.password,
        "timeout_s": 10.0,
        "reporter": {"email": "safety@tidings.example", "first_name": "Trust"},
    }
    with live_node(tmp_path / "server", referrals=referrals) as node:
        yield node


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"referral-{name}.png"), full_page=True)


def test_report_to_cybertipline_referral_with_two_people_and_a_hold(
    live: Live, browser: Any, clearinghouse: CyberTiplineServer, tmp_path: Path  # noqa: F811
) -> None:
    console = f"{live.url}/console"
    kdf = KdfParams.fast_for_tests()
    photo = tmp_path / "photo.png"
    photo.write_bytes(_photo())
    safety = live.safety
    safety.vault.retention_ms = DAY_MS  # so that the hold, not the retention, keeps it

    async def messaging() -> tuple[str, str]:
        mallory = await Client.register(tmp_path / "m", PASS, "mallory", live.url, kdf=kdf,
                                        prekey_count=10)
        bob = await Client.register(tmp_path / "b", PASS, "bob", live.url, kdf=kdf,
                                    prekey_count=10)
        trudy = await Client.register(tmp_path / "t", PASS, "trudy", live.url, kdf=kdf,
                                      prekey_count=10)
        try:
            await mallory.send_file("bob", photo, caption="look", content_type="image/png")
            await trudy.send_text("bob", "cheap watches")  # the control: another account
            await bob.poll()
            got = {m.body: m for m in bob.messages() if m.direction == "in"}
            cse = await bob.report(got["look"].id, "child_sexual_exploitation", context=0)
            spam = await bob.report(got["cheap watches"].id, "spam", context=0)
            return str(cse["case_id"]), str(spam["case_id"])
        finally:
            for client in (mallory, bob, trudy):
                await client.aclose()

    case_id, control_case = run(messaging())
    cse = [QueueId.CHILD_SAFETY]
    staff = {
        name: active_staff(safety, name, [role], queues=cse, child_safety=True,
                           password=STAFF_PASSWORD)
        for name, role in (("cleo", "reviewer"), ("lena", "lead"), ("lou", "legal"),
                           ("liz", "legal"))
    }

    # --- the reviewer reveals the image and proposes a referral; a lead confirms -----------
    cleo = sign_in(browser, console, "cleo", staff["cleo"].totp_secret)
    cleo.goto(f"{console}/cases/{case_id}")
    cleo.get_by_text("Reveal media").click()
    cleo.get_by_role("button", name="Claim case").click()
    cleo.wait_for_url(f"{console}/cases/{case_id}?done=claimed")
    cleo.locator("#kind-escalate_referral").check()
    cleo.get_by_label("Policy").select_option("CSE-1")
    cleo.get_by_label("Reason (required", exact=False).fill("Known abuse material.")
    cleo.locator("#decide").click()
    cleo.wait_for_url(f"{console}/cases/{case_id}?done=proposed")
    lena = sign_in(browser, console, "lena", staff["lena"].totp_secret)
    lena.goto(f"{console}/cases/{case_id}")
    lena.get_by_role("button", name="Claim case").click()
    lena.get_by_label("Your reason (required)").fill("Agreed: refer.")
    lena.locator("#confirm").click()
    lena.wait_for_url(f"{console}/cases/{case_id}?done=confirmed")

    # --- legal prepares; the preparer cannot approve; a second legal officer approves ------
    lou = sign_in(browser, console, "lou", staff["lou"].totp_secret)
    lou.goto(f"{console}/cases/{case_id}")
    lou.locator("#prepare-referral").click()
    lou.wait_for_url(f"{console}/referrals/*")
    referral_url = lou.url.split("?")[0]
    shot(lou, "01-prepared")
    assert lou.get_by_role("button", name="Approve").count() == 0  # not the preparer's
    liz = sign_in(browser, console, "liz", staff["liz"].totp_secret)
    liz.goto(referral_url)
    liz.get_by_role("button", name="Approve").click()
    liz.wait_for_load_state()
    lou.goto(referral_url)
    lou.get_by_role("button", name="Submit to NCMEC").click()
    lou.wait_for_load_state()
    assert "finished" in lou.locator("#referral-state").inner_text()
    shot(lou, "02-submitted")

    # --- the clearinghouse holds exactly one finished report with the file -----------------
    assert clearinghouse.opened == 1
    (report,) = clearinghouse.finished()
    (stored,) = report.files.values()
    assert hashlib.md5(stored.data).hexdigest() == hashlib.md5(photo.read_bytes()).hexdigest()
    assert stored.details is not None and b"<fileViewedByEsp>true" in stored.details

    # --- the hold is visible on the case, and a purge leaves the held evidence -------------
    lou.goto(f"{console}/cases/{case_id}")
    assert lou.locator("#preservation").get_by_text("Held").is_visible()
    shot(lou, "03-case-held")
    def evidence_of(case: str) -> list[str]:
        return [
            e.evidence_id
            for r in safety.report_repo.reports_for_case(case)
            for e in safety.evidence_repo.evidence_for_report(r.report_id)
        ]

    referred, control = evidence_of(case_id), evidence_of(control_case)
    assert control_case != case_id
    assert len(referred) >= 2 and control  # the messages and the image; the spam message
    purged = safety.vault.purge_expired(now_ms=safety.clock() + 2 * DAY_MS)
    assert purged == len(control)
    assert evidence_of(control_case) == [] and evidence_of(case_id) == referred
