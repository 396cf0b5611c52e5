"""The external services of cluster mode (PostgreSQL, Redis) as the tests reach them, and
the rule for when one is unreachable: skip locally, fail under ``CI=true`` (CI must run
every variant)."""

from __future__ import annotations

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
