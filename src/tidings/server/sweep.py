"""The lost-hint safety net of one node: a single periodic sweep of the queues, instead of
every connection re-reading its own queue on a timer.

Every `SWEEP_INTERVAL_S` the node reads the queue positions (``messages.id``) stored since its
previous sweep — one primary-key range query (more pages only if more than `SWEEP_PAGE`
envelopes were queued meanwhile), whatever the number of connections — and wakes, through
`LocalHub.wake_stale`, the connections here of the devices that got one and have not sent it
yet. An envelope whose hint was lost (Redis down, published where nobody listens, a failed
push) is therefore delivered within about one interval, as the per-connection poll did.

Positions are committed out of order on PostgreSQL (a transaction may take a lower id and
commit after a higher one was seen), so each sweep reads from the previous sweep's watermark,
not its own: every range is read by two consecutive sweeps, and what the first already woke for
is skipped by the second. An envelope whose transaction stayed open longer than one interval
past a higher committed position is not found by the sweep (batches commit in milliseconds);
the device still gets it on its next wake-up or connection. On SQLite positions are assigned
in commit order.
"""

from __future__ import annotations

import asyncio
import logging

from tidings.server.background import BackgroundTask
from tidings.server.hub import SWEEP_INTERVAL_S, LocalHub
from tidings.storage.messaging import MessagingStore

log = logging.getLogger("tidings.server.sweep")

SWEEP_PAGE = 5000
"""Queue positions per read of a sweep."""


class QueueSweep:
    """The node's periodic sweep (see the module docstring). `start` once the database is
    migrated; `stop` on shutdown."""

    def __init__(
        self, store: MessagingStore, hub: LocalHub, *, interval_s: float = SWEEP_INTERVAL_S
    ) -> None:
        self.store = store
        self.hub = hub
        self.interval_s = interval_s
        self._floor = 0
        """Read positions above this one (the watermark of the sweep before the last)."""
        self._top = 0
        """The highest position the last sweep saw."""
        self._seen: set[int] = set()
        """Positions above ``_floor`` already woken for."""
        self._background = BackgroundTask()

    async def start(self) -> None:
        """Begin at the newest stored position (the backlog is read by each connection when
        it opens), then sweep every ``interval_s`` in a task.

        Raises:
            StorageUnavailableError, SQLAlchemyError: the database cannot be read.
        """
        self._floor = self._top = await self.store.newest_position()
        self._background.start(self._forever())

    async def stop(self) -> None:
        await self._background.stop()

    async def sweep(self) -> int:
        """One sweep: read the positions queued since the previous watermark and wake the
        connections here that have not sent theirs. Returns how many were woken.

        Raises:
            StorageUnavailableError, SQLAlchemyError: the database cannot be read (nothing
                advances: the next sweep reads the same range).
        """
        found: list[tuple[int, int, int]] = []
        after = self._floor
        while True:
            page = await self.store.positions_after(after, SWEEP_PAGE)
            found.extend(page)
            if len(page) < SWEEP_PAGE:
                break
            after = page[-1][0]
        stored: dict[tuple[int, int], list[int]] = {}
        for position, account_id, device_id in found:
            if position not in self._seen:
                stored.setdefault((account_id, device_id), []).append(position)
        top = max(self._top, found[-1][0] if found else 0)
        # The next sweep reads again above this one's starting watermark: a position taken
        # before it but committed after this read is found then.
        self._floor, self._top = self._top, top
        self._seen = {position for position, _, _ in found if position > self._floor}
        return self.hub.wake_stale(stored)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except Exception as exc:  # an outage: the next sweep retries the same range
                log.warning("queue sweep failed", extra={"error": type(exc).__name__})
