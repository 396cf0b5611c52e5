"""The proof of "the server never holds content or keys": a real conversation between SDK
clients (texts both ways, an attachment, a second linked device) through a real server, then a
scan of every file the server wrote (SQLite database, -wal and -shm, attachments) and of every
log line it emitted, for the plaintexts, attachment bytes and keys the clients used."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer
from tidings.client.sdk import Client
from tidings.client.store import KdfParams
from tidings.server.config import ServerConfig
from tidings.server.logs import JsonFormatter
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e

PASS = "leak scan passphrase"


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every record of every logger (app, uvicorn, libraries) at DEBUG, while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("uvicorn", "tidings"))]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield stream
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def client_secrets(client: Client, who: str) -> dict[str, bytes]:
    """The key material of one SDK device that must never reach the server."""
    found: dict[str, bytes] = {}
    secret = client.account.secret
    found[f"{who} device secret"] = secret
    found[f"{who} device secret b64"] = b64e(secret).encode()
    private = client._identity.to_bytes()  # format byte, Ed25519 seed, X25519 private key
    found[f"{who} identity signing seed"] = private[1:33]
    found[f"{who} identity agreement key"] = private[33:65]
    prekeys = client._prekeys
    signed = prekeys.signed_prekey.id
    found[f"{who} signed prekey"] = prekeys.find_signed_prekey(signed).private
    for key in prekeys.one_time_prekeys[:5]:
        found[f"{who} one-time prekey {key.id}"] = prekeys.find_one_time_prekey(key.id).private
    found[f"{who} profile passphrase"] = PASS.encode()
    return found


@pytest.mark.sqlite_only  # scans the SQLite files in the data directory
def test_conversation_leaves_no_plaintext_or_key_on_the_server(
    tmp_path: Path, live_server: LiveServer, config: ServerConfig, all_logs: io.StringIO
) -> None:
    marker = os.urandom(6).hex()
    texts = [f"leak-scan {marker} text {i}: meet at the old mill" for i in range(3)]
    reply = f"leak-scan {marker} reply: see you there"
    attachment_plain = (f"leak-scan {marker} attachment ".encode() * 2000)[:50_000]
    secrets: dict[str, bytes] = {}

    async def main() -> None:
        kdf = KdfParams.fast_for_tests()
        alice = await Client.register(
            tmp_path / "alice", PASS, "alice", live_server.url, kdf=kdf, prekey_count=8
        )
        bob = await Client.register(
            tmp_path / "bob", PASS, "bob", live_server.url, kdf=kdf, prekey_count=8
        )
        code, _ = await alice.create_link_code()
        # The link code's local secret (key transparency's link binding) never leaves the
        # devices: only the part before the dot goes to the server.
        link_secret = code.partition(".")[2]
        secrets["link code secret b64"] = link_secret.encode()
        secrets["link code secret"] = b64d(link_secret)
        alice2 = await Client.link(
            tmp_path / "alice2", PASS, "alice", code, live_server.url, kdf=kdf, prekey_count=8
        )
        for text in texts:
            await alice.send_text("bob", text)
        received = [e.message for e in await bob.listen() if e.kind == "message"]
        assert [m.body for m in received if m is not None] == texts
        await bob.send_text("alice", reply)
        for device in (alice, alice2):
            events = await device.poll()
            assert reply in [e.message.body for e in events if e.message is not None]
        source = tmp_path / "secret-plan.bin"
        source.write_bytes(attachment_plain)
        await alice.send_file("bob", source, caption=f"leak-scan {marker} caption")
        [with_file] = [
            e.message for e in await bob.listen() if e.kind == "message" and e.message is not None
        ]
        saved = await bob.download_attachment(with_file.id, tmp_path / "downloaded.bin")
        assert saved.read_bytes() == attachment_plain

        # Franking keys and the attachment key live only in the receivers' stores.
        for message in bob.messages("alice"):
            item = bob.report_item(message.id)
            if item is None:
                continue
            secrets[f"franking key of {message.id}"] = item.franking_key
            content = pb.Content.FromString(item.content)
            for pointer in content.data.attachments:
                secrets["attachment key"] = pointer.key
                secrets["attachment key b64"] = b64e(pointer.key).encode()
        assert "attachment key" in secrets
        for who, client in (("alice", alice), ("alice2", alice2), ("bob", bob)):
            secrets.update(client_secrets(client, who))
            await client.aclose()

    def snapshot(label: str) -> dict[str, bytes]:
        files = [p for p in config.data_dir.rglob("*") if p.is_file() and p.name != "franking.key"]
        return {f"{label} {p.relative_to(config.data_dir)}": p.read_bytes() for p in files}

    asyncio.run(main())
    running = snapshot("running")  # with the write-ahead log as it is
    assert "running tidings.db-wal" in running
    live_server.stop()  # checkpoints the log into the database file

    for i, text in enumerate([*texts, reply]):
        secrets[f"plaintext {i}"] = text.encode()
    secrets["marker"] = marker.encode()
    for offset in (0, 10_000, 49_000):
        secrets[f"attachment bytes at {offset}"] = attachment_plain[offset : offset + 64]

    written = {**running, **snapshot("stopped")}
    assert "stopped tidings.db" in written
    assert len(list((config.data_dir / "attachments").iterdir())) == 1
    written["logs"] = all_logs.getvalue().encode()
    assert len(written["logs"]) > 0  # the capture saw the server's log lines
    for where, blob in written.items():
        for what, secret in secrets.items():
            assert secret not in blob, f"{what} found in {where}"
    # Sanity: the scan reads the real data (account names are meant to be stored).
    assert any(b"alice" in blob for blob in written.values())
