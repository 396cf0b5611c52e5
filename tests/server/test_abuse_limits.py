"""Per-account limits on what costs the provider most: reports (review time), attachment
uploads (disk) and stored attachment bytes (a quota). 429 always carries Retry-After; a
refused request stores nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import count_rows
from tests.support.app import Net, make_config
from tidings.app import create_app
from tidings.errors import AttachmentQuotaExceededError
from tidings.server.config import ServerConfig


def _upload(client: TestClient, auth: dict[str, str], size: int) -> httpx.Response:
    return client.post(
        "/v1/attachments",
        content=os.urandom(size),
        headers={**auth, "Content-Type": "application/octet-stream"},
    )


@pytest.fixture
def limited(config: ServerConfig) -> Iterator[Net]:
    limits = {
        "rate_reports_per_hour": 3,
        "rate_attachment_uploads_per_minute": 3,
        "attachment_quota_bytes": 10_000,
    }
    cfg = make_config(
        config.data_dir,
        database_url=config.database_url,
        database_schema=config.database_schema,
        **limits,
    )
    with TestClient(create_app(cfg), raise_server_exceptions=True) as client:
        yield Net(client, cfg)


def test_valid_reports_past_the_limit_get_429_with_retry_after_and_store_nothing(
    limited: Net,
) -> None:
    alice, bob = limited.register("alice"), limited.register("bob")
    carol = limited.register("carol")
    items = [limited.send(alice, bob, f"spam {i}") for i in range(5)]
    for i in range(3):
        accepted = limited.report(bob, [items[i]])
        assert accepted.status_code == 201, accepted.text
    before = limited.counts()
    refused = limited.report(bob, [items[3]])  # as valid as the three before it
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert limited.counts() == before
    # Per account: another reporter is not limited by bob's reports.
    other = limited.send(alice, carol, "spam")
    assert limited.report(carol, [other]).status_code == 201


def test_uploads_past_the_rate_limit_get_429_with_retry_after(limited: Net) -> None:
    alice, bob = limited.register("alice"), limited.register("bob")
    for _ in range(3):
        assert _upload(limited.client, alice.auth, 100).status_code == 201
    refused = _upload(limited.client, alice.auth, 100)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert count_rows(limited.config, "attachments") == 3
    assert _upload(limited.client, bob.auth, 100).status_code == 201


def test_the_attachment_quota_refuses_an_upload_that_would_pass_it(limited: Net) -> None:
    alice, bob = limited.register("alice"), limited.register("bob")
    assert _upload(limited.client, alice.auth, 6_000).status_code == 201
    refused = _upload(limited.client, alice.auth, 6_000)
    assert refused.status_code == 507
    assert refused.json()["error"]["code"] == "attachment_quota_exceeded"
    assert count_rows(limited.config, "attachments") == 1
    files = list((limited.config.data_dir / "attachments").iterdir())
    assert len(files) == 1  # nothing written for the refused one
    assert _upload(limited.client, alice.auth, 4_000).status_code == 201
    assert _upload(limited.client, bob.auth, 6_000).status_code == 201


def test_the_quota_is_checked_again_when_the_upload_is_recorded(limited: Net) -> None:
    # Two uploads can both pass the up-front check; the record of the second is refused.
    state: Any = limited.client.app.state.tidings  # type: ignore[attr-defined]
    portal: Any = limited.client.portal  # the app's event loop (its database pool lives there)
    alice = limited.register("alice")
    account_id = portal.call(state.store.account_id, alice.username)

    def add(attachment_id: str) -> None:
        portal.call(
            lambda: state.store.add_attachment(
                attachment_id, account_id, 6_000, 0, 10**15, quota_bytes=10_000
            )
        )

    add("a" * 43)
    with pytest.raises(AttachmentQuotaExceededError):
        add("b" * 43)
    assert count_rows(limited.config, "attachments") == 1


def test_limits_are_settings(tmp_path: Path) -> None:
    loaded = ServerConfig.load(
        env={
            "TIDINGS_RATE_REPORTS_PER_HOUR": "7",
            "TIDINGS_RATE_ATTACHMENT_UPLOADS_PER_MINUTE": "8",
            "TIDINGS_ATTACHMENT_QUOTA_BYTES": "9",
        }
    )
    assert (
        loaded.rate_reports_per_hour,
        loaded.rate_attachment_uploads_per_minute,
        loaded.attachment_quota_bytes,
    ) == (7, 8, 9)
