"""`BackgroundTask`: one task at a time, stopped by cancelling and awaiting it."""

from __future__ import annotations

import asyncio

import pytest

from tidings.server.background import BackgroundTask


def test_one_task_at_a_time_and_stop_waits_for_it() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []

        async def forever() -> None:
            try:
                while True:
                    await asyncio.sleep(0.01)
            finally:
                seen.append("cleaned up")

        task = BackgroundTask()
        await task.stop()  # nothing running: nothing to do
        task.start(forever())
        await asyncio.sleep(0.02)
        assert task.running
        second = forever()
        with pytest.raises(RuntimeError):
            task.start(second)
        await task.stop()
        assert not task.running
        task.start(forever())  # startable again once stopped
        await asyncio.sleep(0.02)
        await task.stop()
        return seen

    assert asyncio.run(scenario()) == ["cleaned up", "cleaned up"]
