"""Who has mail: wakes the WebSocket of a device when envelopes are queued for it.

The durable queue is the source of truth; the hub only carries hints. `LocalHub` serves one
node. `RedisHub` publishes every hint on Redis as well, so a device connected to another node
wakes at once; if Redis is down, the hint is lost but the envelope is not — the device's
connection also polls its queue every `POLL_INTERVAL_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from tidings.errors import DecodeError
from tidings.server.ids import ACCOUNT_ID_MAX, DEVICE_ID_MAX, parse_id

log = logging.getLogger("tidings.server.hub")

POLL_INTERVAL_S = 5.0
"""How often a connected device re-reads its queue without any hint (lost-hint safety net)."""


class LocalHub:
    """In-process wake-ups keyed by (account id, device id)."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[int, int], set[asyncio.Event]] = defaultdict(set)

    @contextlib.asynccontextmanager
    async def subscribe(self, account_id: int, device_id: int) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        key = (account_id, device_id)
        self._waiters[key].add(event)
        try:
            yield event
        finally:
            self._waiters[key].discard(event)
            if not self._waiters[key]:
                del self._waiters[key]

    def wake_local(self, account_id: int, device_id: int) -> None:
        for event in self._waiters.get((account_id, device_id), ()):
            event.set()

    def wake_all_local(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def notify(self, account_id: int, device_id: int) -> None:
        self.wake_local(account_id, device_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisHub(LocalHub):
    """`LocalHub` plus Redis pub/sub between nodes."""

    def __init__(self, url: str, *, prefix: str = "tidings") -> None:
        super().__init__()
        import redis.asyncio as redis

        self._channel = f"{prefix}:mail"
        self._redis = redis.from_url(url)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._redis.aclose()

    async def notify(self, account_id: int, device_id: int) -> None:
        self.wake_local(account_id, device_id)
        try:
            await self._redis.publish(self._channel, f"{account_id}:{device_id}")
        except Exception as exc:  # a lost hint only delays delivery
            log.warning("mail hint not published: %s", type(exc).__name__)

    async def _listen(self) -> None:
        lost = False
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    if lost:
                        # Hints published while we were away are gone: every device connected
                        # here re-reads its queue now instead of at its next poll.
                        self.wake_all_local()
                        lost = False
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_hint(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect; polling covers the gap
                lost = True
                log.warning("redis pub/sub lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)

    def _on_hint(self, data: object) -> None:
        try:
            if not isinstance(data, bytes):
                raise ValueError("not bytes")
            account, _, device = data.decode().partition(":")
            self.wake_local(
                parse_id(account, what="account id", maximum=ACCOUNT_ID_MAX),
                parse_id(device, what="device id", maximum=DEVICE_ID_MAX),
            )
        except (UnicodeDecodeError, ValueError, DecodeError):
            # Not ours (or garbled): ignore it rather than dropping the subscription.
            log.warning("ignored a malformed mail hint")
