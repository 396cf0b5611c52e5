"""Who has mail: wakes the WebSocket of a device when envelopes are queued for it; and who
changed: tells every node to forget what it cached about an account (`invalidate`).

The durable queue is the source of truth; the hub only carries hints. `LocalHub` serves one
node. `RedisHub` publishes every hint on Redis as well, so a device connected to another node
wakes at once; if Redis is down, the hint is lost but the envelope is not — the node's
`tidings.server.sweep.QueueSweep` finds it within about one `SWEEP_INTERVAL_S` and wakes the
device's connection here (`LocalHub.wake_stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable

from tidings.errors import DecodeError
from tidings.server.ids import ACCOUNT_ID_MAX, DEVICE_ID_MAX, parse_id
from tidings.storage.relay import StoredEnvelope

log = logging.getLogger("tidings.server.hub")

SWEEP_INTERVAL_S = 5.0
"""How often a node looks for envelopes whose hint was lost (`tidings.server.sweep`)."""


_INVALIDATE = "x"
"""Prefix of an invalidation on the Redis channel (``x<account id>``; hints are ``a:d``)."""
EVERY_ACCOUNT = 0
"""The account id a listener gets when everything must go (account ids start at 1)."""


class Mailbox(asyncio.Event):
    """One connection's subscription: an event set on every hint, and, when the hub is handed
    every committed envelope of this node's queues (`LocalHub.deliver_committed`, an SQLite
    node), those envelopes in queue order (``pushed``): the connection sends them without
    reading its queue. ``complete`` says whether it may rely on that; ``overflowed`` that some
    were dropped (more than `MAX_PUSHED` waiting), so the queue must be read; ``stale`` that
    the node's sweep found an envelope past ``sent_through`` (the connection's last sent queue
    position), so the queue must be read."""

    def __init__(self, complete: bool) -> None:
        super().__init__()
        self.complete = complete
        self.pushed: deque[StoredEnvelope] = deque()
        self.overflowed = False
        self.stale = False
        self.sent_through = 0

    def push(self, item: StoredEnvelope) -> None:
        if len(self.pushed) >= MAX_PUSHED:
            self.pushed.clear()
            self.overflowed = True
        else:
            self.pushed.append(item)
        self.set()


MAX_PUSHED = 1000
"""Envelopes waiting in one `Mailbox`; past it, they are dropped and read from the queue."""


class LocalHub:
    """In-process wake-ups keyed by (account id, device id)."""

    pushes_complete = False
    """True once `deliver_committed` receives every envelope committed to the queues (the
    embedded node's writer), so connections can take them from their `Mailbox`."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[int, int], set[Mailbox]] = defaultdict(set)
        self._on_invalidate: list[Callable[[int], None]] = []

    def on_invalidate(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(account_id)`` on every invalidation (from this node or another)."""
        self._on_invalidate.append(listener)

    def invalidate_local(self, account_id: int) -> None:
        """Forget the account on this node, then wake its connections here (each re-checks
        the account's enforcement)."""
        for listener in self._on_invalidate:
            listener(account_id)
        for (account, _), events in self._waiters.items():
            if account == account_id:
                for event in events:
                    event.set()

    async def invalidate(self, account_id: int) -> None:
        """The account's devices, credentials or enforcement changed: every node forgets
        what it cached about it and wakes its connections."""
        self.invalidate_local(account_id)

    def deliver_committed(self, stored: list[StoredEnvelope]) -> None:
        """Hand freshly committed envelopes to the mailboxes of their devices here."""
        waiters = self._waiters
        for item in stored:
            for mailbox in waiters.get((item.account_id, item.device_id), ()):
                mailbox.push(item)

    @contextlib.asynccontextmanager
    async def subscribe(self, account_id: int, device_id: int) -> AsyncIterator[Mailbox]:
        event = Mailbox(self.pushes_complete)
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

    def wake_stale(self, newest: dict[tuple[int, int], int]) -> int:
        """The sweep's finding, ``(account id, device id) -> newest queue position``: wake the
        connections here of those devices that have not sent that position yet, marking their
        mailbox ``stale`` (read the queue, even where pushes are complete). Returns how many
        were woken."""
        woken = 0
        waiters = self._waiters
        for key, position in newest.items():
            for mailbox in waiters.get(key, ()):
                if mailbox.sent_through < position:
                    mailbox.stale = True
                    mailbox.set()
                    woken += 1
        return woken

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

    async def invalidate(self, account_id: int) -> None:
        self.invalidate_local(account_id)
        try:
            await self._redis.publish(self._channel, f"{_INVALIDATE}{account_id}")
        except Exception as exc:  # the other nodes' caches expire after their ttl
            log.warning("invalidation not published: %s", type(exc).__name__)

    async def _listen(self) -> None:
        lost = False
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    if lost:
                        # Hints published while we were away are gone: every device connected
                        # here re-reads its queue now instead of at the next sweep.
                        self.wake_all_local()
                        # So were invalidations: forget everything cached.
                        for listener in self._on_invalidate:
                            listener(EVERY_ACCOUNT)
                        lost = False
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_hint(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect; the sweep covers the gap
                lost = True
                log.warning("redis pub/sub lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)

    def _on_hint(self, data: object) -> None:
        try:
            if not isinstance(data, bytes):
                raise ValueError("not bytes")
            text = data.decode()
            if text.startswith(_INVALIDATE):
                self.invalidate_local(parse_id(text[1:], what="account id", maximum=ACCOUNT_ID_MAX))
                return
            account, _, device = text.partition(":")
            self.wake_local(
                parse_id(account, what="account id", maximum=ACCOUNT_ID_MAX),
                parse_id(device, what="device id", maximum=DEVICE_ID_MAX),
            )
        except (UnicodeDecodeError, ValueError, DecodeError):
            # Not ours (or garbled): ignore it rather than dropping the subscription.
            log.warning("ignored a malformed mail hint")
