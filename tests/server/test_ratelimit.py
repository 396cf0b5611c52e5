"""Token-bucket rate limits, in memory and shared through Redis."""

from __future__ import annotations

import asyncio
import os

import pytest

from tidings.errors import RateLimitedError
from tidings.server.ratelimit import MemoryRateLimiter, RedisRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_bursts_then_refills() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)

    async def main() -> None:
        for _ in range(3):
            await limiter.hit("send", "a", 3, 60)
        with pytest.raises(RateLimitedError) as limited:
            await limiter.hit("send", "a", 3, 60)
        assert limited.value.retry_after_s == 20  # one token every 20 s
        await limiter.hit("send", "b", 3, 60)  # other keys have their own bucket
        await limiter.hit("fetch", "a", 3, 60)  # and other kinds
        clock.now += 20
        await limiter.hit("send", "a", 3, 60)
        with pytest.raises(RateLimitedError):
            await limiter.hit("send", "a", 3, 60)
        clock.now += 3600  # refills to the limit, not beyond
        for _ in range(3):
            await limiter.hit("send", "a", 3, 60)
        with pytest.raises(RateLimitedError):
            await limiter.hit("send", "a", 3, 60)

    asyncio.run(main())


def test_redis_buckets_are_shared_between_nodes(redis_url: str) -> None:
    async def main() -> None:
        node_a, node_b = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
        key = os.urandom(6).hex()
        try:
            await node_a.hit("send", key, 3, 3600)
            await node_b.hit("send", key, 3, 3600)
            await node_a.hit("send", key, 3, 3600)
            with pytest.raises(RateLimitedError) as limited:
                await node_b.hit("send", key, 3, 3600)
            assert 1000 <= limited.value.retry_after_s <= 1201
        finally:
            await node_a.close()
            await node_b.close()

    asyncio.run(main())


def test_redis_down_falls_back_to_local_limits() -> None:
    async def main() -> None:
        limiter = RedisRateLimiter("redis://127.0.0.1:1/0")  # nothing listens there
        try:
            await limiter.hit("send", "k", 1, 60)
            with pytest.raises(RateLimitedError):
                await limiter.hit("send", "k", 1, 60)
        finally:
            await limiter.close()

    asyncio.run(main())
