"""The case page's evidence panels: what a reviewer sees of each report.

Opening evidence goes through `tidings.safety.evidence.EvidenceVault.open`, which checks the
principal against the case's queue and audits every access first; a record the reviewer may
not open, or one past retention, is withheld with the reason instead. Message bodies are
parsed from the franked content; images up to `MAX_INLINE_MEDIA` become data URIs (blurred
by the page until revealed), other media only show their type and size.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from tidings.crypto.franking import ReportItem
from tidings.errors import (
    DecodeError,
    EvidenceExpiredError,
    PermissionDeniedError,
    SafetyInputError,
)
from tidings.safety.categories import Queue
from tidings.safety.evidence import KIND_MESSAGES, OpenedEvidence, decode_items
from tidings.wire import pb

from ..context import ConsoleContext
from ..routing import Ctx

__all__ = [
    "EVIDENCE_PURPOSE",
    "DetectionPanel",
    "ReportPanel",
    "detection_panel",
    "report_panel",
    "unopened_panel",
]


@dataclass(frozen=True, slots=True)
class MediaView:
    kind: str
    evidence_id: str
    content_type: str
    size: int
    data_uri: str | None
    available: bool


@dataclass(frozen=True, slots=True)
class LineView:
    """One reported (or context) message: its stored record, the opened item and body."""

    record: Any
    item: ReportItem | None
    body: str
    media: list[MediaView]


@dataclass(frozen=True, slots=True)
class ReportPanel:
    """A report's records, opened content, and the hash-bank matches of its attachments
    (`tidings.safety.reports.ReportMatch`: metadata, shown with or without VIEW_EVIDENCE)."""

    report: Any
    lines: list[LineView]
    comment: str
    withheld: str | None
    matches: tuple[Any, ...] = ()


MAX_INLINE_MEDIA = 8 * 1024 * 1024
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
EVIDENCE_PURPOSE = "case review in the staff console"
"""The purpose recorded in the audit entry of every evidence access from the case page."""


def _media(kind: str, evidence_id: str, content_type: str, data: bytes | None) -> MediaView:
    if data is None:
        return MediaView(kind, evidence_id, content_type, 0, None, False)
    uri = None
    if content_type in INLINE_IMAGE_TYPES and len(data) <= MAX_INLINE_MEDIA:
        uri = f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")
    return MediaView(kind, evidence_id, content_type, len(data), uri, True)


def _open_for_review(
    context: ConsoleContext, c: Ctx, evidence_id: str, queue: Queue, case_id: str
) -> tuple[OpenedEvidence, None] | tuple[None, str]:
    """Open one evidence record of the case for ``c.p`` through the vault (audited, with
    `EVIDENCE_PURPOSE`): (the opened record, None), or (None, why it is withheld) when the
    principal may not see it or it is past its retention. Other vault errors propagate."""
    try:
        opened = context.vault.open(
            evidence_id,
            principal=c.p,
            queue=queue,
            case_id=case_id,
            purpose=EVIDENCE_PURPOSE,
            now_ms=c.now_ms,
        )
    except PermissionDeniedError as exc:
        return None, exc.message
    except EvidenceExpiredError:
        return None, "evidence past its retention period"
    return opened, None


def unopened_panel(report_view: Any) -> ReportPanel:
    """A report's panel for a principal without VIEW_EVIDENCE: the records, no content."""
    lines = [LineView(record, None, "", []) for record in report_view.items]
    return ReportPanel(report_view.report, lines, "", None, report_view.matches)


def report_panel(
    context: ConsoleContext, c: Ctx, report_view: Any, queue: Queue, case_id: str
) -> ReportPanel:
    """A report's panel with its evidence opened for ``c.p`` (each access audited)."""
    report = report_view.report
    opened: dict[str, bytes] = {}
    ids: dict[str, str] = {}
    withheld = None
    for record in context.vault.records_for_report(report.report_id):
        evidence, reason = _open_for_review(context, c, record.evidence_id, queue, case_id)
        if evidence is None:
            withheld = reason
            continue
        opened[evidence.kind] = evidence.plaintext
        ids[evidence.kind] = evidence.evidence_id
    items: list[ReportItem] = []
    if KIND_MESSAGES in opened:
        try:
            items = decode_items(opened[KIND_MESSAGES])
        except (DecodeError, SafetyInputError):
            withheld = "the stored message record could not be decoded"
    lines = []
    for record in sorted(report_view.items, key=lambda r: r.index):
        item = items[record.index] if record.index < len(items) else None
        body, media = "", []
        if item is not None:
            content = pb.Content()
            try:
                content.ParseFromString(item.content)
            except Exception:  # protobuf raises its own DecodeError type
                content = pb.Content()
            if content.HasField("data"):
                body = content.data.body
                for j, pointer in enumerate(content.data.attachments):
                    kind = f"attachment:{record.index}:{j}"
                    media.append(
                        _media(kind, ids.get(kind, kind), pointer.content_type, opened.get(kind))
                    )
        lines.append(LineView(record, item, body, media))
    comment = opened.get("comment", b"").decode("utf-8", "replace")
    return ReportPanel(report, lines, comment, withheld, report_view.matches)


@dataclass(frozen=True, slots=True)
class DetectionPanel:
    """One confirmed detection image: its match record (banks, entries, distances, sources),
    the image (None without VIEW_EVIDENCE, or withheld with the reason)."""

    match: Any
    media: MediaView | None
    withheld: str | None


def detection_panel(
    context: ConsoleContext, c: Ctx, matches: Any, queue: Queue | None, case_id: str
) -> list[DetectionPanel]:
    """The case's detection images, each opened for ``c.p`` through the vault (audited);
    ``queue`` None: the principal may not view evidence, so nothing is opened."""
    panels = []
    for match in matches:
        if queue is None:
            panels.append(DetectionPanel(match, None, None))
            continue
        evidence, reason = _open_for_review(context, c, match.evidence_id, queue, case_id)
        if evidence is None:
            panels.append(DetectionPanel(match, None, reason))
            continue
        media = _media(evidence.kind, evidence.evidence_id, match.content_type, evidence.plaintext)
        panels.append(DetectionPanel(match, media, None))
    return panels
