"""Issue 11's lawful-request proof, in a real browser on the real composed app: an officer
files a court order in the requester portal, confirms it from the link the node mailed (read
from the node's mail outbox), legal verifies the scope and produces and delivers the package in
the staff console, the officer downloads it from the portal's status page and it verifies
offline (`tidings audit package`), and the account's user is shown the notice. A second
request, under a non-disclosure order, gives its user no notice until the order's end date,
after which the notice goes out by itself (time passed in through the service's clock).

Skips when /usr/bin/chromium or Playwright is missing, except under CI=true where it fails.
Screenshots go to ``screenshots/console/lawful-*.png``.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

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
from tests.support.staff import active_staff
from tidings.cli import cli
from tidings.client.sdk import Client
from tidings.client.store import KdfParams
from tidings.client.tui import lawful_notice_lines
from tidings.clock import DAY_MS
from tidings.crypto.primitives import ed25519_public
from tidings.wire.base64url import b64e


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_node(tmp_path / "server") as node:
        # The portal's own URL for the links (the port is known only now).
        node.safety.lawful.portal_url = f"{node.url}/lawful-portal"
        node.safety.lawful.allowed_domains = frozenset({"fbi.gov"})
        yield node


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"lawful-{name}.png"), full_page=True)


def _last_link(live: Live) -> str:
    outbox = sorted((live.data_dir / "mail-outbox").glob("*.eml"))
    assert outbox, "no verification mail was written"
    mail = email.message_from_bytes(outbox[-1].read_bytes(), policy=email.policy.default)
    assert mail["To"] == "dscully@fbi.gov"
    (link,) = [ln for ln in mail.get_content().splitlines()  # type: ignore[attr-defined]
               if ln.startswith(live.url)]
    return link


def _file_in_portal(page: Any, live: Live, case_number: str, due: datetime) -> str:
    """Fill the portal's form as the officer; the request id."""
    page.goto(f"{live.url}/lawful-portal/")
    page.get_by_label("Agency").fill("FBI Field Office")
    page.get_by_label("Officer's name").fill("Dana Scully")
    page.get_by_label("Official e-mail").fill("dscully@fbi.gov")
    page.get_by_label("Country").fill("US")
    page.get_by_label("Type of request").select_option("court_order")
    page.get_by_label("Your case number").fill(case_number)
    page.get_by_label("Legal basis").fill("18 U.S.C. 2703(d) order, E.D. Va.")
    page.get_by_label("Needed by").fill(due.strftime("%Y-%m-%d"))
    page.get_by_label("The account").fill("target")
    for title in ("Subscriber", "Devices"):
        page.get_by_label(title, exact=False).first.check()
    page.get_by_role("button", name="File the request").click()
    page.wait_for_load_state()
    assert "Check your official e-mail" in page.content()
    return str(page.locator("section strong").first.inner_text())


def _confirm_from_mail(page: Any, live: Live) -> str:
    """Open the mailed link, confirm; the access key shown once."""
    page.goto(_last_link(live))
    page.get_by_role("button", name="Confirm the request").click()
    page.wait_for_load_state()
    return str(page.locator("#access-key").inner_text())


def _legal_handles(legal: Any, console: str, request_id: str, ndo_until: datetime | None) -> None:
    """Legal, in the console: start review, keep the scope, (record the order), produce,
    deliver."""
    legal.goto(f"{console}/lawful/{request_id}")
    legal.get_by_role("button", name="Start legal review").click()
    legal.wait_for_load_state()
    legal.get_by_role("button", name="Scope").click()
    legal.wait_for_load_state()
    if ndo_until is not None:
        legal.get_by_label("End date (UTC", exact=False).fill(ndo_until.strftime("%Y-%m-%d"))
        legal.get_by_label("The order's reference").fill("NDO 26-114 (E.D. Va.)")
        legal.get_by_role("button", name="Record the order").click()
        legal.wait_for_load_state()
    legal.get_by_role("button", name="Produce the signed package").click()
    legal.wait_for_load_state()
    legal.get_by_role("button", name="Record as delivered").click()
    legal.wait_for_load_state()
    assert "delivered" in legal.locator("#lawful-state").inner_text()


def test_portal_request_to_a_verified_package_with_user_notice(
    live: Live, browser: Any, tmp_path: Path  # noqa: F811
) -> None:
    console = f"{live.url}/console"
    safety = live.safety
    kdf = KdfParams.fast_for_tests()

    async def register() -> None:
        target = await Client.register(tmp_path / "t", PASS, "target", live.url, kdf=kdf,
                                       prekey_count=5)
        await target.aclose()

    async def notices() -> list[str]:
        target = Client.open(tmp_path / "t", PASS)
        try:
            return lawful_notice_lines(await target.account_status())
        finally:
            await target.aclose()

    run(register())
    staff = active_staff(safety, "lou", ["legal"], password=STAFF_PASSWORD)
    officer = browser.new_context(viewport={"width": 1200, "height": 900},
                                  accept_downloads=True).new_page()
    officer.set_default_timeout(15_000)

    # --- the officer files and confirms; legal handles it in the console ----------------------
    due = datetime.now(UTC) + timedelta(days=10)
    rid = _file_in_portal(officer, live, "2026-FO-301", due)
    shot(officer, "01-filed")
    key = _confirm_from_mail(officer, live)
    shot(officer, "02-confirmed")
    assert run(notices()) == []
    legal = sign_in(browser, console, "lou", staff.totp_secret)
    legal.goto(f"{console}/lawful")
    assert rid in legal.content()
    _legal_handles(legal, console, rid, ndo_until=None)
    shot(legal, "03-delivered")

    # --- the officer downloads the package; it verifies offline; the user is told ------------
    officer.goto(f"{live.url}/lawful-portal/status")
    officer.get_by_label("Request id").fill(rid)
    officer.get_by_label("Access key").fill(key)
    officer.get_by_role("button", name="Show the request").click()
    officer.wait_for_load_state()
    assert "delivered" in officer.locator("#state").inner_text()
    shot(officer, "04-status")
    with officer.expect_download() as download:
        officer.get_by_role("button", name="Download the package").click()
    archive = tmp_path / download.value.suggested_filename
    download.value.save_as(archive)
    public = b64e(ed25519_public(safety.lawful.signing_key))  # type: ignore[arg-type]
    audited = CliRunner().invoke(cli, ["audit", "package", str(archive), "--json",
                                       "--public-key", public])
    assert audited.exit_code == 0, audited.output
    assert json.loads(audited.stdout)["request_id"] == rid
    (line,) = run(notices())
    assert "FBI Field Office" in line and "US" in line

    # --- under a non-disclosure order: no notice until it ends, then by itself ---------------
    ndo_end = datetime.now(UTC) + timedelta(days=30)
    second = _file_in_portal(officer, live, "2026-FO-302", due)
    _confirm_from_mail(officer, live)
    _legal_handles(legal, console, second, ndo_until=ndo_end)
    shot(legal, "05-ndo-delivered")
    assert len(run(notices())) == 1  # only the first request's
    real_clock = safety.lawful.clock
    safety.lawful.clock = lambda: real_clock() + 31 * DAY_MS  # type: ignore[method-assign]
    try:
        later = run(notices())
    finally:
        safety.lawful.clock = real_clock  # type: ignore[method-assign]
    assert len(later) == 2
