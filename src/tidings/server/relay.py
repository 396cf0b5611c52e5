"""Hot-path caches of one node: device credentials with the account's enforcement (for
`tidings.server.auth.authenticate`) and each account's device list (for sends).

Invalidation, not guesswork: every change that could make an entry wrong calls
`LocalHub.invalidate` with the account id, which reaches `NodeCache.invalidate` on every node
(`RedisHub` publishes it): a trust & safety decision (`tidings.app.wake_account`), a device
linked or removed, an account deleted. A ban therefore takes effect at once on every node.
``ttl_s`` bounds what a lost invalidation (Redis unreachable) can leave stale, and a send whose
device list does not match the cached one is checked against the database before any refusal.

Entries are filled only by reads that started after the last invalidation (`generation`): a read
racing an invalidation is used once but not kept.

Misses are read once, not once per request (`NodeCache.read_once`): when an entry expires, every
request of that device or account in flight at that moment waits for one database read. Without
it, a node that had fallen behind (hundreds of pipelined sends in flight per sender) paid one
read per waiting send at each expiry, and more time lost meant more sends waiting: it did not
recover from an overload (docs/performance.md, "Levers pulled").

Entries in use are refreshed ahead of their expiry (`NodeCache.refresh_ahead`): a request that
finds its entry past a point drawn between ``REFRESH_FROM`` and ``REFRESH_TO`` of ``ttl_s``
still uses it and starts one read in the background. Without it, every entry filled at the same
moment (a node's clients connecting together) expired together ``ttl_s`` later, and every send
of those devices waited for its read at once: a 170-240 ms stall every ``ttl_s`` at 800 msg/s
(docs/performance.md, "Relay, stops 19-20"). No entry older than ``ttl_s`` is ever used, so the
bound on a lost invalidation is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tidings.server.hub import EVERY_ACCOUNT
from tidings.storage.messaging import DeviceRecord

T = TypeVar("T")

MAX_ENTRIES = 200_000
"""Per map: past it the map starts over (a bound on memory, never on correctness)."""

REFRESH_FROM = 0.5
REFRESH_TO = 0.9
"""An entry's background refresh falls due at a fraction of ``ttl_s`` drawn uniformly from
this range when it is stored, so that entries filled together are refreshed apart."""

log = logging.getLogger("tidings.server.relay")


@dataclass(frozen=True, slots=True)
class CachedDevice:
    """A device's record and its account's active enforcement, as of ``fetched_s``."""

    record: DeviceRecord
    enforcement: str | None
    enforcement_until_ms: int | None
    fetched_s: float
    refresh_s: float
    """When a request that uses it starts a background refresh (monotonic seconds)."""


@dataclass(frozen=True, slots=True)
class DeviceList:
    """An account's current devices: device id -> registration id."""

    account_id: int
    registration_ids: dict[int, int]
    fetched_s: float
    refresh_s: float
    """When a request that uses it starts a background refresh (monotonic seconds)."""


