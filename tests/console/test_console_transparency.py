"""The transparency report page: legal and admin see the report of a period counted from the
seeded records, each view audited (who, which period); other roles are refused and leave no
trace; a bad period is a 400; the page draws inline SVG charts and names no outside URL."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from tidings.app import open_safety
from tidings.console import ConsoleContext
from tidings.safety.audit import AuditAction
from tidings.safety.categories import Category
from tidings.safety.transparency import build_report, current_half, parse_period
from tidings.server.config import ServerConfig

from .conftest import T_NOW, Seeded, login, make_client

PERIOD = "2025H1"  # T_NOW is 2025-06-15: the three seeded reports are in it


def views(s: Seeded) -> list[object]:
    return [e for e in s.world.audit_repo.rows if e.action == AuditAction.TRANSPARENCY_VIEW.value]


def cell(html: str, section: str, figure: str) -> str:
    match = re.search(
        rf'id="f-{section}-{figure}">.*?<td class="num"[^>]*>([^<]*)</td>', html, re.S
    )
    assert match, (section, figure)
    return match.group(1).strip()


def test_legal_sees_the_counted_report_and_the_view_is_audited(
    client: TestClient, seeded: Seeded
) -> None:
    login(client, seeded, "lena")
    r = client.get(f"/console/transparency?period={PERIOD}")
    assert r.status_code == 200, r.text[-500:]
    assert cell(r.text, "reports", "verified") == "3"
    assert cell(r.text, "cases", "opened") == "3"
    assert cell(r.text, "reports", "refused") == "0"  # counted: none refused
    assert cell(r.text, "lawful_requests", "received") == "0"
    assert cell(r.text, "actions", "enforcements") == "0"
    (entry,) = views(seeded)
    assert entry.actor == seeded.staff["lena"].staff_id  # type: ignore[attr-defined]
    assert entry.target == f"transparency:{PERIOD}"  # type: ignore[attr-defined]
    assert 'aria-current="page"' in r.text and ">Transparency<" in r.text

    # The next half-year has none of them; from/to picks days.
    later = client.get("/console/transparency?period=2025H2")
    assert cell(later.text, "reports", "verified") == "0"
    days = client.get("/console/transparency?from=2025-06-15&to=2025-06-15")
    assert days.status_code == 200 and cell(days.text, "reports", "verified") == "3"
    assert len(views(seeded)) == 3


def test_the_default_period_is_the_current_half_year(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "root")
    r = client.get("/console/transparency")
    assert r.status_code == 200
    label = current_half(T_NOW).label
    assert f'value="{label}"' in r.text and cell(r.text, "reports", "verified") == "3"


def test_other_roles_are_refused_and_leave_no_view(seeded: Seeded) -> None:
    for username in ("rita", "lee"):
        with make_client(seeded) as c:
            login(c, seeded, username)
            r = c.get(f"/console/transparency?period={PERIOD}")
            assert r.status_code == 403 and "this action requires" in r.text
            assert "Transparency</a>" not in c.get("/console/preferences").text
    assert views(seeded) == []


def test_a_bad_period_is_a_400_and_not_audited(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "lena")
    for query in ("period=2025H3", "period=%3Cscript%3E", "from=2025-06-01", "to=x&from=y"):
        r = client.get(f"/console/transparency?{query}")
        assert r.status_code == 400, query
        assert "<script>" not in r.text
    assert views(seeded) == []


def test_the_page_draws_svg_charts_without_outside_urls(client: TestClient, seeded: Seeded) -> None:
    login(client, seeded, "lena")
    html = client.get(f"/console/transparency?period={PERIOD}").text
    main = html[html.index("<main") : html.index("</main>")]
    assert main.count("<svg") >= 10 and 'role="img"' in main and "<desc id=" in main
    assert not re.search(r"https?:|//[a-z]|<script|<img|url\(", main, re.I)
    harassment = Category.HARASSMENT.value
    assert re.search(rf"<desc id=\"chart-reports-verified-d\">[^<]*{harassment} 1", main)
    # Every script and style the page loads is the console's own.
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_the_json_download_is_the_same_report_and_audited(
    client: TestClient, seeded: Seeded
) -> None:
    login(client, seeded, "root")
    page = client.get(f"/console/transparency?period={PERIOD}")
    assert f'transparency.json?period={PERIOD}"' in page.text
    r = client.get(f"/console/transparency.json?period={PERIOD}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert f"tidings-transparency-{PERIOD}.json" in r.headers["content-disposition"]
    data = r.json()
    assert data["period"]["label"] == PERIOD
    assert data["sections"]["reports"]["figures"]["verified"]["value"] == 3
    assert [e.details_obj["via"] for e in views(seeded)] == ["console", "console-json"]  # type: ignore[attr-defined]
    assert client.get("/console/transparency.json?period=nope").status_code == 400


def test_the_served_console_counts_from_the_nodes_database(tmp_path: Path) -> None:
    """The console `tidings server` mounts is built from the safety service: its report
    sources are that service's SQL repositories."""
    safety = open_safety(ServerConfig().with_overrides(data_dir=tmp_path / "node"))
    try:
        period = parse_period("2026H2")
        safety.cases.attach_detection("someone", now_ms=period.start_ms)
        context = ConsoleContext.from_service(safety)
        assert context.transparency is not None
        report = build_report(context.transparency, period, generated_ms=period.end_ms)
        assert report.value("cases", "opened") == 1
        assert report.value("detection", "cases_opened") == 1
    finally:
        safety.close()
