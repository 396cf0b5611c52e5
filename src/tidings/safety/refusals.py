"""Refused-report counts (issue 11, docs/operations.md "Transparency report"): how many
reports verification refused, per UTC day and reason code — only the count, nothing of the
report (not its reporter, subject, content or time beyond the day), so the transparency report
can say "reports refused by reason" without keeping what a refusal is meant to discard.

The reason is the refusal's error code (`tidings.errors.TidingsError.code`: a fixed, documented
set, docs/api.md), cut to `MAX_REASON_CHARS`. `increment` is safe under concurrency (SQL: one
``INSERT ... ON CONFLICT DO UPDATE count = count + 1``). A failing counter never turns a
refusal into another error: the caller logs and goes on (`tidings.safety.reports.ReportIntake`).
"""

from __future__ import annotations

import threading
from typing import Protocol

from tidings.clock import DAY_MS
from tidings.errors import (
    AttachmentError,
    AttachmentKeyMismatchError,
    AttachmentUnavailableError,
    CommitmentMismatchError,
    ContextChainError,
    DecodeError,
    InvalidFrankingTagError,
    InvalidKeyError,
    InvalidReportError,
    MessageAlreadyReportedError,
    ReporterNotRecipientError,
    ReportReplayError,
)
from tidings.safety.memory_rows import GroupCounts

__all__ = [
    "MAX_REASON_CHARS",
    "REFUSAL_REASONS",
    "InMemoryRefusalCounter",
    "RefusalCounter",
    "day_of",
]

REFUSAL_REASONS: tuple[str, ...] = tuple(dict.fromkeys(e.code for e in (
    InvalidReportError, ReporterNotRecipientError, CommitmentMismatchError,
    InvalidFrankingTagError, ContextChainError, ReportReplayError, MessageAlreadyReportedError,
    AttachmentKeyMismatchError, AttachmentUnavailableError, AttachmentError, DecodeError,
    InvalidKeyError,
)))
"""The codes report verification refuses with (`tidings.safety.reports`), in the order the
transparency report lists them, zeros included."""

MAX_REASON_CHARS = 64
"""The longest reason code stored (the column's width)."""


def day_of(now_ms: int) -> int:
    """The UTC day (days since 1970-01-01) of ``now_ms``."""
    return now_ms // DAY_MS


class RefusalCounter(Protocol):
    def increment(self, now_ms: int, reason: str) -> None:
        """Count one refused report on ``now_ms``'s UTC day under ``reason``."""
        ...

    def count_refused(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Refusals on the days within ``[start_ms, end_ms)``, by reason: ``{(reason,): n}``
        (periods start and end on UTC days)."""
        ...


class InMemoryRefusalCounter:
    def __init__(self) -> None:
        self.counts: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def increment(self, now_ms: int, reason: str) -> None:
        key = (day_of(now_ms), reason[:MAX_REASON_CHARS])
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def count_refused(self, start_ms: int, end_ms: int) -> GroupCounts:
        out: GroupCounts = {}
        first, last = day_of(start_ms), day_of(end_ms - 1)
        for (day, reason), n in self.counts.items():
            if first <= day <= last:
                out[(reason,)] = out.get((reason,), 0) + n
        return out
