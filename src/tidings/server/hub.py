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

log = logging.getLogger("tidings.server.hub")

POLL_INTERVAL_S = 5.0
"""How often a connected device re-reads its queue without any hint (lost-hint safety net)."""

_CHANNEL = "tidings:mail"


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

    async def notify(self, account_id: int, device_id: int) -> None:
        self.wake_local(account_id, device_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisHub(LocalHub):
    """`LocalHub` plus Redis pub/sub between nodes."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

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
            await self._redis.publish(_CHANNEL, f"{account_id}:{device_id}")
        except Exception as exc:  # a lost hint only delays delivery
            log.warning("mail hint not published: %s", type(exc).__name__)

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    account, _, device = message["data"].decode().partition(":")
                    self.wake_local(int(account), int(device))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect; polling covers the gap
                log.warning("redis pub/sub lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
