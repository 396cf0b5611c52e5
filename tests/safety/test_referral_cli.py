"""`tidings admin referral list|show`: the operator's read-only view on a node's database,
through `SafetyService.referrals` (SQL), each read audited as the command-line operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.safety.test_cybertip import make_referral
from tidings.app import open_safety
from tidings.cli import cli
from tidings.safety.cybertip_client import ReferralProgress
from tidings.safety.referral_records import ReferralRecord, encode_referral, progress_to_json
from tidings.server.config import ServerConfig


def test_list_and_show_are_read_only_and_audited(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path)
    safety = open_safety(config)
    referral = make_referral("rf_cli")
    try:
        safety.referral_repo.add_referral(
            ReferralRecord(
                referral_id="rf_cli",
                case_id="case-1",
                seq=1,
                account="acct-42",
                prepared_by="staff_legal",
                prepared_ms=1_764_000_000_000,
                document=encode_referral(referral),
                progress=progress_to_json(ReferralProgress.start(referral)),
                file_count=len(referral.files),
            )
        )
    finally:
        safety.close()
    where = ["--data-dir", str(tmp_path), "--json"]
    runner = CliRunner()
    listed = runner.invoke(cli, ["admin", "referral", "list", *where])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)["referrals"]
    assert (row["referral_id"], row["state"], row["approval"]) == ("rf_cli", "pending", "draft")
    shown = runner.invoke(cli, ["admin", "referral", "show", "rf_cli", *where])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["reported_account"] == "acct-42"
    assert [f["viewed_by_provider"] for f in data["file_list"]] == [True, False]
    text = runner.invoke(cli, ["admin", "referral", "show", "rf_cli", "--data-dir", str(tmp_path)])
    assert "not viewed by staff" in text.stdout
    missing = runner.invoke(cli, ["admin", "referral", "show", "nope", *where])
    assert missing.exit_code != 0 and "not_found" in missing.stdout
    safety = open_safety(config)
    try:
        entries = [(e.actor, e.action) for e in safety.audit_repo.entries()]
    finally:
        safety.close()
    assert ("operator:cli", "referral.list") in entries
    assert entries.count(("operator:cli", "referral.view")) == 2


def test_the_referrals_table_of_the_server_file_configures_referrals(tmp_path: Path) -> None:
    from tidings.safety.referrals import load_referrals
    from tidings.server.config import ConfigError

    path = tmp_path / "tidings.toml"
    path.write_text(
        '[server]\nport = 9001\n\n[referrals]\nurl = "https://exttest.cybertip.org/ispws"\n'
        'username = "esp"\npassword = "s3cret-pass"\n\n'
        '[referrals.reporter]\nemail = "safety@tidings.example"\n'
    )
    config = ServerConfig.load(path, env={})
    assert config.port == 9001 and "s3cret-pass" not in repr(config)
    referral, reporter = load_referrals(config.referrals, env={})
    assert referral is not None and referral.url == "https://exttest.cybertip.org/ispws"
    assert reporter is not None
    env = {"TIDINGS_CYBERTIP_URL": "https://report.cybertip.org/ispws"}
    referral, _ = load_referrals(config.referrals, env=env)
    assert referral is not None and referral.url == "https://report.cybertip.org/ispws"
    path.write_text('referrals = "not a table"\n')
    with pytest.raises(ConfigError):
        ServerConfig.load(path, env={})
    with pytest.raises(ConfigError):
        ServerConfig.load(None, env={}).with_overrides(referrals={"url": "x"})
