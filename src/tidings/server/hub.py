"""Who has mail: hands committed envelopes to the WebSockets of their devices, or wakes them
to read their queue; and who changed: tells every node to forget what it cached about an
account (`invalidate`).

The durable queue is the source of truth; the hub only carries copies and hints. `LocalHub`
serves one node. `RedisHub` carries them between nodes on Redis as well, so a device connected
to another node gets its envelope at once; if Redis is down, the copy is lost but the envelope
is not — the node's `tidings.server.sweep.QueueSweep` finds it within about one
`SWEEP_INTERVAL_S` and wakes the device's connection here (`LocalHub.wake_stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable

from tidings.errors import DecodeError
from tidings.server.ids import ACCOUNT_ID_MAX, DEVICE_ID_MAX, parse_id
from tidings.server.pushed_envelopes import (
    NODE_TAG_LEN,
    PUSH_PREFIX,
    decode_pushes,
    encode_pushes,
)
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
    every committed envelope of the queues (`LocalHub.deliver_committed`: the writer's commits
    on this node and, in a cluster, those of the other nodes over Redis), those envelopes
    (``pushed``): the connection sends them without reading its queue. ``complete`` says
    whether it may rely on that; ``overflowed`` that some were dropped (more than `MAX_PUSHED`
    waiting), so the queue must be read; ``stale`` that the queue must be read (the node's
    sweep found an envelope this connection has not sent, or pushes may have been lost).

    Which envelopes are new to the connection (`is_new`, `missing`) depends on ``ordered``:
    where queue positions commit in order (SQLite: one write transaction at a time) the
    highest position sent (``sent_through``) is the whole record. Where they do not
    (PostgreSQL: a batch of node A may take a lower position and commit after one of node B's
    was sent) the connection keeps the positions it sent and has not seen acknowledged, and
    reads its queue from the start (`read_after`); an envelope committed "late" is then still
    delivered at the next wake-up instead of being skipped until the device reconnects."""

    def __init__(self, complete: bool, *, ordered: bool = True) -> None:
        super().__init__()
        self.complete = complete
        self.ordered = ordered
        self.pushed: deque[StoredEnvelope] = deque()
        self.overflowed = False
        self.stale = False
        self.sent_through = 0
        """The highest queue position this connection has sent."""
        self._unacked: dict[bytes, int] = {}
        """Unordered queues: message id -> position, sent and not yet acknowledged."""
        self._unacked_seqs: set[int] = set()
        self._recent: deque[int] = deque(maxlen=RECENTLY_ACKED)
        """Unordered queues: positions acknowledged lately (a push still in flight for one of
        them is not sent again)."""

    def push(self, item: StoredEnvelope) -> None:
        if len(self.pushed) >= MAX_PUSHED:
            self.pushed.clear()
            self.overflowed = True
        else:
            self.pushed.append(item)
        self.set()

    def read_after(self) -> int:
        """The position a fresh read of the queue starts after."""
        return self.sent_through if self.ordered else 0

    def is_new(self, seq: int) -> bool:
        """Whether the envelope at queue position ``seq`` is still to be sent here."""
        if self.ordered:
            return seq > self.sent_through
        return seq not in self._unacked_seqs and seq not in self._recent

    def sent(self, seq: int, message_id: bytes) -> None:
        """Record that the envelope at ``seq`` went out on this connection."""
        if seq > self.sent_through:
            self.sent_through = seq
        if not self.ordered:
            if len(self._unacked) >= MAX_UNACKED_TRACKED:
                # A device that does not ack: forget the oldest (at worst sent once more).
                oldest = next(iter(self._unacked))
                self._unacked_seqs.discard(self._unacked.pop(oldest))
            self._unacked[message_id] = seq
            self._unacked_seqs.add(seq)

    def acknowledged(self, message_id: bytes) -> None:
        """The device's ack of ``message_id`` was committed (the envelope is deleted)."""
        if not self.ordered:
            seq = self._unacked.pop(message_id, None)
            if seq is not None:
                self._unacked_seqs.discard(seq)
                self._recent.append(seq)

    def missing(self, positions: list[int]) -> bool:
        """Whether any of these stored positions (the sweep's finding for this device) has not
        been sent here."""
        if self.ordered:
            return max(positions) > self.sent_through
        return any(self.is_new(seq) for seq in positions)


MAX_PUSHED = 1000
"""Envelopes waiting in one `Mailbox`; past it, they are dropped and read from the queue."""
MAX_UNACKED_TRACKED = 10_000
"""Sent, unacknowledged envelopes one connection keeps track of (unordered queues): the
default ``queue_limit``, so a device catching up on a full queue is not sent any twice."""
RECENTLY_ACKED = 64
"""Acknowledged positions one connection remembers (unordered queues)."""
MAX_OUTBOX_BYTES = 32 * 1024 * 1024
"""Pushed envelopes waiting for Redis, in bytes; past it, new ones are dropped (the other
nodes' sweeps find them)."""
PUBLISH_TIMEOUT_S = 5.0
"""How long one publish may wait for Redis before the publisher gives up on it."""
PUBLISH_PIPELINE = 64
"""Messages published in one Redis round trip."""


