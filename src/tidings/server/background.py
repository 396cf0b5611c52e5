"""One long-running asyncio task of a node (the queue sweep, the epoch publisher): started
once, cancelled and awaited on shutdown. The one place that start/stop logic lives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

__all__ = ["BackgroundTask"]


class BackgroundTask:
    """Holds at most one running task. `start` replaces nothing: it refuses a second start."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task. Raises RuntimeError when one is already running (the
        coroutine is closed unrun)."""
        if self.running:
            work.close()
            raise RuntimeError("the background task is already running")
        self._task = asyncio.create_task(work)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end (nothing when none runs)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
