"""The write rules the in-memory safety repositories (tests, embedded demos) share, so that
they refuse what the SQL repositories refuse: an id stored twice, and an update over a row
that changed since it was read (optimistic concurrency on ``version``). Callers hold their
repository's lock."""

from __future__ import annotations

from typing import Protocol, TypeVar

from tidings.errors import ConflictError

__all__ = ["insert_new", "replace_versioned"]


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
