"""Real SDK clients for tests against a live server: one test passphrase, the fast KDF, and
the register / link steps the end-to-end tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.support.kt import vouch
from tidings.client.sdk import Client
from tidings.client.store import KdfParams

T = TypeVar("T")

PASS = "test passphrase"
"""The passphrase of every profile these helpers create."""

PREKEYS = 30
"""One-time prekeys uploaded at registration and link (enough for a test's sessions)."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one SDK coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


async def register(tmp_path: Path, profile: str, name: str, url: str) -> Client:
    """Register account ``name`` at ``url`` in the profile ``tmp_path / profile``."""
    return await Client.register(
        tmp_path / profile, PASS, name, url, kdf=KdfParams.fast_for_tests(), prekey_count=PREKEYS
    )


async def link_with_code(
    tmp_path: Path, profile: str, existing: Client, url: str, code: str
) -> Client:
    """Link a new device of ``existing``'s account in ``tmp_path / profile`` with ``code``;
    nothing vouches for it (key transparency: the caller decides)."""
    return await Client.link(
        tmp_path / profile, PASS, existing.account.username, code, url,
        kdf=KdfParams.fast_for_tests(), prekey_count=PREKEYS,
    )


async def link(tmp_path: Path, profile: str, existing: Client, url: str) -> Client:
    """Link a new device with a fresh code from ``existing``, which then vouches for it:
    returns once its list is published, so anyone may send to it."""
    code, _ = await existing.create_link_code()
    linked = await link_with_code(tmp_path, profile, existing, url, code)
    await vouch(existing, linked)
    return linked
