"""The periodic purge round: expired evidence is deleted (one audit entry by "system" per round
that purged something, counted in the metrics) while unexpired evidence stays; orphan
``attachments/*.part`` uploads of a crash are removed at start-up and by the round, while a
fresh ``.part`` (an upload in progress, perhaps on another node) and completed attachments
stay."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

import tidings.app
from tests.support.app import Net
from tests.support.devices import DeviceKit
from tests.support.live import LiveServer
from tidings.app import create_app, purge_round
from tidings.safety.audit import AuditAction
from tidings.safety.service import SafetyService
from tidings.safety.sql import SafetyDatabase
from tidings.server.config import ServerConfig
from tidings.server.state import ServerState
from tidings.storage.blobs import ORPHAN_PARTIAL_AGE_S
from tidings.storage.database import sqlite_url
from tidings.storage.safety_schema import safety_evidence


@pytest.fixture
def net(config: ServerConfig) -> Iterator[Net]:
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        yield Net(client, config)


def state_of(client: TestClient) -> ServerState:
    state: ServerState = client.app.state.tidings  # type: ignore[attr-defined]
    return state


def run_round(client: TestClient) -> None:
    safety: SafetyService = client.app.state.safety  # type: ignore[attr-defined]
    client.portal.call(purge_round, state_of(client), safety)  # type: ignore[union-attr]


def sample(client: TestClient, name: str, **labels: str) -> float:
    return state_of(client).metrics.registry.get_sample_value(name, labels) or 0.0


def evidence_of(net: Net) -> dict[str, str]:
    """evidence id -> report id, straight from the database."""
    db = SafetyDatabase(
        net.config.database_url or sqlite_url(net.config.data_dir),
        schema=net.config.database_schema,
    )
    try:
        with db.read() as c:
            rows = c.execute(select(safety_evidence.c.evidence_id, safety_evidence.c.report_id))
            return {row.evidence_id: row.report_id for row in rows}
    finally:
        db.dispose()


def expire_report_evidence(net: Net, report_id: str) -> None:
    """Move a report's evidence past its retention (as a year passing would)."""
    db = SafetyDatabase(
        net.config.database_url or sqlite_url(net.config.data_dir),
        schema=net.config.database_schema,
    )
    try:
        with db.write() as c:
            c.execute(
                update(safety_evidence)
                .where(safety_evidence.c.report_id == report_id)
                .values(expires_ms=1, hold_until_ms=0)
            )
    finally:
        db.dispose()


def purge_entries(net: Net) -> list[dict[str, object]]:
    return [
        {"actor": e.actor, **json.loads(e.details)}
        for e in net.safety.audit_repo.entries()
        if e.action == AuditAction.EVIDENCE_PURGE.value
    ]


def two_reports(net: Net) -> tuple[str, str]:
    alice, bob, carol = net.register("alice"), net.register("bob"), net.register("carol")
    old = net.report(bob, [net.send(alice, bob, "first")])
    new = net.report(carol, [net.send(alice, carol, "second")])
    assert old.status_code == new.status_code == 201, (old.text, new.text)
    return old.json()["report_id"], new.json()["report_id"]


def test_a_purge_round_deletes_expired_evidence_only(net: Net) -> None:
    old, new = two_reports(net)
    expire_report_evidence(net, old)
    before = evidence_of(net)
    expired = {e for e, r in before.items() if r == old}
    assert expired and set(before.values()) == {old, new}

    run_round(net.client)
    after = evidence_of(net)
    assert set(after) == set(before) - expired and set(after.values()) == {new}
    [entry] = purge_entries(net)  # one audit entry for the round
    assert entry["actor"] == "system" and entry["count"] == len(expired)
    assert set(entry["ids"]) == expired  # type: ignore[call-overload]
    assert sample(net.client, "tidings_purged_total", kind="evidence") == len(expired)
    assert sample(net.client, "tidings_purge_runs_total", task="evidence", outcome="ok") == 1

    # A round that purges nothing writes no audit entry.
    run_round(net.client)
    assert evidence_of(net) == after and len(purge_entries(net)) == 1
    assert sample(net.client, "tidings_purge_runs_total", task="evidence", outcome="ok") == 2
    assert net.safety.verify_audit().ok


@pytest.mark.sqlite_only
def test_the_server_schedules_the_evidence_purge(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tidings.app, "PURGE_INTERVAL_S", 0.05)
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        net = Net(client, config)
        old, new = two_reports(net)
        expire_report_evidence(net, old)
        deadline = time.monotonic() + 30
        while old in evidence_of(net).values():
            assert time.monotonic() < deadline, "no purge round deleted the expired evidence"
            time.sleep(0.05)
        assert set(evidence_of(net).values()) == {new}


def test_a_failing_task_is_counted_and_the_others_still_run(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> int:
        raise RuntimeError("database down")

    monkeypatch.setattr(net.safety, "purge_expired_evidence", broken)
    stale = age(net.config.data_dir / "attachments" / "crashed.part", 2 * ORPHAN_PARTIAL_AGE_S)
    run_round(net.client)
    assert sample(net.client, "tidings_purge_runs_total", task="evidence", outcome="failed") == 1
    assert sample(net.client, "tidings_purge_runs_total", task="messaging", outcome="ok") == 1
    assert not stale.exists()


def age(path: Path, seconds: float) -> Path:
    """Create ``path`` last written ``seconds`` ago."""
    path.write_bytes(b"partial upload")
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_orphan_uploads_go_at_start_and_by_the_round(config: ServerConfig) -> None:
    attachments = config.data_dir / "attachments"
    attachments.mkdir(parents=True)
    crashed = age(attachments / "crashed.part", ORPHAN_PARTIAL_AGE_S + 60)
    writing = age(attachments / "writing.part", 1)  # another node is uploading right now
    completed = age(attachments / ("A" * 43), 10 * ORPHAN_PARTIAL_AGE_S)  # old, but complete
    with TestClient(create_app(config)) as client:
        assert not crashed.exists()
        assert writing.exists() and completed.exists()
        assert sample(client, "tidings_purged_total", kind="orphan_uploads") == 1

        later = age(attachments / "later.part", ORPHAN_PARTIAL_AGE_S + 60)
        run_round(client)
        assert not later.exists()
        assert writing.exists() and completed.exists()
        assert sample(client, "tidings_purged_total", kind="orphan_uploads") == 2
        # Two runs: the one at start-up, counted like a round's (it can fail: S3 down), and this.
        assert sample(client, "tidings_purge_runs_total", task="orphan_uploads", outcome="ok") == 2


@pytest.mark.sqlite_only
def test_an_upload_in_progress_keeps_its_part_file_fresh(
    live_server: LiveServer, config: ServerConfig
) -> None:
    """Every chunk reaches the file at once (no write buffer), so a slow live upload's mtime
    keeps moving and the orphan threshold never takes it for a crash's leftover."""
    with httpx.Client(base_url=live_server.url) as http:
        kit = DeviceKit()
        r = http.post("/v1/accounts", json={"username": "alice", "device": kit.device_keys()})
        kit.username, kit.device_id = "alice", r.json()["device_id"]
    attachments = config.data_dir / "attachments"
    head = (
        "POST /v1/attachments HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {kit.auth['Authorization']}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_server.port)) as upload:
        upload.sendall(head + b"x" * 100)  # far below any write buffer
        deadline = time.monotonic() + 20
        while [p.stat().st_size for p in attachments.glob("*.part")] != [100]:
            assert time.monotonic() < deadline, "the chunk did not reach the .part file"
            time.sleep(0.02)
