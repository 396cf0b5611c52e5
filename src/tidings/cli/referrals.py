"""`tidings admin referral list|show ID`: the operator's read-only view of referrals to
NCMEC's CyberTipline (docs/referrals.md). On a node's data directory or database, like the
other admin commands; every listing and view is audited as the command-line operator.

Preparing, approving, submitting, retracting and reopening are staff actions, each under the
person who takes it (`SafetyService.referrals`, for the console): not here."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tidings.cli._common import JsonOpt, emit, iso_utc_or_dash
from tidings.cli.operator import ConfigOpt, DatabaseUrlOpt, DataDirOpt, node_safety

referral_cli = typer.Typer(
    help="Referrals to NCMEC's CyberTipline: list them, show one (read-only, audited).",
    no_args_is_help=True,
)

LIST_BATCH = 500
"""Referrals `list` reads per query."""


@referral_cli.command("list")
def referral_list(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every referral, newest first: id, case, account, approval, state, NCMEC's report id,
    files, preservation hold."""
    from tidings.safety.referral_records import ReferralRecord

    with node_safety(as_json, data_dir, database_url, config, "read the referrals") as safety:
        actor = safety.operator().staff_id
        found: list[ReferralRecord] = []
        while True:
            page = safety.referrals.list_as(actor, limit=LIST_BATCH, offset=len(found))
            found.extend(page)
            if len(page) < LIST_BATCH:
                break
    rows = [r.to_json() for r in found]
    for row in rows:
        row.pop("steps")
    header = (
        f"{'REFERRAL':<28} {'CASE':<26} {'ACCOUNT':<16} {'APPROVAL':<9} {'STATE':<17} "
        f"{'REPORT':<12} FILES HOLD UNTIL"
    )
    lines = [header] + [
        f"{r['referral_id']:<28} {r['case_id']:<26} {r['account']:<16} {r['approval']:<9} "
        f"{r['state']:<17} {r['report_id'] or '-':<12} {r['files']:<5} "
        f"{iso_utc_or_dash(r['hold_until_ms'])}"
        for r in rows
    ]
    emit(as_json, {"referrals": rows}, "\n".join(lines) if rows else "no referrals")


@referral_cli.command("show")
def referral_show(
    referral_id: Annotated[str, typer.Argument(help="The referral's id (from `list`).")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One referral: who prepared and approved it, what it reports (account, files with their
    MD5 and PDQ and whether staff viewed them), every submission step, the hold."""
    with node_safety(as_json, data_dir, database_url, config, "read the referral") as safety:
        data: dict[str, Any] = safety.referrals.view_as(
            safety.operator().staff_id, referral_id
        ).to_json()
    lines = [
        f"referral {data['referral_id']} of case {data['case_id']} (account "
        f"{data['reported_account']})",
        f"  prepared by {data['prepared_by']} at {iso_utc_or_dash(data['prepared_ms'])}; "
        f"{data['approval']}"
        + (f" by {data['approved_by']} at {iso_utc_or_dash(data['approved_ms'])}"
           if data["approved_by"] else ""),
        f"  state {data['state']}; NCMEC report {data['report_id'] or '-'}; hold until "
        f"{iso_utc_or_dash(data['hold_until_ms'])}",
        f"  incident {data['incident_type']} at {iso_utc_or_dash(data['incident_ms'])}",
    ]
    for f in data["file_list"]:
        viewed = "viewed by staff" if f["viewed_by_provider"] else "not viewed by staff"
        lines.append(f"  file {f['file_name']}: md5 {f['md5']}, pdq {f['pdq'] or '-'}, {viewed}")
    for step in data["steps"]:
        extra = "".join(
            f" {k}={step[k]}" for k in ("file_key", "report_id", "response_code", "by")
            if k in step
        )
        lines.append(f"  {iso_utc_or_dash(step['at_ms'])} {step['step']}: {step['outcome']}{extra}")
    emit(as_json, data, "\n".join(lines))
