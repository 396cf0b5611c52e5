"""The node's periodic epoch publication (`tidings.server.kt_directory.KeyDirectory.
publish_due`): one attempt at start, then one every ``kt_epoch_seconds``. Every node of a
cluster runs it; the publisher lease lets one publish each epoch, and a node finding a head
younger than the interval skips the round, after bringing its tree up to date (so lookups do
not wait for a rebuild). A failed round is logged by its error class and
retried at the next one (queued lists stay queued)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tidings.server.kt_directory import KeyDirectory

log = logging.getLogger("tidings.server.kt")


class EpochPublisher:
    """`start` once the database is migrated; `stop` on shutdown."""

    def __init__(self, directory: KeyDirectory, *, interval_s: float) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def round(self) -> None:
        """One attempt. Never raises (but cancellation)."""
        try:
            await self.directory.sync()  # the tree current before the lease is tried
            await self.directory.publish_due(int(self.interval_s * 1000))
        except Exception as exc:
            log.warning("kt epoch publication failed", extra={"error": type(exc).__name__})

    async def _forever(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.interval_s)
