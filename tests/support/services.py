"""The external services of cluster mode (PostgreSQL, Redis) as the tests reach them, and
the rule for when one is unreachable: skip locally, fail under ``CI=true`` (CI must run
every variant)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

import pytest

PG_URL = os.environ.get("TIDINGS_TEST_PG", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require_service(name: str, reachable: bool, detail: str = "") -> None:
    """Skip the test when ``name`` is unreachable; fail instead when ``CI=true``."""
    if reachable:
        return
    message = f"{name} is unreachable{': ' + detail if detail else ''}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: every service variant must run)")
    pytest.skip(message)


def pg_run(sql: str, schema: str | None = None) -> tuple[object, str]:
    """Run one statement on the test database (in ``schema``); returns (first value of the
    first row, '') or (None, the error's class name)."""
    import asyncpg  # type: ignore[import-untyped]

    async def go() -> object:
        settings = {"search_path": schema} if schema else None
        conn = await asyncpg.connect(PG_URL, timeout=3, server_settings=settings)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    def in_thread() -> tuple[object, str]:
        # A thread of its own: the caller may be inside a running event loop (async tests).
        try:
            return asyncio.run(go()), ""
        except Exception as exc:  # any failure means "unreachable" to the caller
            return None, type(exc).__name__

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(in_thread).result()


def pg_admin(sql: str) -> str:
    """Run one statement on the test database; returns '' or the error's class name."""
    return pg_run(sql)[1]