class LocalHub:
    """In-process wake-ups keyed by (account id, device id)."""

    pushes_complete = False
    """True once `deliver_committed` receives every envelope committed to the queues (the
    node's writer, and in a cluster the other nodes' over Redis), so connections can take them
    from their `Mailbox`."""
    ordered = True
    """Whether queue positions are committed in increasing order (SQLite; see `Mailbox`)."""

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
        event = Mailbox(self.pushes_complete, ordered=self.ordered)
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

    def wake_stale(self, found: dict[tuple[int, int], list[int]]) -> int:
        """The sweep's finding, ``(account id, device id) -> queue positions stored``: wake
        the connections here of those devices that have not sent one of them, marking their
        mailbox ``stale`` (read the queue, even where pushes are complete). Returns how many
        were woken."""
        woken = 0
        waiters = self._waiters
        for key, positions in found.items():
            for mailbox in waiters.get(key, ()):
                if mailbox.missing(positions):
                    mailbox.stale = True
                    mailbox.set()
                    woken += 1
        return woken

    def wake_all_local(self) -> None:
        """Every connection here reads its queue now (hints or pushes may have been lost)."""
        for events in self._waiters.values():
            for event in events:
                event.stale = True
                event.set()

    async def notify(self, account_id: int, device_id: int) -> None:
        self.wake_local(account_id, device_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisHub(LocalHub):
    """`LocalHub` plus Redis pub/sub between nodes.

    Once the node's writer hands it every commit (`deliver_committed`, with `pushes_complete`
    set), the committed envelopes themselves go to the other nodes on the mail channel
    (`tidings.server.pushed_envelopes`), one message per batch, published in commit order by
    one task; a node hands what it receives to its connections' mailboxes, as its own
    writer's commits are. Without that (or from a node that only sends hints), a hint
    ``account:device`` makes the device's connections here read their queue."""

    def __init__(self, url: str, *, prefix: str = "tidings") -> None:
        super().__init__()
        import redis.asyncio as redis

        self._channel = f"{prefix}:mail"
        self._redis = redis.from_url(url)
        self._task: asyncio.Task[None] | None = None
        # Publishing on a connection of its own with a timeout: a Redis that stops answering
        # must not hold the outbox (the subscription's reads wait as long as they need).
        self._publisher_redis = redis.from_url(url, socket_timeout=PUBLISH_TIMEOUT_S)
        self._node = os.urandom(NODE_TAG_LEN)
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._dropping = False
        self._outbox_ready = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        self._publisher = asyncio.create_task(self._publish_pushes())

    async def stop(self) -> None:
        for task in (self._task, self._publisher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._redis.aclose()
        await self._publisher_redis.aclose()

    def deliver_committed(self, stored: list[StoredEnvelope]) -> None:
        """Hand the envelopes to the connections here, and queue them for the other nodes."""
        super().deliver_committed(stored)
        if self._outbox_bytes >= MAX_OUTBOX_BYTES:
            # Redis is not keeping up (or is down): the other nodes' sweeps find these.
            if not self._dropping:
                log.warning("pushed envelopes dropped: the Redis outbox is full")
                self._dropping = True
            return
        for message in encode_pushes(self._node, stored):
            self._outbox.append(message)
            self._outbox_bytes += len(message)
        self._outbox_ready.set()

    async def _publish_pushes(self) -> None:
        outbox, ready = self._outbox, self._outbox_ready
        while True:
            await ready.wait()
            ready.clear()
            while outbox:
                waiting = [outbox.popleft() for _ in range(min(len(outbox), PUBLISH_PIPELINE))]
                self._outbox_bytes -= sum(map(len, waiting))
                if self._dropping and self._outbox_bytes < MAX_OUTBOX_BYTES // 2:
                    self._dropping = False
                try:
                    async with self._publisher_redis.pipeline(transaction=False) as pipe:
                        for data in waiting:
                            pipe.publish(self._channel, data)
                        await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # lost pushes only delay delivery (the sweep)
                    log.warning("pushed envelopes not published: %s", type(exc).__name__)

    async def notify(self, account_id: int, device_id: int) -> None:
        self.wake_local(account_id, device_id)
        if self.pushes_complete:
            return  # the envelope itself went to the other nodes at its commit
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
        # At the first subscription too: what was published before it was not heard here.
        lost = True
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
            if data[:1] == PUSH_PREFIX:
                node, stored = decode_pushes(data)
                if node != self._node:  # our own were delivered here at the commit
                    super().deliver_committed(stored)
                return
            text = data.decode()
            if text.startswith(_INVALIDATE):
                self.invalidate_local(parse_id(text[1:], what="account id", maximum=ACCOUNT_ID_MAX))
                return
            account, _, device = text.partition(":")
            key = (
                parse_id(account, what="account id", maximum=ACCOUNT_ID_MAX),
                parse_id(device, what="device id", maximum=DEVICE_ID_MAX),
            )
            # A hint, not the envelope: the connections read their queue.
            for mailbox in self._waiters.get(key, ()):
                mailbox.stale = True
                mailbox.set()
        except (UnicodeDecodeError, ValueError, DecodeError):
            # Not ours (or garbled): ignore it rather than dropping the subscription.
            log.warning("ignored a malformed mail hint")
