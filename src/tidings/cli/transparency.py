"""`tidings transparency`: the transparency report of a period, generated from a node's
records (`tidings.safety.transparency`; docs/operations.md "Transparency report") — as text,
as JSON (``--json``) or as a standalone HTML page with charts (``--html FILE``). On a node's
data directory or database, like the admin commands; audited as the command-line operator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tidings.cli._common import JsonOpt, UsageError, emit, fail
from tidings.cli.operator import ConfigOpt, DatabaseUrlOpt, DataDirOpt, node_safety
from tidings.errors import TidingsError

transparency_cli = typer.Typer()

PeriodOpt = Annotated[
    str | None,
    typer.Option("--period", help="2026H2, 2026Q3, 2026-11, 2026 or 2026-07-01..2026-09-30 (UTC)."),
]
FromOpt = Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD (with --to).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (included).")]
HtmlOpt = Annotated[
    Path | None, typer.Option("--html", help="Also write the report as an HTML page to FILE.")
]


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file beside it, renamed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _text(data: dict[str, object]) -> str:
    """The report as aligned text lines (sections, figures, breakdowns)."""
    period = data["period"]
    assert isinstance(period, dict)
    lines = [f"Transparency report {period['label']} ({period['start']} to {period['end']})"]
    sections = data["sections"]
    assert isinstance(sections, dict)
    for section in sections.values():
        lines.append(f"\n{section['title']}")
        for figure in section["figures"].values():
            status = figure["status"]
            value = {
                "not_recorded": "not recorded",
                "not_implemented": "0 — not yet implemented",
            }.get(status, str(figure["value"]))
            lines.append(f"  {figure['label']:<52} {value}")
            for key, n in figure.get("breakdown", {}).items():
                lines.append(f"      {key.replace('_', ' '):<48} {n}")
    return "\n".join(lines)


@transparency_cli.command("transparency")
def transparency(
    period: PeriodOpt = None,
    first_day: FromOpt = None,
    last_day: ToOpt = None,
    html: HtmlOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The transparency report of a period (--period, or --from and --to), counted from the
    node's records: reports received, verified and refused by reason, cases, actions, appeals
    and reversals, detection, referrals and requests from authorities. Every number says what
    it counts. Audited as the command-line operator."""
    from tidings.console.transparency import render_report_html
    from tidings.safety.audit import AuditAction
    from tidings.safety.transparency import (
        TransparencySources,
        build_report,
        parse_period,
        period_between,
    )

    try:
        if (first_day is None) != (last_day is None):
            raise UsageError("give both --from and --to")
        if (period is None) == (first_day is None):
            raise UsageError("give --period, or --from and --to")
        chosen = (
            parse_period(period)
            if period is not None
            else period_between(str(first_day), str(last_day))
        )
        if html is not None and not html.parent.is_dir():
            raise UsageError(f"no directory {html.parent} for the HTML file")
    except TidingsError as exc:
        fail(exc, as_json)
        return
    with node_safety(as_json, data_dir, database_url, config, "produce the report") as safety:
        now = safety.clock()
        report = build_report(TransparencySources.of(safety), chosen, generated_ms=now)
        safety.audit.append(
            actor=safety.operator().staff_id,
            action=AuditAction.TRANSPARENCY_VIEW,
            target=f"transparency:{chosen.label}",
            now_ms=now,
            details={"start_ms": chosen.start_ms, "end_ms": chosen.end_ms, "via": "cli"},
        )
        if html is not None:
            _write_atomically(html, render_report_html(report))
    data = report.to_json()
    text = _text(data)
    if html is not None:
        text += f"\n\nHTML report written to {html}"
    emit(as_json, data, text)
