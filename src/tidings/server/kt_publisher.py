"""The node's periodic epoch publication (`tidings.server.kt_directory.KeyDirectory.
publish_due`): one attempt at start, then one every ``kt_epoch_seconds``. Every node of a
cluster runs it; the publisher lease lets one publish each epoch, and a node finding a head
younger than the interval skips the round, after bringing its tree up to date (so lookups do
not wait for a rebuild). A failed round is logged by its error class and
retried at the next one (queued lists stay queued)."""

from __future__ import annotations

import asyncio
import logging
import time

from tidings.server.background import BackgroundTask
from tidings.server.kt_directory import KeyDirectory
from tidings.server.metrics import Metrics

log = logging.getLogger("tidings.server.kt")


class EpochPublisher:
    """`start` once the database is migrated; `stop` on shutdown."""

    def __init__(
        self, directory: KeyDirectory, *, interval_s: float, metrics: Metrics | None = None
    ) -> None:
        """``metrics``: where ``tidings_kt_epoch``, ``tidings_kt_rounds_total{outcome}`` and
        ``tidings_kt_publish_seconds`` go (a fresh registry of its own when None)."""
        self.directory = directory
        self.interval_s = interval_s
        self.metrics = metrics or Metrics()
        self._background = BackgroundTask()

    async def start(self) -> None:
        self._background.start(self._forever())

    async def stop(self) -> None:
        await self._background.stop()

    async def round(self) -> None:
        """One attempt. Never raises (but cancellation)."""
        try:
            self.metrics.kt_epoch.set(await self.directory.sync())  # current before the lease
            started = time.perf_counter()
            head = await self.directory.publish_due(int(self.interval_s * 1000))
        except Exception as exc:
            self.metrics.kt_rounds.labels(outcome="failed").inc()
            log.warning("kt epoch publication failed", extra={"error": type(exc).__name__})
            return
        if head is None:
            self.metrics.kt_rounds.labels(outcome="skipped").inc()
            return
        self.metrics.kt_publish_seconds.set(time.perf_counter() - started)
        self.metrics.kt_rounds.labels(outcome="published").inc()
        self.metrics.kt_epoch.set(head.epoch)

    async def _forever(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.interval_s)
