"""The audit log page: entries newest first, `AUDIT_PAGE` a page, with the chain verified.

The verification runs over the whole chain on every view (with the anchor key when one is
configured), so a tampered entry shows as the first bad position, in red, whichever page is
open.
"""

from __future__ import annotations

import itertools

from starlette.responses import Response

from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages

__all__ = ["AUDIT_PAGE", "ROUTES", "AuditPages"]

ROUTES: tuple[RouteSpec, ...] = (RouteSpec("GET", "/audit", Permission.VIEW_AUDIT, "audit"),)

AUDIT_PAGE = 100


class AuditPages(ContextPages):
    def audit(self, c: Ctx) -> Response:
        """``?before=<seq>``: the page of entries below that sequence number (default: the
        newest page); a non-numeric value is ignored."""
        repo = self.ctx.audit.repository
        head = repo.head()
        last = head.seq if head else 0
        before_text = c.query("before")
        before = int(before_text) if before_text.isdigit() else last + 1
        start = max(1, before - AUDIT_PAGE)
        entries = list(itertools.islice(repo.entries(start), max(0, before - start)))
        entries.reverse()
        return self.kit.render(
            c,
            "audit.html",
            entries=entries,
            verification=self.ctx.audit.verify(),
            last=last,
            anchored=self.ctx.audit.anchor_key is not None,
            older=start if start > 1 else None,
            newer=before + AUDIT_PAGE if before <= last else None,
        )
