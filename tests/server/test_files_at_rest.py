"""Files at rest: the data directory is 0700 and every file in it 0600 (database, WAL/SHM,
attachments and their ``.part`` uploads, key files) whatever the umask, for `tidings server`
and `tidings admin`; a data directory left wider is tightened at start, with a warning that
names the path but never an attachment id."""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.support.app import make_config
from tests.support.devices import DeviceKit
from tests.support.live import LiveServer
from tidings.app import create_app, open_safety
from tidings.cli import cli
from tidings.server.config import ServerConfig

OCTETS = {"Content-Type": "application/octet-stream"}


def modes(root: Path) -> dict[str, int]:
    """The permission bits of ``root`` and of everything below it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> None:
    wrong = {
        name: oct(mode)
        for name, mode in modes(root).items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert not wrong, wrong


def register(http: httpx.Client, username: str) -> DeviceKit:
    kit = DeviceKit()
    r = http.post("/v1/accounts", json={"username": username, "device": kit.device_keys()})
    assert r.status_code == 201, r.text
    kit.username, kit.device_id = username, r.json()["device_id"]
    return kit


def test_server_files_are_private_whatever_the_umask(
    umask: int, config: ServerConfig
) -> None:
    server = LiveServer(config).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            alice = register(http, "alice")
            done = http.post(
                "/v1/attachments", content=os.urandom(5000), headers={**alice.auth, **OCTETS}
            )
            assert done.status_code == 201, done.text
            # An upload in progress: headers and half the body sent, the rest held back.
            attachments = config.data_dir / "attachments"
            head = (
                "POST /v1/attachments HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {alice.auth['Authorization']}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 200000\r\n\r\n"
            ).encode()
            with socket.create_connection(("127.0.0.1", server.port)) as upload:
                upload.sendall(head + b"x" * 100_000)
                deadline = time.monotonic() + 20
                while not list(attachments.glob("*.part")):
                    assert time.monotonic() < deadline, "the upload never reached the disk"
                    time.sleep(0.02)
                # While the node runs: database with its -wal/-shm, keys, attachment, .part.
                names = set(modes(config.data_dir))
                if not config.database_url:
                    assert {"tidings.db", "tidings.db-wal", "tidings.db-shm"} <= names
                assert {"franking.key", "evidence.keys", "audit_anchor.key"} <= names
                assert_private(config.data_dir)
    finally:
        server.stop()
    assert_private(config.data_dir)


def test_admin_commands_create_private_files_whatever_the_umask(
    umask: int, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    result = CliRunner().invoke(cli, ["admin", "rotate-evidence-key", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert (data_dir / "tidings.db").is_file() and (data_dir / "evidence.keys").is_file()
    assert_private(data_dir)
    # The directory the data directory was created in, too (it did not exist either).
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    other = tmp_path / "other"
    open_safety(make_config(other)).close()
    assert_private(other)


@pytest.mark.sqlite_only
def test_a_wide_data_dir_is_tightened_at_start(
    config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(config)) as client:
        alice = DeviceKit()
        client.post("/v1/accounts", json={"username": "alice", "device": alice.device_keys()})
        alice.username, alice.device_id = "alice", 1
        created = client.post("/v1/attachments", content=b"abc", headers={**alice.auth, **OCTETS})
        attachment_id = created.json()["id"]
    # As an older version (or an operator's cp -r under umask 022) would leave it.
    data = config.data_dir
    for path in (data, data / "attachments"):
        path.chmod(0o755)
    for path in (data / "franking.key", data / "tidings.db", data / "attachments" / attachment_id):
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tidings.app"), TestClient(create_app(config)):
        pass
    assert_private(data)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert str(data / "franking.key") in logged and str(data / "tidings.db") in logged
    assert attachment_id not in logged  # an attachment id is its download capability
    assert str(data / "attachments") in logged


@pytest.mark.sqlite_only
def test_tightening_follows_no_link_but_a_linked_attachments_volume(
    config: ServerConfig, tmp_path: Path
) -> None:
    # The operator's own file linked into the data directory is not ours to change; a shared
    # attachments volume linked in as attachments/ is the server's and is tightened.
    outside = tmp_path / "operator.conf"
    outside.write_bytes(b"x")
    outside.chmod(0o644)
    shared = tmp_path / "shared-volume"
    shared.mkdir(mode=0o755)
    (shared / ("B" * 43)).write_bytes(b"ciphertext")
    (shared / ("B" * 43)).chmod(0o644)
    config.data_dir.mkdir(parents=True)
    (config.data_dir / "linked.conf").symlink_to(outside)
    (config.data_dir / "attachments").symlink_to(shared, target_is_directory=True)
    with TestClient(create_app(config)):
        pass
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert modes(shared) == {".": 0o700, "B" * 43: 0o600}
