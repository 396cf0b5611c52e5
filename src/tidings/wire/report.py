"""The report request's vocabulary and limits (docs/api.md, ``POST /v1/reports``): one home for
what the client checks before sending and the server checks on arrival.

The safety side adds its own metadata per category (severity, queue, SLA:
`tidings.safety.categories`); the ids themselves are defined here only.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["MAX_REPORTED_ATTACHMENTS", "MAX_REPORT_NOTE_CHARS", "REPORT_CATEGORIES",
           "ReportCategory"]


class ReportCategory(StrEnum):
    """What a report says is wrong. Values are stable (stored, and used in the API)."""

    CHILD_SEXUAL_EXPLOITATION = "child_sexual_exploitation"
    VIOLENT_THREAT = "violent_threat"
    TERRORISM = "terrorism"
    HARASSMENT = "harassment"
    SELF_HARM = "self_harm"
    SPAM = "spam"
    FRAUD = "fraud"
    OTHER = "other"


REPORT_CATEGORIES: tuple[str, ...] = tuple(c.value for c in ReportCategory)
"""The category ids of docs/api.md, in that order."""

MAX_REPORT_NOTE_CHARS = 2000
"""The reporter's optional ``note`` (stored as encrypted evidence)."""

MAX_REPORTED_ATTACHMENTS = 8
"""Attachment keys revealed by one report."""
