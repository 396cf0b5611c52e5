"""The whole trust & safety loop on the real composed app (`create_app` under uvicorn): two
users of the real SDK, an abusive message with an image reported with context; a reviewer and
a lead (created through the app's own SafetyService) sign in to the console in Chromium with
password + TOTP, review the franking-verified evidence, reveal the blurred image, propose and
confirm a ban; then the ban is in effect on the messaging API (403 ``account_banned``, banned in
``GET /v1/account/status``, the name reserved) and the audit log shows the decision with a
verified chain. A reviewer without the lead role is refused when confirming.

Skips when /usr/bin/chromium or Playwright is missing, except under CI=true where it fails.
Screenshots go to ``screenshots/console/full-loop-*.png``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyotp
import pytest

from tests.support.browser import SHOTS, chromium, require_chromium
from tests.support.live import LiveServer
from tests.support.staff import active_staff
from tidings.client.errors import ServerError
from tidings.client.sdk import Client
from tidings.client.store import KdfParams
from tidings.safety.categories import QueueId
from tidings.safety.service import SafetyService
from tidings.server.config import ServerConfig

from .conftest import png

T = TypeVar("T")
PASS = "profile passphrase"
STAFF_PASSWORD = "correct horse battery staple"
ABUSE = "I know where you live, look at this"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an SDK coroutine to completion on its own thread: Playwright's sync API keeps an
    event loop running on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


@dataclass
class Live:
    url: str
    app: Any
    data_dir: Path

    @property
    def safety(self) -> SafetyService:
        service: SafetyService = self.app.state.safety
        return service


@contextmanager
def live_node(data_dir: Path, **settings: Any) -> Iterator[Live]:
    """The real composed app (messaging API, /v1/reports, console, portal) on a free port,
    with rate limits only the rate-limit tests meet and ``settings`` (a `ServerConfig`
    field each); needs Chromium (the browser tests' precondition)."""
    require_chromium()
    config = ServerConfig(
        data_dir=data_dir,
        rate_registrations_per_hour=100_000,
        rate_prekey_fetches_per_minute=100_000,
        rate_sends_per_minute=100_000,
        **settings,
    )
    server = LiveServer(config).start()
    try:
        yield Live(server.url, server.app, config.data_dir)
    finally:
        server.stop()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_node(tmp_path / "server") as node:
        yield node


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"full-loop-{name}.png"), full_page=True)


def sign_in(browser: Any, console: str, username: str, totp_secret: str) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{console}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{console}/login/totp")
    page.get_by_label("Authentication code").fill(pyotp.TOTP(totp_secret).now())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[-500:]
    return page


def media_filter(page: Any) -> str:
    return str(page.eval_on_selector("img.evidence-media", "el => getComputedStyle(el).filter"))


