"""`tidings audit kt` and `tidings audit kt witness` against a live server (SQLite and
PostgreSQL): an honest log verifies from epoch 1, a witness co-signs and the quorum then holds;
a forked head (same epoch, another root, signed by the server's own key), a tampered audit
proof and a head outside the witness's ±24 h window are each reported as the first
inconsistency."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.devices import register_account
from tests.support.live import LiveServer
from tidings.cli import cli
from tidings.client.kt_audit import MAX_SKEW_MS, audit_log, witness_round
from tidings.clock import now_ms
from tidings.crypto.kt_device_list import sign_device_list
from tidings.crypto.kt_proofs import decode_head, sign_head
from tidings.crypto.primitives import ed25519_public
from tidings.server.config import ServerConfig
from tidings.storage.files import KT_SIGNING_KEY_FILE, load_key_file
from tidings.wire.base64url import b64d, b64e

WITNESS_SEED = bytes(range(32))
WITNESS_PUBLIC = b64e(ed25519_public(WITNESS_SEED))


class Fetch:
    """The auditor's HTTP over httpx, with an optional tamper of each answer's JSON."""

    def __init__(self, url: str, tamper: Callable[[str, Any], Any] | None = None) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.tamper = tamper or (lambda _path, body: body)

    def get(self, path: str) -> tuple[int, Any]:
        r = self.http.get(path)
        return r.status_code, self.tamper(path, r.json())

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        r = self.http.post(path, json=body)
        return r.status_code, r.json()


def _serve(config: ServerConfig, **overrides: Any) -> Iterator[LiveServer]:
    server = LiveServer(replace(config, kt_witnesses=(WITNESS_PUBLIC,), **overrides)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def busy(config: ServerConfig) -> Iterator[LiveServer]:
    """A server publishing an epoch every 0.2 s, with device lists going in."""
    for server in _serve(config, kt_epoch_seconds=0.2):
        http = httpx.Client(base_url=server.url)
        for name in ("alice", "bob", "carol"):
            kit = register_account(http, name)
            signed = sign_device_list(
                name, 1, [(kit.device_id, kit.identity.public)], signer=kit.device_id,
                signer_key=kit.identity,
            )
            r = http.put(
                "/v1/kt/device-list", json={"device_list": b64e(signed.encode())},
                headers=kit.auth,
            )
            assert r.status_code == 202, r.text
        _wait_for_epoch(server.url, 6)
        yield server


@pytest.fixture
def quiet(config: ServerConfig) -> Iterator[LiveServer]:
    """A server that published epoch 1 at start and nothing more for an hour."""
    for server in _serve(config, kt_epoch_seconds=3600):
        _wait_for_epoch(server.url, 1)
        yield server


def _wait_for_epoch(url: str, epoch: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v1/kt/head")
        if r.status_code == 200 and r.json()["epoch"] >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} was not published")


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["audit", "kt", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_an_honest_log_verifies(busy: LiveServer, tmp_path: Path) -> None:
    code, out = _cli(busy.url)
    assert code == 0, out
    assert out["ok"] and out["from"] == 1 and out["to"] >= 6
    # With a state file the next run starts after the last verified head.
    state = tmp_path / "audit.state"
    assert _cli(busy.url, "--state", str(state))[0] == 0
    _wait_for_epoch(busy.url, out["to"] + 2)
    code, again = _cli(busy.url, "--state", str(state))
    assert code == 0 and again["from"] > out["to"] - 1, again
    code, part = _cli(busy.url, "--from", "3")
    assert code == 0 and part["from"] == 3
    text = CliRunner().invoke(cli, ["audit", "kt", busy.url, "--from", "2"])
    assert text.exit_code == 0 and text.stdout.startswith("key directory consistent: epochs 2..")


def test_a_fork_is_reported(busy: LiveServer, config: ServerConfig) -> None:
    key = load_key_file(config.data_dir / KT_SIGNING_KEY_FILE, 32)
    honest = decode_head(
        ed25519_public(key), b64d(httpx.get(f"{busy.url}/v1/kt/head/3").json()["head"])
    )
    previous = decode_head(
        ed25519_public(key), b64d(httpx.get(f"{busy.url}/v1/kt/head/2").json()["head"])
    )
    forged = sign_head(key, 3, bytes(32), honest.time_ms, previous)  # epoch 3, another root

    def newest_is_forged(path: str, body: Any) -> Any:
        if path == "/v1/kt/head":
            return {**body, "head": b64e(forged.encode())}
        return body

    result = audit_log(Fetch(busy.url, newest_is_forged))
    assert result.failure is not None and result.failure.code == "kt_epoch_fork"
    # A head remembered from an earlier run, served differently now: a fork too.
    state = {"server_key": b64e(ed25519_public(key)), "head": b64e(forged.encode())}
    result = audit_log(Fetch(busy.url), state=state)
    assert result.failure is not None and result.failure.code == "kt_epoch_fork"

    # The forged head served in the chain: its audit proof cannot rebuild its root.
    def chain_forged(path: str, body: Any) -> Any:
        if path == "/v1/kt/head/3":
            return {**body, "head": b64e(forged.encode())}
        return body

    result = audit_log(Fetch(busy.url, chain_forged), from_epoch=3)
    assert result.failure is not None
    assert (result.failure.epoch, result.failure.code) == (3, "invalid_kt_proof")


def test_a_tampered_audit_proof_is_reported(busy: LiveServer) -> None:
    def flip(path: str, body: Any) -> Any:
        if path == "/v1/kt/audit/2":
            proof = bytearray(b64d(body["proof"]))
            proof[-1] ^= 1
            return {**body, "proof": b64e(bytes(proof))}
        return body

    result = audit_log(Fetch(busy.url, flip))
    assert result.failure is not None and result.failure.epoch == 2
    assert result.to_json()["ok"] is False and result.to_json()["failure"]["epoch"] == 2
    assert result.failure.code in {"invalid_kt_proof", "malformed", "truncated"}
    assert result.last == 1  # epoch 1 was verified before


def test_a_witness_cosigns_and_the_quorum_holds(quiet: LiveServer, tmp_path: Path) -> None:
    key = tmp_path / "witness.key"
    key.write_bytes(WITNESS_SEED)
    code, out = _cli(quiet.url, "--witness-key", WITNESS_PUBLIC, "--min-witnesses", "1")
    assert code == 1 and out["failure"]["code"] == "kt_witness_quorum"
    code, out = _cli("witness", quiet.url, "--key", str(key))
    assert code == 0, out
    assert out["cosigned"] == [1] and out["witness_key"] == WITNESS_PUBLIC
    assert (tmp_path / "witness.key.state").exists()
    code, out = _cli("witness", quiet.url, "--key", str(key))
    assert code == 0 and "cosigned" not in out  # nothing new: it remembers epoch 1
    code, out = _cli(quiet.url, "--witness-key", WITNESS_PUBLIC, "--min-witnesses", "1")
    assert code == 0, out
    stranger = b64e(ed25519_public(bytes(32)))
    code, out = _cli(quiet.url, "--witness-key", stranger, "--min-witnesses", "1")
    assert code == 1 and out["failure"]["code"] == "kt_witness_quorum"


def test_the_witness_window_is_24_hours(quiet: LiveServer) -> None:
    head_time = httpx.get(f"{quiet.url}/v1/kt/head").json()["time_ms"]
    for skew in (MAX_SKEW_MS - 60_000, -(MAX_SKEW_MS - 60_000)):
        result = witness_round(Fetch(quiet.url), WITNESS_SEED, head_time + skew)
        assert result.failure is None and result.signed == [1]
    for skew in (MAX_SKEW_MS + 60_000, -(MAX_SKEW_MS + 60_000)):
        result = witness_round(Fetch(quiet.url), WITNESS_SEED, head_time + skew)
        assert result.failure is not None and result.failure.code == "kt_head_time_skew"
    assert abs(head_time - now_ms()) < 60_000


def test_usage_and_unreachable_servers_are_one_line_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "kt", "witness", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["error"]["code"] == "usage"
    code, out = _cli("http://127.0.0.1:9")
    assert code == 1 and out["failure"]["code"] == "kt_server_answer"
