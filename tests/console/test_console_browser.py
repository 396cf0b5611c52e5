"""The console in a real browser: Playwright (sync API) driving Debian's Chromium against a
real uvicorn server. Sign in with TOTP, open a queue, open a case, reveal blurred media, decide
(a ban confirmed by a second reviewer), see the enforcement and the audit entry; a role that may
not do something is refused. Screenshots of the main pages go to ``screenshots/console/``.

Skips when /usr/bin/chromium or Playwright is missing, except under CI=true where it fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.support.browser import SHOTS, chromium, require_chromium
from tests.support.live import serving
from tests.support.staff import PASSWORD
from tidings.console import build_console
from tidings.safety.cases import EnforcementKind
from tidings.safety.staff import Role

from .conftest import Seeded, seed, with_lawful


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, Seeded]]:
    require_chromium()
    s = seed(time.time_ns() // 1_000_000)
    s.clock.now = 0  # unused: the server runs on the real clock
    with_lawful(s, clock=lambda: time.time_ns() // 1_000_000)
    console = build_console(s.context, secret=os.urandom(32), secure_cookies=False)
    app = Starlette(routes=[Mount("/console", app=console)])
    with serving(app, lifespan="off") as url:
        yield f"{url}/console", s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def sign_in(browser: Any, base: str, s: Seeded, username: str) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{base}/login/totp")
    account = s.account(username)
    step = s.world.totp.step(time.time_ns() // 10**6)
    if account.totp_last_step >= step:  # signed in this step already: the next code (skew)
        step = account.totp_last_step + 1
    code = s.world.totp.code_at(account.totp_secret, step)
    page.get_by_label("Authentication code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[-500:]
    return page


def media_filter(page: Any) -> str:
    return str(page.eval_on_selector("img.evidence-media", "el => getComputedStyle(el).filter"))


def test_review_reveal_ban_with_second_reviewer_and_audit(
    live: tuple[str, Seeded], browser: Any
) -> None:
    base, s = live
    # The sign-in page itself.
    login_page = browser.new_page()
    login_page.goto(f"{base}/login")
    login_page.screenshot(path=str(SHOTS / "01-login.png"))
    login_page.close()

    rita = sign_in(browser, base, s, "rita")
    assert rita.url.endswith("/console/queues")
    assert rita.get_by_role("link", name="Harassment").is_visible()
    assert rita.get_by_text("Child safety").count() == 0  # not cleared
    rita.screenshot(path=str(SHOTS / "02-queues.png"), full_page=True)

    rita.get_by_role("link", name="Harassment").click()
    rita.wait_for_url(f"{base}/queues/harassment")
    rita.screenshot(path=str(SHOTS / "03-queue.png"), full_page=True)
    rita.get_by_role("link", name=s.harassment_case).click()
    rita.wait_for_url(f"{base}/cases/{s.harassment_case}")
    assert rita.get_by_text("I know where you live").is_visible()
    assert rita.locator(".badge.ok", has_text="franking verified").count() == 3

    # Media: blurred and greyscale by default; reveal, count the exposure, blur all again.
    assert "blur" in media_filter(rita) and "grayscale" in media_filter(rita)
    rita.screenshot(path=str(SHOTS / "04-case-blurred.png"), full_page=True)
    rita.get_by_text("Reveal media").click()
    rita.wait_for_function(
        "() => !getComputedStyle(document.querySelector('img.evidence-media'))"
        ".filter.includes('blur')"
    )
    assert "grayscale" in media_filter(rita)
    rita.wait_for_function("() => document.getElementById('exposure-count').textContent === '1'")
    rita.screenshot(path=str(SHOTS / "05-case-revealed.png"), full_page=True)
    rita.keyboard.press("z")
    assert "blur" in media_filter(rita)

    # Keyboard: claim, choose "ban", then policy + reason; submit with Ctrl+Enter.
    rita.locator("body").focus()
    rita.keyboard.press("c")
    rita.wait_for_url(f"{base}/cases/{s.harassment_case}?done=claimed")
    rita.keyboard.press("b")
    assert rita.locator("#kind-ban").is_checked()
    rita.get_by_label("Policy").select_option("HAR-1")
    rita.get_by_label("Reason (required", exact=False).fill("Repeated threats with an image.")
    rita.screenshot(path=str(SHOTS / "06-decision-form.png"), full_page=True)
    rita.keyboard.press("Control+Enter")
    rita.wait_for_url(f"{base}/cases/{s.harassment_case}?done=proposed")
    assert rita.get_by_text("Awaiting second review").is_visible()
    assert not s.world.cases.active_enforcements("mallory", now_ms=time.time_ns() // 10**6)

    # A reviewer may not confirm, nor manage staff: refused.
    assert rita.get_by_role("button", name="Confirm ban").count() == 0
    response = rita.goto(f"{base}/staff")
    assert response is not None and response.status == 403
    assert rita.get_by_role("heading", name="Not allowed").is_visible()
    rita.screenshot(path=str(SHOTS / "07-refused.png"))

    # The second reviewer (a lead) confirms.
    lee = sign_in(browser, base, s, "lee")
    lee.goto(f"{base}/cases/{s.harassment_case}")
    lee.get_by_role("button", name="Claim case").click()
    lee.wait_for_url(f"{base}/cases/{s.harassment_case}?done=claimed")
    lee.get_by_label("Your reason (required)").fill("Agree: clear threats.")
    lee.get_by_role("button", name="Confirm ban").click()
    lee.wait_for_url(f"{base}/cases/{s.harassment_case}?done=confirmed")
    # The enforcement is in effect, on the page and in the domain.
    assert lee.locator("#hist-title + ol").get_by_text("active").is_visible()
    [enforcement] = s.world.cases.active_enforcements("mallory", now_ms=time.time_ns() // 10**6)
    assert enforcement.kind is EnforcementKind.BAN
    lee.screenshot(path=str(SHOTS / "08-case-banned.png"), full_page=True)

    # The audit log shows the confirmation, and the chain verifies.
    lee.get_by_role("link", name="Audit log").click()
    lee.wait_for_url(f"{base}/audit")
    assert lee.locator("#chain-status").get_by_text("Chain verified").is_visible()
    assert lee.get_by_text("case.decision_confirm").first.is_visible()
    assert lee.get_by_text("evidence.view").first.is_visible()
    lee.screenshot(path=str(SHOTS / "09-audit.png"), full_page=True)

    # Staff management (admin); the admin cannot open the case.
    root = sign_in(browser, base, s, "root")
    root.goto(f"{base}/staff")
    assert root.get_by_role("heading", name="Staff accounts").is_visible()
    root.screenshot(path=str(SHOTS / "10-staff.png"), full_page=True)
    response = root.goto(f"{base}/cases/{s.harassment_case}")
    assert response is not None and response.status == 403


def test_new_staff_enrol_through_their_link_and_a_second_admin_approves(
    live: tuple[str, Seeded], browser: Any
) -> None:
    """Issue 7: the creator sees a link, not a secret; the owner sets the password and enrols
    the authenticator themself; the requester cannot approve the role, another admin can."""
    base, s = live
    root = sign_in(browser, base, s, "root")
    root.goto(f"{base}/staff")
    assert root.locator("#new-password").count() == 0  # no creator-chosen password
    root.get_by_label("Username").fill("nora")
    root.locator("input[name=roles][value=reviewer]").last.check()
    root.get_by_role("button", name="Create account").click()
    link = root.get_by_role("textbox", name="Enrolment link").input_value()
    assert "/console/enrol/" in link
    assert "otpauth" not in root.content() and "Secret key" not in root.content()
    root.screenshot(path=str(SHOTS / "11-staff-created.png"), full_page=True)

    owner = browser.new_context(viewport={"width": 1000, "height": 800}).new_page()
    owner.set_default_timeout(15_000)
    owner.goto(link)
    owner.get_by_label("New password", exact=True).fill(PASSWORD)
    owner.get_by_label("New password, again").fill(PASSWORD)
    owner.get_by_role("button", name="Continue").click()
    secret = owner.get_by_label("Secret key").input_value()
    assert secret and "otpauth://totp/" in owner.get_by_label("Or the otpauth link").input_value()
    owner.screenshot(path=str(SHOTS / "12-enrol-totp.png"), full_page=True)
    step = s.world.totp.step(time.time_ns() // 10**6) - 1  # so the sign-in below is fresh
    owner.get_by_label("Authentication code").fill(s.world.totp.code_at(secret, step))
    owner.get_by_role("button", name="Finish enrolment").click()
    assert owner.get_by_text("Enrolment complete").is_visible()
    owner.goto(link)  # single use
    assert owner.get_by_text("This enrolment link cannot be used").is_visible()

    root.goto(f"{base}/staff")
    row = root.locator("table.grants tr", has_text="nora")
    assert row.get_by_text("a different admin must approve it").is_visible()
    other = sign_in(browser, base, s, "root2")
    other.goto(f"{base}/staff")
    grants = other.locator("table.grants tr", has_text="nora")
    other.screenshot(path=str(SHOTS / "13-pending-grants.png"), full_page=True)
    grants.get_by_role("button", name="Approve").click()
    other.wait_for_url(f"{base}/staff?done=approved")
    assert s.account("nora").roles == {Role.REVIEWER}
    nora = sign_in(browser, base, s, "nora")
    assert "/login" not in nora.url


def test_legal_takes_a_lawful_request_in_and_verifies_it_by_keyboard(
    live: tuple[str, Seeded], browser: Any
) -> None:
    base, s = live
    lena = sign_in(browser, base, s, "lena")
    lena.get_by_role("link", name="Lawful requests").click()
    lena.wait_for_url(f"{base}/lawful")
    lena.get_by_label("Agency").fill("FBI Field Office")
    lena.get_by_label("Officer's name").fill("Dana Scully")
    lena.get_by_label("Officer's official e-mail").fill("dscully@fbi.gov")
    lena.get_by_label("Country", exact=False).fill("US")
    lena.get_by_label("Case number").fill("2026-FO-118")
    lena.get_by_label("Legal basis, as written").fill("18 U.S.C. 2703(c)(2) subpoena")
    lena.get_by_label("Type").select_option("subpoena")
    lena.get_by_label("Account").fill("mule")
    lena.get_by_label("Subscriber", exact=False).check()
    due = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 10 * 86_400))
    lena.get_by_label("Due date", exact=False).fill(due)
    lena.screenshot(path=str(SHOTS / "20-lawful-intake.png"), full_page=True)
    lena.get_by_role("button", name="Take the request in").click()
    lena.wait_for_url(f"{base}/lawful/new")
    token = lena.locator("#token-value").inner_text()
    assert len(token) >= 40 and token not in lena.url
    lena.screenshot(path=str(SHOTS / "21-lawful-token.png"), full_page=True)
    # Keyboard only: type the token into its field and press Enter.
    lena.get_by_label("Verification token the requester presented").focus()
    lena.keyboard.type(token)
    lena.keyboard.press("Enter")
    lena.wait_for_url("**done=lawful_verified")
    assert lena.locator("#lawful-state").inner_text() == "verified"
    assert token not in lena.content()
    lena.screenshot(path=str(SHOTS / "22-lawful-request.png"), full_page=True)
