"""`tidings transparency` on a node's records (SQLite data directory, and PostgreSQL through
--config): text, --json and --html FILE counted from cases opened through the case service,
the period's boundaries, typed one-line errors for a bad period, and the audit entry under the
command-line operator."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.services import PG_URL, pg_admin, require_service
from tidings.app import open_safety
from tidings.cli import cli
from tidings.safety.audit import AuditAction
from tidings.safety.transparency import parse_period
from tidings.server.config import ServerConfig

runner = CliRunner()
H2 = parse_period("2026H2")


@pytest.fixture(params=["sqlite", "postgresql"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The options that name a node (a data directory, or a config on PostgreSQL), with two
    detection cases in 2026H2 (its first and last ms) and one just after it."""
    data = tmp_path / "node"
    schema = ""
    if request.param == "sqlite":
        options = ["--data-dir", str(data)]
        config = ServerConfig().with_overrides(data_dir=data)
    else:
        schema = f"tidings_cli_{secrets.token_hex(4)}"
        error = pg_admin(f'CREATE SCHEMA "{schema}"')
        require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
        toml = tmp_path / "tidings.toml"
        toml.write_text(
            f'[server]\ndata_dir = "{data}"\ndatabase_url = "{PG_URL}"\n'
            f'database_schema = "{schema}"\n'
        )
        options = ["--config", str(toml)]
        config = ServerConfig.load(toml)
    safety = open_safety(config)
    try:
        for subject, at in (("s1", H2.start_ms), ("s2", H2.end_ms - 1), ("s3", H2.end_ms)):
            safety.cases.attach_detection(subject, now_ms=at)
    finally:
        safety.close()
    yield options
    if schema:
        pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["transparency", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_counts_the_period_and_the_view_is_audited(node: list[str]) -> None:
    code, out, err = run("--period", "2026H2", "--json", *node)
    assert code == 0, (out, err)
    data = json.loads(out)
    assert data["period"]["label"] == "2026H2"
    cases = data["sections"]["cases"]["figures"]["opened"]
    assert cases["value"] == 2 and cases["breakdown"] == {"report": 0, "detection": 2}
    assert data["sections"]["detection"]["figures"]["cases_opened"]["value"] == 2
    refused = data["sections"]["reports"]["figures"]["refused"]
    assert (refused["status"], refused["value"], refused["by"]) == ("counted", 0, "reason")

    code, out, _ = run("--from", "2027-01-01", "--to", "2027-01-01", "--json", *node)
    assert code == 0 and json.loads(out)["sections"]["cases"]["figures"]["opened"]["value"] == 1

    code, out, _ = run("--period", "2026H2", *node)
    assert code == 0 and "Transparency report 2026H2" in out
    assert re.search(r"Cases opened\s+2\n", out) and "Lawful requests received" in out

    code, out, _ = run("--period", "2026H2", "--json", *node)
    config_args = dict(zip(node[::2], node[1::2], strict=True))
    config = (
        ServerConfig.load(Path(config_args["--config"]))
        if "--config" in config_args
        else ServerConfig().with_overrides(data_dir=Path(config_args["--data-dir"]))
    )
    safety = open_safety(config)
    try:
        entries = [
            e
            for e in safety.audit_repo.entries()  # type: ignore[attr-defined]
            if e.action == AuditAction.TRANSPARENCY_VIEW.value
        ]
    finally:
        safety.close()
    assert len(entries) == 4
    assert {e.actor for e in entries} == {"operator:cli"}
    assert entries[0].target == "transparency:2026H2"
    assert entries[1].target == "transparency:2027-01-01..2027-01-01"


def test_html_file_is_written_whole_with_charts(node: list[str], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, out, err = run("--period", "2026H2", "--html", str(page), *node)
    assert code == 0, (out, err)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "<svg" in html and 'role="img"' in html
    assert not re.search(r"https?:|<script|<link|<img", html, re.I)
    assert f"HTML report written to {page}" in out
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--period", "2026H3"], "invalid_period"),
        (["--period", "2026-02-30..2026-03-01"], "invalid_period"),
        (["--from", "2026-07-01"], "usage"),
        ([], "usage"),
        (["--period", "2026H2", "--from", "2026-07-01", "--to", "2026-07-02"], "usage"),
    ],
)
def test_bad_periods_are_one_line_typed_errors(args: list[str], code: str, tmp_path: Path) -> None:
    exit_code, out, _ = run(*args, "--json", "--data-dir", str(tmp_path / "node"))
    assert exit_code == 1 and json.loads(out)["error"]["code"] == code
    exit_code, _, err = run(*args, "--data-dir", str(tmp_path / "node"))
    assert exit_code == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_html_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "r.html"
    code, _, err = run("--period", "2026H2", "--html", str(target), "--data-dir", str(tmp_path))
    assert code == 1 and "no directory" in err and not target.exists()