class NodeCache:
    """Per-node caches keyed so that one account id invalidates everything about it."""

    def __init__(
        self,
        ttl_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """``monotonic`` and ``uniform`` (the refresh point's draw): a test's stand-ins."""
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._uniform = uniform
        self._refreshing: set[asyncio.Task[Any]] = set()
        """Background refreshes in flight (`refresh_ahead`), kept until done."""
        self._devices: dict[tuple[str, int], CachedDevice] = {}
        self._lists: dict[str, DeviceList] = {}
        self._keys: dict[int, set[tuple[str, int]]] = {}
        """Account id -> its keys in ``_devices``; ``(username, 0)`` stands for its list."""
        self._account_generation: dict[int, int] = {}
        self._account_of: dict[str, int] = {}
        """Username -> account id of every cached entry (for `forget_username`)."""
        self.generation = 0
        """Bumped by every invalidation: a read that started before one is not stored."""
        self._reading: dict[tuple[Hashable, int], asyncio.Future[Any]] = {}
        """The reads in flight (`read_once`), by key and the generation they started in."""

    async def read_once(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``, or the result of the same read already in flight: concurrent misses of
        one entry share one database read. Only a read begun since the last invalidation is
        shared (a request after a ban never gets a read from before it). A request whose
        shared read was cancelled (its request went away) reads again itself; one whose
        shared read failed gets the same exception.

        Raises: whatever ``read`` raises."""
        slot = (key, self.generation)
        while (shared := self._reading.get(slot)) is not None:
            await asyncio.wait([shared])  # raises only if this request itself is cancelled
            if not shared.cancelled():
                return shared.result()  # type: ignore[no-any-return]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Retrieved here, so a failure nobody else waited for is not logged as unretrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._reading[slot] = future
        try:
            result = await read()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._reading[slot]

    def due(self, entry: CachedDevice | DeviceList) -> bool:
        """Whether a request using ``entry`` should start its refresh (`refresh_ahead`)."""
        return self._monotonic() >= entry.refresh_s

    def refresh_ahead(self, key: Hashable, read: Callable[[], Awaitable[Any]]) -> None:
        """Start ``read()`` (which stores what it finds) in the background through `read_once`,
        unless a read of ``key`` is already in flight. Its failure is logged by class and left
        for the entry's expiry: the request that found the entry due goes on with it. Call on
        the event loop."""
        if (key, self.generation) in self._reading:
            return

        async def refresh() -> None:
            try:
                await self.read_once(key, read)
            except Exception as exc:
                log.warning("cache refresh failed", extra={"error": type(exc).__name__})

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def close(self) -> None:
        """Cancel the background refreshes in flight (the node is stopping)."""
        tasks = list(self._refreshing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refresh_point(self, now_s: float) -> float:
        return now_s + self.ttl_s * self._uniform(REFRESH_FROM, REFRESH_TO)

    # -- credentials and enforcement ---------------------------------------------------------

    def device(self, username: str, device_id: int, now_ms: int) -> CachedDevice | None:
        """The fresh cached entry, or None (missing, past ``ttl_s``, or its enforcement's
        end has passed)."""
        entry = self._devices.get((username, device_id))
        if entry is None or self._monotonic() - entry.fetched_s > self.ttl_s:
            return None
        if entry.enforcement_until_ms is not None and now_ms >= entry.enforcement_until_ms:
            return None
        return entry

    def keep_device(
        self,
        generation: int,
        record: DeviceRecord,
        enforcement: str | None,
        until_ms: int | None,
    ) -> None:
        """Remember what a read begun at ``generation`` found (ignored if an invalidation came
        since)."""
        if generation != self.generation or self.ttl_s <= 0:
            return
        if len(self._devices) >= MAX_ENTRIES:
            self.invalidate(EVERY_ACCOUNT)
        key = (record.username, record.device_id)
        now_s = self._monotonic()
        self._devices[key] = CachedDevice(
            record, enforcement, until_ms, now_s, self._refresh_point(now_s)
        )
        self._keys.setdefault(record.account_id, set()).add(key)
        self._account_of[record.username] = record.account_id

    def touched(self, username: str, device_id: int, now_ms: int) -> None:
        """The device's ``last_seen_ms`` was just moved to ``now_ms`` in the database."""
        entry = self._devices.get((username, device_id))
        if entry is not None:
            record = replace(entry.record, last_seen_ms=now_ms)
            self._devices[(username, device_id)] = replace(entry, record=record)

    # -- device lists ------------------------------------------------------------------------

    def device_list(self, username: str) -> DeviceList | None:
        entry = self._lists.get(username)
        if entry is None or self._monotonic() - entry.fetched_s > self.ttl_s:
            return None
        return entry

    def keep_device_list(
        self, generation: int, username: str, account_id: int, registration_ids: dict[int, int]
    ) -> DeviceList:
        """Remember an account's device list read at ``generation``; returns it either way."""
        now_s = self._monotonic()
        entry = DeviceList(account_id, registration_ids, now_s, self._refresh_point(now_s))
        if generation == self.generation and self.ttl_s > 0:
            if len(self._lists) >= MAX_ENTRIES:
                self.invalidate(EVERY_ACCOUNT)
            self._lists[username] = entry
            self._keys.setdefault(account_id, set()).add((username, 0))
            self._account_of[username] = account_id
        return entry

    # -- invalidation ------------------------------------------------------------------------

    def invalidate(self, account_id: int) -> None:
        """Forget everything about the account (its credentials, enforcement, device list);
        `EVERY_ACCOUNT`: about every account."""
        self.generation += 1
        if account_id == EVERY_ACCOUNT:
            self._devices.clear()
            self._lists.clear()
            self._keys.clear()
            self._account_of.clear()
            for account in self._account_generation:
                self._account_generation[account] += 1
            return
        self._account_generation[account_id] = self._account_generation.get(account_id, 0) + 1
        for username, device_id in self._keys.pop(account_id, ()):
            if device_id:
                self._devices.pop((username, device_id), None)
            else:
                self._lists.pop(username, None)

    def forget_username(self, username: str) -> None:
        """`invalidate` by name: what the safety side's decision callback calls, on the event
        loop, before anything else runs there (the hub then tells the other nodes)."""
        account_id = self._account_of.get(username)
        if account_id is None:
            self.generation += 1  # nothing cached; a read in flight must not be kept either
        else:
            self.invalidate(account_id)

    def account_generation(self, account_id: int) -> int:
        """How many invalidations this account has had on this node: a connection that saw a
        change re-checks the account's enforcement. Counted from the connection's first call
        (`watch`), so that a forget-everything reaches it too."""
        return self._account_generation.setdefault(account_id, 0)
