"""Rate limits: token buckets per (kind, key), answered with 429 and Retry-After.

A bucket holds up to ``limit`` tokens and refills at ``limit / window_s`` tokens per second;
each request takes one. Bursts up to ``limit`` pass, the sustained rate is ``limit`` per
window, and — unlike fixed windows — no double burst at a window boundary.

`MemoryRateLimiter` serves one node; `RedisRateLimiter` shares the buckets across a cluster
(one atomic Lua script per request). Keys are client addresses or account ids, never
credentials. Both sit behind the `RateLimiter` protocol the routes depend on.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from tidings.errors import RateLimitedError

log = logging.getLogger("tidings.server.ratelimit")

MAX_BUCKETS = 100_000
"""Buckets kept in memory per node; the least recently used go first (a bucket that went
unused long enough to be evicted would be full again anyway, or nearly)."""


class RateLimiter(Protocol):
    async def hit(self, kind: str, key: str, limit: int, window_s: int) -> None:
        """Take one token; raise `RateLimitedError` (with the seconds until a token is back)
        when the bucket of (kind, key) is empty."""
        ...

    async def close(self) -> None: ...


def _retry_after(missing: float, rate: float) -> int:
    return max(1, math.ceil(missing / rate))


class MemoryRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    async def hit(self, kind: str, key: str, limit: int, window_s: int) -> None:
        now = self._clock()
        rate = limit / window_s
        slot = (kind, key)
        tokens, stamp = self._buckets.pop(slot, (float(limit), now))
        tokens = min(float(limit), tokens + (now - stamp) * rate)
        if tokens < 1.0:
            self._buckets[slot] = (tokens, now)
            raise RateLimitedError(_retry_after(1.0 - tokens, rate))
        self._buckets[slot] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_BUCKETS:  # bounded memory under a flood of addresses
            self._buckets.popitem(last=False)

    async def close(self) -> None:
        return None


# KEYS[1] bucket; ARGV: limit, rate (tokens/s), now (s). Returns {allowed, retry_after_s}.
# Redis time is not used: every node passes its clock, which NTP keeps close enough for
# limits measured in minutes and hours.
_BUCKET_SCRIPT = """
local limit = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or limit
local stamp = tonumber(state[2]) or now
tokens = math.min(limit, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(limit / rate) + 1)
return {allowed, retry}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every node. While Redis is unreachable each node limits on
    its own (`MemoryRateLimiter`): limits loosen by the node count, they never switch off."""

    def __init__(self, url: str, *, prefix: str = "tidings") -> None:
        import redis.asyncio as redis

        self._prefix = prefix
        self._redis: Any = redis.from_url(url)
        self._script: Any = self._redis.register_script(_BUCKET_SCRIPT)
        self._fallback = MemoryRateLimiter()

    async def hit(self, kind: str, key: str, limit: int, window_s: int) -> None:
        rate = limit / window_s
        try:
            allowed, retry = await self._script(
                keys=[f"{self._prefix}:rl:{kind}:{key}"],
                args=[limit, repr(rate), repr(time.time())],
            )
        except Exception as exc:  # keep limiting per node while Redis is down
            log.warning(
                "shared rate limit unavailable; limiting locally",
                extra={"error": type(exc).__name__},
            )
            await self._fallback.hit(kind, key, limit, window_s)
            return
        if not int(allowed):
            raise RateLimitedError(max(1, int(retry)))

    async def close(self) -> None:
        await self._redis.aclose()
