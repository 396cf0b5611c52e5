"""The write rules the in-memory safety repositories (tests, embedded demos) share, so that
they refuse what the SQL repositories refuse: an id stored twice, and an update over a row
that changed since it was read (optimistic concurrency on ``version``). Callers hold their
repository's lock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from tidings.errors import ConflictError

__all__ = ["GroupCounts", "count_groups", "in_period", "insert_new", "replace_versioned"]

GroupCounts = dict[tuple[str, ...], int]
"""Rows counted per group: the group's key values (as text) -> how many rows. The shape of
the repositories' read-only aggregates (`tidings.safety.transparency`); SQL answers it with
one ``COUNT(*) ... GROUP BY``."""


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


Row = TypeVar("Row")
VersionedRow = TypeVar("VersionedRow", bound=Versioned)


def insert_new(rows: dict[str, Row], key: str, row: Row, *, conflict: str) -> None:
    """Store ``row`` under ``key``. Raises `ConflictError` (``conflict``) if ``key`` is taken."""
    if key in rows:
        raise ConflictError(conflict)
    rows[key] = row


def replace_versioned(
    rows: dict[str, VersionedRow],
    key: str,
    row: VersionedRow,
    expected_version: int,
    *,
    conflict: str,
) -> None:
    """Store ``row`` over the row under ``key`` if that one still has ``expected_version``.
    Raises `ConflictError` (``conflict``) if it is gone or has another version."""
    current = rows.get(key)
    if current is None or current.version != expected_version:
        raise ConflictError(conflict)
    rows[key] = row


def in_period(time_ms: int | None, start_ms: int, end_ms: int) -> bool:
    """Whether ``time_ms`` lies in ``[start_ms, end_ms)`` (None: never), the period test every
    aggregate uses, in memory as in SQL."""
    return time_ms is not None and start_ms <= time_ms < end_ms


def count_groups(rows: Iterable[Row], key: Callable[[Row], tuple[str, ...] | None]) -> GroupCounts:
    """The in-memory twin of ``SELECT key, COUNT(*) ... GROUP BY key``: rows whose ``key`` is
    None are left out (the WHERE clause)."""
    return dict(Counter(k for row in rows if (k := key(row)) is not None))
