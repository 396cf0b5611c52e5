"""Key-transparency helpers for tests with real clients: vouch for a linked device and wait
until the server's next epoch publishes the account's list."""

from __future__ import annotations

import asyncio
import time

from tidings.client.sdk import Client

PUBLISH_TIMEOUT_S = 20.0


async def wait_published(client: Client, username: str, device_id: int) -> None:
    """Wait until ``username``'s published list names ``device_id`` (verified by ``client``)."""
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    while True:
        signed = await client._kt_lookup(username)
        if signed is not None and signed.device(device_id) is not None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{username}'s list never named device {device_id}")
        await asyncio.sleep(0.1)


async def vouch(existing: Client, linked: Client) -> None:
    """``existing`` vouches for the just ``linked`` device; returns once it is published."""
    await existing.kt_sync()
    await wait_published(existing, existing.account.username, linked.account.device_id)


def wait_published_http(server_url: str, username: str, devices: int) -> None:
    """Wait (synchronously, for CLI tests) until ``username``'s published list names
    ``devices`` devices."""
    import httpx

    from tidings.crypto.kt_device_list import decode_device_list
    from tidings.wire.base64url import b64d

    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    while time.monotonic() < deadline:
        body = httpx.get(f"{server_url}/v1/kt/lookup/{username}").json()
        listed = body.get("device_list") if isinstance(body, dict) else None
        if listed and len(decode_device_list(b64d(listed)).devices) == devices:
            return
        time.sleep(0.1)
    raise AssertionError(f"{username}'s list never named {devices} devices")
