"""Rate limits: fixed-window counters per (kind, key), answered with 429 and Retry-After.

`MemoryRateLimiter` serves one node; `RedisRateLimiter` shares the counters across a cluster
(INCR + EXPIRE on one key per window). Keys are client addresses or account ids, never
credentials.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from tidings.errors import RateLimitedError

log = logging.getLogger("tidings.server.ratelimit")


class RateLimiter(Protocol):
    async def hit(self, kind: str, key: str, limit: int, window_s: int) -> None:
        """Count one request; raise `RateLimitedError` when over ``limit`` per window."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}

    async def hit(self, kind: str, key: str, limit: int, window_s: int) -> None:
        now = time.time()
        window = int(now // window_s)
        slot = (kind, key, window)
        count = self._counts.get(slot, 0) + 1
        self._counts[slot] = count
        if len(self._counts) > 100_000:  # drop old windows; bounded memory under attack
            self._counts = {k: v for k, v in self._counts.items() if k[2] >= window}
        if count > limit:
            raise RateLimitedError(max(1, int((window + 1) * window_s - now) + 1))

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._fallback = MemoryRateLimiter()

    async def hit(self, kind: str, key: str, limit: int, window_s: int) -> None:
        now = time.time()
        window = int(now // window_s)
        name = f"tidings:rl:{kind}:{key}:{window}"
        try:
            pipe = self._redis.pipeline()
            pipe.incr(name)
            pipe.expire(name, window_s + 1)
            count, _ = await pipe.execute()
        except Exception as exc:  # keep limiting per node while Redis is down
            log.warning("shared rate limit unavailable (%s); limiting locally", type(exc).__name__)
            await self._fallback.hit(kind, key, limit, window_s)
            return
        if int(count) > limit:
            raise RateLimitedError(max(1, int((window + 1) * window_s - now) + 1))

    async def close(self) -> None:
        await self._redis.aclose()
