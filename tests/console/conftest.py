"""Console test fixtures: a wired in-memory safety world (real franked, verified reports with a
real image attachment), staff of every role, and the console mounted under /console."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from tests.safety.conftest import World, build_world, direct_chat, submission
from tests.support.staff import PASSWORD
from tidings.console import ConsoleContext, build_console
from tidings.safety.bank_memory import InMemoryBankRepository
from tidings.safety.banks import BankService
from tidings.safety.categories import QueueId
from tidings.safety.holds import HoldService, InMemoryHoldRepository, InMemorySubjectRecords
from tidings.safety.inventory import inventory
from tidings.safety.lawful import LawfulRequestService
from tidings.safety.lawful_model import InMemoryLawfulRequestRepository
from tidings.safety.referral_model import ContactPerson, Email, Reporter
from tidings.safety.referral_records import InMemoryReferralRepository
from tidings.safety.referrals import ReferralService
from tidings.safety.reports import AttachmentReveal
from tidings.safety.staff import Principal, Role, StaffAccount
from tidings.safety.transparency import InMemoryReportCounts, TransparencySources

REVIEW_QUEUES = (QueueId.HARASSMENT, QueueId.VIOLENCE, QueueId.GENERAL, QueueId.FRAUD_SPAM)
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def png(width: int = 48, height: int = 48, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid, tiny PNG (solid colour) so a browser really renders the reported image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class Seeded:
    world: World
    clock: Clock
    context: ConsoleContext
    staff: dict[str, Principal] = field(default_factory=dict)
    harassment_case: str = ""
    cse_case: str = ""
    spam_case: str = ""

    def account(self, username: str) -> StaffAccount:
        account = self.world.staff_repo.get_staff_by_username(username)
        assert account is not None
        return account


def all_staff(world: World) -> list[StaffAccount]:
    return list(world.staff_repo._staff.values())  # the in-memory repository's rows


def seed(now_ms: int) -> Seeded:
    """Staff of every role and three cases built from real verified reports."""
    world = build_world()
    world.now = now_ms
    clock = Clock(now_ms)
    context = ConsoleContext(
        staff=world.staff,
        cases=world.cases,
        vault=world.vault,
        audit=world.audit,
        staff_repo=world.staff_repo,
        case_repo=world.case_repo,
        list_staff=lambda: all_staff(world),
        enforcement_history=world.enforcement_repo.enforcements_for_account,
        banks=BankService(InMemoryBankRepository(), world.audit, clock=clock),
        transparency=TransparencySources(
            reports=InMemoryReportCounts(world.report_repo.reports),
            cases=world.case_repo,
            enforcements=world.enforcement_repo,
            audit=world.audit_repo,
        ),
        referrals=ReferralService(
            repository=InMemoryReferralRepository(),
            cases=world.case_repo,
            reports=world.report_repo,
            vault=world.vault,
            audit=world.audit,
            audit_repo=world.audit_repo,
            queue_for=world.cases.queue_for_case,
            is_staff=lambda actor: world.staff_repo.get_staff(actor) is not None,
            reporter=Reporter(ContactPerson(emails=(Email("safety@tidings.example"),))),
            clock=clock,
        ),
    )
    s = Seeded(world, clock, context)
    s.staff = {
        "rita": world.make_staff("rita", Role.REVIEWER, queues=REVIEW_QUEUES),
        "rob": world.make_staff("rob", Role.REVIEWER, queues=REVIEW_QUEUES),
        "lee": world.make_staff("lee", Role.LEAD, queues=REVIEW_QUEUES),
        "lena": world.make_staff("lena", Role.LEGAL, queues=REVIEW_QUEUES),
        "cleo": world.make_staff(
            "cleo", Role.REVIEWER, child_safety=True, queues=(QueueId.CHILD_SAFETY,)
        ),
        "cara": world.make_staff(
            "cara", Role.LEAD, child_safety=True, queues=(QueueId.CHILD_SAFETY,)
        ),
        "root": world.admin,
        "root2": world.admin2,
    }
    # Harassment with context and an image: mallory -> bob.
    chat = direct_chat(world.server, "mallory", "bob")
    pointer, key = chat.upload(png())
    items = [
        chat.send(("mallory", 1), [("bob", 1)], "you again").to("bob", 1),
        chat.send(("mallory", 1), [("bob", 1)], "I know where you live").to("bob", 1),
        chat.send(("mallory", 1), [("bob", 1)], "look at this", attachments=(pointer,)).to(
            "bob", 1
        ),
    ]
    s.harassment_case = world.submit(
        submission(
            ("bob", 1),
            items,
            reported=2,
            attachments=(AttachmentReveal(2, 0, key),),
            comment="this keeps happening",
        )
    )
    # Child sexual exploitation: routed to the child-safety queue.
    chat = direct_chat(world.server, "eve", "carol")
    item = chat.send(("eve", 1), [("carol", 1)], "cse-report-text").to("carol", 1)
    s.cse_case = world.submit(
        submission(("carol", 1), [item], category="child_sexual_exploitation")
    )
    # Spam, in its own queue.
    chat = direct_chat(world.server, "spammer", "dave")
    item = chat.send(("spammer", 1), [("dave", 1)], "buy cheap watches").to("dave", 1)
    s.spam_case = world.submit(submission(("dave", 1), [item], category="spam"))
    return s


LAWFUL_SIGNING_SEED = bytes(range(32))
LAWFUL_DOMAINS = frozenset({"fbi.gov"})


def with_lawful(s: Seeded, clock: Callable[[], int] | None = None) -> LawfulRequestService:
    """Put an in-memory lawful-request service (its own holds, the account ``mule`` with one
    device, the package signing key `LAWFUL_SIGNING_SEED`, ``fbi.gov`` allowed) into ``s``'s
    context, on ``clock`` (default ``s.clock``); build the client after this."""
    subjects = InMemorySubjectRecords()
    subjects.accounts["mule"] = {"created_at_ms": 1, "devices": [{"device_id": 1}]}
    now = clock or s.clock
    holds = HoldService(InMemoryHoldRepository(), s.world.audit, subjects, clock=now)
    service = LawfulRequestService(
        InMemoryLawfulRequestRepository(), s.world.audit, holds, subjects,
        s.world.enforcement_repo, lambda: inventory(None), clock=now,
    )
    service.signing_key = LAWFUL_SIGNING_SEED
    service.allowed_domains = LAWFUL_DOMAINS
    s.context = replace(s.context, lawful=service, holds=holds)
    return service


def make_client(s: Seeded, *, secure: bool | None = None) -> TestClient:
    console = build_console(s.context, clock=s.clock, secret=b"k" * 32, secure_cookies=secure)
    app = Starlette(routes=[Mount("/console", app=console)])
    return TestClient(app, base_url="http://testserver", follow_redirects=False)


def totp_code(s: Seeded, username: str) -> str:
    account = s.account(username)
    return s.world.totp.code_at(account.totp_secret, s.world.totp.step(s.clock.now))


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: TestClient, s: Seeded, username: str) -> str:
    """Sign in through both pages; returns the session's CSRF token."""
    s.clock.advance(31_000)  # a fresh TOTP step (codes are single-use)
    page = client.get("/console/login")
    assert page.status_code == 200
    r = client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "csrf": csrf_of(page.text)},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("/console/login/totp")
    page = client.get("/console/login/totp")
    r = client.post(
        "/console/login/totp", data={"code": totp_code(s, username), "csrf": csrf_of(page.text)}
    )
    assert r.status_code == 303, r.text
    home = client.get("/console/preferences")
    assert home.status_code == 200
    return csrf_of(home.text)


T_NOW = 1_750_000_000_000


@pytest.fixture
def seeded() -> Iterator[Seeded]:
    yield seed(T_NOW)


@pytest.fixture
def client(seeded: Seeded) -> Iterator[TestClient]:
    with make_client(seeded) as c:
        yield c
