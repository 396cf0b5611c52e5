"""Time in one home: every layer counts epoch milliseconds through these.

``Clock`` is what services take so tests can pass a fake; `now_ms` is the real one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DAY_MS = 86_400_000
"""One day in milliseconds (retention periods, suspension lengths, appeal windows)."""

Clock = Callable[[], int]
"""Returns the current time as epoch milliseconds."""


def now_ms() -> int:
    """The current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000
