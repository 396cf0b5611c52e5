"""The composed app in-process for tests: a node configuration whose limits only the
rate-limit tests meet (`make_config`), and `Net`, the app plus the test's users (register,
send franked messages through the real server, report), for the safety and server tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.support.devices import DeviceKit, ratchet_body, register_account
from tests.support.staff import active_staff
from tidings.crypto import attachment, franking
from tidings.crypto.franking import ReportItem
from tidings.safety.service import SafetyService
from tidings.safety.sql import SafetyDatabase
from tidings.safety.staff import Principal, Role
from tidings.server.config import ServerConfig
from tidings.storage.database import sqlite_url
from tidings.storage.safety_schema import (
    safety_audit_log,
    safety_cases,
    safety_evidence,
    safety_report_replay,
    safety_reports,
)
from tidings.wire import pb
from tidings.wire.base64url import b64d, b64e


def make_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    """Limits high enough that only the rate-limit tests ever meet them."""
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "rate_registrations_per_hour": 100_000,
        "rate_prekey_fetches_per_minute": 100_000,
        "rate_sends_per_minute": 100_000,
    }
    base.update(overrides)
    return ServerConfig(**base)


@dataclass
class Net:
    """The app plus the test's users: register, send franked messages, report."""

    client: TestClient
    config: ServerConfig
    heads: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    counter: int = 0

    @property
    def safety(self) -> SafetyService:
        service: SafetyService = self.client.app.state.safety  # type: ignore[attr-defined]
        return service

    def register(self, prefix: str) -> DeviceKit:
        """A new account ``<prefix><n>`` with one device (`register_account`)."""
        self.counter += 1
        return register_account(self.client, f"{prefix}{self.counter}")

    def upload(self, sender: DeviceKit, plaintext: bytes) -> pb.AttachmentPointer:
        key = attachment.generate_key()
        ciphertext, digest = attachment.encrypt_bytes(key, plaintext, chunk_size=256)
        r = self.client.post(
            "/v1/attachments",
            content=ciphertext,
            headers={**sender.auth, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        return pb.AttachmentPointer(
            id=r.json()["id"],
            key=key,
            digest=digest,
            size=len(plaintext),
            chunk_size=256,
            content_type="image/png",
        )

    def send(
        self,
        sender: DeviceKit,
        recipient: DeviceKit,
        text: str,
        *,
        attachments: tuple[pb.AttachmentPointer, ...] = (),
        conversation: bytes | None = None,
    ) -> ReportItem:
        """Frank, send through the server (which tags), fetch as the recipient: the
        recipient's `ReportItem` for the message."""
        conv = conversation or franking.direct_conversation_id(sender.username, recipient.username)
        data = pb.DataMessage(body=text)
        data.attachments.extend(attachments)
        content = pb.Content(
            version=1,
            sent_at_ms=1,
            conversation_id=conv,
            previous_commitment=self.heads.get((sender.username, conv), b""),
            data=data,
        )
        franked = franking.frank(content)
        self.heads[(sender.username, conv)] = franked.commitment
        body = {
            "messages": [
                {
                    "device_id": recipient.device_id,
                    "registration_id": recipient.registration_id,
                    "type": pb.Envelope.RATCHET,
                    "body": b64e(ratchet_body()),
                    "commitment": b64e(franked.commitment),
                }
            ]
        }
        r = self.client.put(f"/v1/messages/{recipient.username}", json=body, headers=sender.auth)
        assert r.status_code == 200, r.text
        message_id = r.json()["message_ids"][0]
        envelopes = self.client.get("/v1/messages", headers=recipient.auth).json()["envelopes"]
        for text_b64 in envelopes:
            env = pb.Envelope.FromString(b64d(text_b64))
            if b64e(env.message_id) == message_id:
                self.client.delete(f"/v1/messages/{message_id}", headers=recipient.auth)
                return ReportItem(
                    content=franked.content,
                    franking_key=franked.franking_key,
                    commitment=env.commitment,
                    franking_tag=env.franking_tag,
                    sender=env.sender,
                    sender_device=env.sender_device,
                    recipient=env.recipient,
                    recipient_device=env.recipient_device,
                    server_timestamp_ms=env.server_timestamp_ms,
                    message_id=env.message_id,
                )
        raise AssertionError("the envelope did not arrive")

    def report(
        self,
        reporter: DeviceKit,
        items: list[ReportItem],
        *,
        reported: int = -1,
        category: str = "harassment",
        attachments: list[dict[str, Any]] | None = None,
    ) -> Any:
        body = {
            "category": category,
            "note": "they keep doing this",
            "items": [b64e(i.encode()) for i in items],
            "reported_index": reported % len(items),
            "attachments": attachments or [],
            "block": False,
        }
        return self.client.post("/v1/reports", json=body, headers=reporter.auth)

    def counts(self) -> dict[str, int]:
        db = SafetyDatabase(
            self.config.database_url or sqlite_url(self.config.data_dir),
            schema=self.config.database_schema,
        )
        try:
            with db.read() as c:
                return {
                    t.name: int(c.execute(select(func.count()).select_from(t)).scalar_one())
                    for t in (
                        safety_reports,
                        safety_evidence,
                        safety_report_replay,
                        safety_cases,
                        safety_audit_log,
                    )
                }
        finally:
            db.dispose()

    def staff(self, username: str, role: Role, queues: tuple[str, ...]) -> Principal:
        account = active_staff(self.safety, username, [role], queues=queues)
        return self.safety.staff.principal_for(account.staff_id)


def _b64d(text: str) -> bytes:
    from tidings.wire.base64url import b64d

    return b64d(text)