def test_report_review_ban_enforced_on_messaging_api(
    live: Live, browser: Any, tmp_path: Path
) -> None:
    console = f"{live.url}/console"
    kdf = KdfParams.fast_for_tests()

    # --- 1. Messaging: alice harasses bob (text + an image); bob reports with context. ------
    image = tmp_path / "threat.png"
    image.write_bytes(png())

    async def messaging() -> dict[str, Any]:
        alice = await Client.register(
            tmp_path / "alice", PASS, "alice", live.url, kdf=kdf, prekey_count=10
        )
        bob = await Client.register(
            tmp_path / "bob", PASS, "bob", live.url, kdf=kdf, prekey_count=10
        )
        try:
            await alice.send_text("bob", "hey")
            await alice.send_text("bob", "answer me")
            await alice.send_file("bob", image, caption=ABUSE, content_type="image/png")
            await alice.send_text("bob", "you can't hide")
            await bob.poll()
            received = {m.body: m for m in bob.messages("alice") if m.direction == "in"}
            assert set(received) == {"hey", "answer me", ABUSE, "you can't hide"}
            answer = await bob.report(
                received[ABUSE].id, "harassment", context=2, note="this keeps happening"
            )
            assert answer["items"] == 4 and answer["case_id"]
            assert (await alice.account_status())["status"] == "active"
            return answer
        finally:
            await alice.aclose()
            await bob.aclose()

    case_id = run(messaging())["case_id"]

    # --- 2. Staff, through the app's own SafetyService (as `tidings admin` would). ---------
    safety = live.safety
    # Created by the operator, enrolled by their owners, roles approved by the first admin.
    staff = {
        name: active_staff(
            safety, name, [role], queues=[QueueId.HARASSMENT], password=STAFF_PASSWORD
        )
        for name, role in (("rita", "reviewer"), ("rob", "reviewer"), ("lee", "lead"))
    }

    # --- 3. The reviewer: queue, case, evidence, reveal, claim, propose a ban. --------------
    rita = sign_in(browser, console, "rita", staff["rita"].totp_secret)
    assert rita.url.endswith("/console/queues")
    rita.get_by_role("link", name="Harassment").click()
    rita.wait_for_url(f"{console}/queues/harassment")
    shot(rita, "01-queue")
    rita.get_by_role("link", name=case_id).click()
    rita.wait_for_url(f"{console}/cases/{case_id}")
    assert rita.get_by_text(ABUSE).is_visible()
    assert rita.get_by_text("you can't hide").is_visible()
    assert rita.locator(".badge.ok", has_text="franking verified").count() == 4
    assert rita.locator(".badge.bad").count() == 0
    assert "blur" in media_filter(rita)
    shot(rita, "02-case-blurred")
    rita.get_by_text("Reveal media").click()
    rita.wait_for_function(
        "() => !getComputedStyle(document.querySelector('img.evidence-media'))"
        ".filter.includes('blur')"
    )
    # The decrypted image really renders (the attachment came from the server's store).
    assert rita.eval_on_selector("img.evidence-media", "el => el.naturalWidth") == 48
    shot(rita, "03-case-revealed")

    rita.get_by_role("button", name="Claim case").click()
    rita.wait_for_url(f"{console}/cases/{case_id}?done=claimed")
    rita.locator("#kind-ban").check()
    rita.get_by_label("Policy").select_option("HAR-1")
    rita.get_by_label("Reason (required", exact=False).fill("Threats with an image, repeated.")
    shot(rita, "04-decision-form")
    rita.locator("#decide").click()
    rita.wait_for_url(f"{console}/cases/{case_id}?done=proposed")
    assert rita.get_by_text("Awaiting second review").is_visible()
    assert rita.get_by_role("button", name="Confirm ban").count() == 0

    async def status_of(name: str) -> dict[str, Any]:
        client = Client.open(tmp_path / name, PASS)
        try:
            return await client.account_status()
        finally:
            await client.aclose()

    assert run(status_of("alice"))["status"] == "active"  # a proposal enforces nothing

    # --- 4. A second reviewer without the lead role cannot confirm: refused. ----------------
    rob = sign_in(browser, console, "rob", staff["rob"].totp_secret)
    rob.goto(f"{console}/cases/{case_id}")
    assert rob.get_by_role("button", name="Confirm ban").count() == 0
    csrf = rob.locator("input[name=csrf]").first.get_attribute("value")
    refused = rob.request.post(
        f"{console}/cases/{case_id}/confirm",
        form={"csrf": csrf, "reason": "looks fine to me"},
        max_redirects=0,
    )
    assert refused.status == 403, refused.text()[-300:]
    assert run(status_of("alice"))["status"] == "active"

    # --- 5. The lead confirms: the ban is enforced. ------------------------------------------
    lee = sign_in(browser, console, "lee", staff["lee"].totp_secret)
    lee.goto(f"{console}/cases/{case_id}")
    lee.get_by_role("button", name="Claim case").click()
    lee.wait_for_url(f"{console}/cases/{case_id}?done=claimed")
    lee.get_by_label("Your reason (required)").fill("Agree: clear threats.")
    lee.get_by_role("button", name="Confirm ban").click()
    lee.wait_for_url(f"{console}/cases/{case_id}?done=confirmed")
    assert lee.locator("#hist-title + ol").get_by_text("active").is_visible()
    shot(lee, "05-case-banned")

    # --- 6. Enforcement on the messaging API, through the real SDK. -------------------------
    async def enforcement() -> None:
        alice = Client.open(tmp_path / "alice", PASS)
        bob = Client.open(tmp_path / "bob", PASS)
        try:
            with pytest.raises(ServerError) as banned:
                await alice.send_text("bob", "still here")
            assert (banned.value.status, banned.value.code) == (403, "account_banned")
            status = await alice.account_status()
            assert status["status"] == "banned" and status["policy"] == "HAR-1"
            assert "Threats with an image" not in str(status)  # reasoning stays internal
            assert (await bob.account_status())["status"] == "active"
            await bob.send_text("alice", "bob is unaffected")
        finally:
            await alice.aclose()
            await bob.aclose()
        with pytest.raises(ServerError) as taken:
            await Client.register(tmp_path / "alice2", PASS, "alice", live.url, kdf=kdf,
                                  prekey_count=10)
        assert taken.value.code == "username_taken"

    run(enforcement())

    # --- 7. The audit log: the decision entries, and a verified chain. ----------------------
    lee.get_by_role("link", name="Audit log").click()
    lee.wait_for_url(f"{console}/audit")
    assert lee.locator("#chain-status").get_by_text("Chain verified").is_visible()
    actions = lee.locator("td > code").all_inner_texts()
    for action in ("case.decision", "case.decision_confirm", "evidence.view", "report.accepted"):
        assert action in actions, (action, actions)
    shot(lee, "06-audit")
