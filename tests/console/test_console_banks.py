"""The console's hash-bank pages: legal and admin only (and in their nav only), the
two-jurisdiction rule stated, entries with their sources and eligibility, filters and paging,
every view audited under the signed-in staff member; on the in-memory repositories and on the
SQL ones (SQLite, PostgreSQL)."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.safety.conftest import BACKENDS, backend_db, pg_safety_db, sqlite_template  # noqa: F401  (fixtures)
from tidings.console.pages.banks import BANK_PAGE
from tidings.safety.audit import AuditAction
from tidings.safety.bank_memory import InMemoryBankRepository
from tidings.safety.banks import TWO_JURISDICTION_RULE, BankService
from tidings.safety.sql import SafetyDatabase, SqlBankRepository

from .conftest import T_NOW, Seeded, login, make_client, seed


@pytest.fixture(params=BACKENDS)
def bank_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafetyDatabase | None]:
    yield from backend_db(request, tmp_path)


@pytest.fixture
def seeded_banks(bank_db: SafetyDatabase | None) -> Iterator[tuple[Seeded, list[str]]]:
    """The seeded console with a bank of 3 device-eligible and BANK_PAGE + 5 single-source
    PDQ entries, one withdrawn entry and one MD5 entry (bank repository: ``bank_db``)."""
    s = seed(T_NOW)
    repo = InMemoryBankRepository() if bank_db is None else SqlBankRepository(bank_db)
    service = BankService(repo, s.world.audit, clock=s.clock)  # type: ignore[arg-type]
    s.context = replace(s.context, banks=service)
    admin = s.world.admin
    service.create_bank(
        admin, name="cse", category="child_sexual_exploitation", description="Known CSAM"
    )
    shared = sorted(secrets.token_hex(32) for _ in range(3))
    us_only = [secrets.token_hex(32) for _ in range(BANK_PAGE + 5)]
    withdrawn = secrets.token_hex(32)

    def rows(values: list[str], kind: str = "pdq") -> bytes:
        return "".join(f"{kind},{v}\n" for v in values).encode()

    service.import_file(
        admin, "cse", rows([*shared, *us_only, withdrawn]), organisation="NCMEC", jurisdiction="US"
    )
    service.import_file(
        admin, "cse", rows([*shared, withdrawn]), organisation="IWF", jurisdiction="GB"
    )
    service.import_file(
        admin, "cse", rows(["a" * 32], "md5"), organisation="NCMEC", jurisdiction="US"
    )
    for org in ("NCMEC", "IWF"):
        service.remove_values(admin, "cse", [withdrawn], organisation=org)
    yield s, [*shared, withdrawn]


def test_nav_link_only_for_legal_and_admin(seeded: Seeded) -> None:
    for user, shown in [("rita", False), ("lee", False), ("lena", True), ("root", True)]:
        with make_client(seeded) as c:
            login(c, seeded, user)
            page = c.get("/console/preferences")
            assert ('href="/console/banks"' in page.text) is shown, user
            r = c.get("/console/banks")
            assert r.status_code == (200 if shown else 403), user


def test_banks_page_states_the_rule_and_the_counts(
    seeded_banks: tuple[Seeded, list[str]],
) -> None:
    s, _ = seeded_banks
    with make_client(s) as c:
        login(c, s, "lena")
        before = len(list(s.world.audit.repository.entries()))
        r = c.get("/console/banks")
    assert r.status_code == 200
    text = html.unescape(r.text)
    assert TWO_JURISDICTION_RULE in text
    row = text[text.index('href="/console/banks/cse"') :]
    row = row[: row.index("</tr>")]
    # active: 3 shared + BANK_PAGE + 5 US-only + 1 md5; device: 3; removed: 1
    cells = [c.split("</td>")[0] for c in row.split('<td class="num">')[1:]]
    assert cells == [str(3 + BANK_PAGE + 5 + 1), "3", "1"]
    entries = list(s.world.audit.repository.entries())
    assert len(entries) == before + 1
    assert entries[-1].action == AuditAction.BANK_VIEW.value
    assert entries[-1].actor == s.staff["lena"].staff_id and entries[-1].target == "bank:*"


def test_bank_page_shows_sources_and_eligibility_filters_and_pages(
    seeded_banks: tuple[Seeded, list[str]],
) -> None:
    s, (*shared, withdrawn) = seeded_banks
    with make_client(s) as c:
        login(c, s, "root")
        eligible = c.get("/console/banks/cse?eligible=yes")
        assert eligible.status_code == 200
        values = _values(eligible.text)
        assert values == shared
        assert eligible.text.count('class="badge ok">yes') == 3
        assert "NCMEC <abbr" in eligible.text and "IWF <abbr" in eligible.text
        assert ">GB</abbr>" in eligible.text and ">US</abbr>" in eligible.text

        first = c.get("/console/banks/cse?type=pdq")
        assert len(_values(first.text)) == BANK_PAGE
        assert "page 1 of 2" in first.text and 'rel="next"' in first.text
        second = c.get("/console/banks/cse?type=pdq&page=2")
        assert len(_values(second.text)) == 3 + BANK_PAGE + 5 - BANK_PAGE
        assert 'href="/console/banks/cse?type=pdq&amp;page=1"' in second.text
        assert set(_values(first.text)).isdisjoint(_values(second.text))

        md5 = c.get("/console/banks/cse?type=md5")
        assert _values(md5.text) == ["a" * 32]
        assert withdrawn not in c.get("/console/banks/cse?type=pdq&page=2").text
        with_removed = "".join(
            c.get(f"/console/banks/cse?removed=1&type=pdq&page={n}&eligible=no").text
            for n in (1, 2)
        )
        assert withdrawn in with_removed and "withdrawn" in with_removed

        # Unknown filter values are ignored, not errors; an unknown bank is a 404.
        assert c.get("/console/banks/cse?type=sha1&eligible=maybe&page=-3").status_code == 200
        assert c.get("/console/banks/nope").status_code == 404
        assert c.get("/console/banks/" + "x" * 200).status_code == 404
    views = [
        e
        for e in s.world.audit.repository.entries()
        if e.action == AuditAction.BANK_VIEW.value and e.target != "bank:*"
    ]
    assert len(views) == 8 and {v.actor for v in views} == {s.world.admin.staff_id}


def test_reviewers_and_leads_are_refused(seeded_banks: tuple[Seeded, list[str]]) -> None:
    s, _ = seeded_banks
    for user in ("rita", "lee", "cara"):
        with make_client(s) as c:
            login(c, s, user)
            for path in ("/console/banks", "/console/banks/cse"):
                r = c.get(path)
                assert r.status_code == 403 and "this action requires" in r.text, (user, path)


def test_no_bank_service_means_404_not_500(client: TestClient, seeded: Seeded) -> None:
    s = seeded
    s.context = replace(s.context, banks=None)
    with make_client(s) as c:
        login(c, s, "root")
        assert c.get("/console/banks").status_code == 404


def _values(page: str) -> list[str]:
    return re.findall(r'<code class="hash">([0-9a-f]+)</code>', page)
