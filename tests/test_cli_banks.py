"""`tidings admin bank ...` and `tidings admin cases` on a node's data directory (SQLite): the
whole life of a bank through the command line, --json output, one-line typed errors, the
audit trail under the command-line operator."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.cli import cli
from tidings.safety.case_model import CaseRecord, CaseSource, CaseState
from tidings.safety.categories import Category, QueueId, Severity

runner = CliRunner()


def run(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["admin", *args, "--data-dir", str(data)])
    return result.exit_code, result.stdout, result.stderr


def ok_json(data: Path, *args: str) -> dict[str, object]:
    code, out, err = run(data, *args, "--json")
    assert code == 0, (out, err)
    parsed: dict[str, object] = json.loads(out)
    return parsed


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "node"
    made = ok_json(path, "bank", "create", "cse", "--category", "child_sexual_exploitation")
    assert made["name"] == "cse"
    return path


def test_a_bank_through_the_command_line(data: Path, tmp_path: Path) -> None:
    shared, only_us = secrets.token_hex(32), secrets.token_hex(32)
    us = tmp_path / "us.csv"
    us.write_text(f"signal_type,signal_value\npdq,{shared}\npdq,{only_us}\n")
    gb = tmp_path / "gb.te"
    gb.write_text(f"pdq {shared}\n")

    first = ok_json(
        data, "bank", "import", "cse", str(us), "--source", "NCMEC", "--jurisdiction", "US"
    )
    assert (first["rows"], first["entries_added"]) == (2, 2)
    second = ok_json(
        data,
        "bank",
        "import",
        "cse",
        str(gb),
        "--source",
        "IWF",
        "--jurisdiction",
        "GB",
        "--format",
        "te",
    )
    assert second["sources_added"] == 1
    assert int(str(second["list_version"])) > int(str(first["list_version"]))

    listed = ok_json(data, "bank", "list")
    assert listed["banks"] == [
        {
            "name": "cse",
            "category": "child_sexual_exploitation",
            "description": "",
            "created_at": listed["banks"][0]["created_at"],  # type: ignore[index]
            "active": 2,
            "device_eligible": 1,
            "removed": 0,
        }
    ]
    eligible = ok_json(data, "bank", "entries", "cse", "--eligible")
    entries = eligible["entries"]
    assert isinstance(entries, list) and [e["value"] for e in entries] == [shared]
    assert [(s["organisation"], s["jurisdiction"]) for s in entries[0]["sources"]] == [
        ("NCMEC", "US"),
        ("IWF", "GB"),
    ]

    # Export round-trips into a second bank.
    out = tmp_path / "export.jsonl"
    summary = ok_json(data, "bank", "export", "cse", "--format", "jsonl", "--output", str(out))
    assert summary["entries"] == 2
    ok_json(data, "bank", "create", "copy", "--category", "child_sexual_exploitation")
    copied = ok_json(
        data,
        "bank",
        "import",
        "copy",
        str(out),
        "--format",
        "jsonl",
        "--source",
        "NCMEC",
        "--jurisdiction",
        "US",
    )
    assert copied["entries_added"] == 2
    code, text, _ = run(data, "bank", "export", "cse")
    assert code == 0 and text.splitlines()[0] == "signal_type,signal_value,quality"
    assert len(text.splitlines()) == 3

    removed = ok_json(data, "bank", "remove", "cse", "--value", shared, "--source", "IWF")
    assert (removed["sources_removed"], removed["entries_removed"]) == (1, 0)
    assert ok_json(data, "bank", "entries", "cse", "--eligible")["entries"] == []

    code, text, _ = run(data, "bank", "list")
    assert code == 0 and "cse" in text and "list version" in text

    verified = runner.invoke(cli, ["audit", "verify", "--data-dir", str(data), "--json"])
    assert json.loads(verified.stdout)["ok"] is True


def test_bad_input_is_a_one_line_typed_error_and_nothing_is_applied(
    data: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"pdq,{secrets.token_hex(32)}\npdq,{'0' * 63}\n")
    code, out, err = run(
        data, "bank", "import", "cse", str(bad), "--source", "NCMEC", "--jurisdiction", "US"
    )
    assert code == 1 and out == ""
    assert err.strip() == "error: line 2: not a valid pdq hash (64 hex digits)"
    code, out, _ = run(
        data,
        "bank",
        "import",
        "cse",
        str(bad),
        "--source",
        "NCMEC",
        "--jurisdiction",
        "US",
        "--json",
    )
    assert code == 1 and json.loads(out)["error"]["code"] == "bank_file_invalid"
    assert ok_json(data, "bank", "list")["banks"][0]["active"] == 0  # type: ignore[index]

    for args, message in [
        (
            (
                "bank",
                "import",
                "cse",
                str(tmp_path / "missing.csv"),
                "--source",
                "X",
                "--jurisdiction",
                "US",
            ),
            "cannot read",
        ),
        (
            ("bank", "import", "cse", str(bad), "--source", "X", "--jurisdiction", "UK"),
            "ISO 3166-1",
        ),
        (
            ("bank", "import", "nope", str(bad), "--source", "X", "--jurisdiction", "US"),
            "no such bank",
        ),
        (("bank", "create", "cse", "--category", "spam"), "exists"),
        (("bank", "create", "x", "--category", "bogus"), "unknown category"),
        (("bank", "remove", "cse", "--source", "X"), "either FILE or --value"),
        (("bank", "entries", "cse", "--signal-type", "sha1"), "pdq, md5 or sha256"),
        (("bank", "export", "cse", "--format", "xml"), "csv, te or jsonl"),
    ]:
        code, out, err = run(data, *args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, out, _ = run(data, "bank", "export", "cse", "--json")
    assert code == 1 and "--json needs --output" in json.loads(out)["error"]["message"]


def test_admin_cases_lists_every_case_with_its_source(data: Path) -> None:
    from tidings.app import open_safety
    from tidings.server.config import ServerConfig

    safety = open_safety(ServerConfig.load(None).with_overrides(data_dir=data))
    try:
        for n, (subject, source, category, queue) in enumerate(
            [
                ("mallory", CaseSource.REPORT, Category.HARASSMENT, QueueId.HARASSMENT),
                (
                    "eve",
                    CaseSource.DETECTION,
                    Category.CHILD_SEXUAL_EXPLOITATION,
                    QueueId.CHILD_SAFETY,
                ),
            ]
        ):
            safety.case_repo.add_case(
                CaseRecord(
                    case_id=f"case_{n}",
                    subject=subject,
                    queue_id=queue,
                    category=category,
                    severity=Severity.HIGH,
                    base_priority=1,
                    priority=1,
                    state=CaseState.OPEN,
                    created_ms=1000 + n,
                    updated_ms=1000 + n,
                    sla_due_ms=9999,
                    report_count=1,
                    reporter_count=1,
                    source=source,
                )
            )
    finally:
        safety.close()
    listed = ok_json(data, "cases")
    assert listed["cases"] == [
        {
            "id": "case_0",
            "source": "report",
            "subject": "mallory",
            "category": "harassment",
            "state": "open",
            "queue": "harassment",
        },
        {
            "id": "case_1",
            "source": "detection",
            "subject": "eve",
            "category": "child_sexual_exploitation",
            "state": "open",
            "queue": "child_safety",
        },
    ]
    code, text, _ = run(data, "cases")
    assert code == 0 and "detection" in text and text.splitlines()[0].startswith("CASE")
