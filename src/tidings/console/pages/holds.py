"""Preservation holds (legal, `Permission.MANAGE_HOLDS`; `tidings.safety.holds`):

- ``/holds``: every hold, active first, with what it froze (account found, devices,
  attachments), its end and who placed it; a form to place one for a law-enforcement
  preservation request (90 days by default, renewable);
- ``POST /holds``: place; ``POST /holds/{hold_id}/extend``: keep it longer;
  ``POST /holds/{hold_id}/release``: end it now, with a reason.

Every view and action is audited under the signed-in staff member by the hold service.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from tidings.errors import SafetyInputError
from tidings.safety.holds import PRESERVATION_REQUEST_DAYS, HoldKind, HoldService
from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages, configured

__all__ = ["ROUTES", "HoldPages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/holds", Permission.MANAGE_HOLDS, "holds"),
    RouteSpec("POST", "/holds", Permission.MANAGE_HOLDS, "place_hold"),
    RouteSpec("POST", "/holds/{hold_id}/extend", Permission.MANAGE_HOLDS, "extend_hold"),
    RouteSpec("POST", "/holds/{hold_id}/release", Permission.MANAGE_HOLDS, "release_hold"),
)


def _days(text: str) -> int:
    if not text.isdigit() or len(text) > 4:
        raise SafetyInputError("the number of days must be a whole number")
    return int(text)


class HoldPages(ContextPages):
    def _service(self) -> HoldService:
        return configured(self.ctx.holds, "preservation holds")

    def holds(self, c: Ctx) -> Response:
        account = c.query("account").strip()
        found = self._service().holds(c.p, account or None)
        rows = []
        for hold in sorted(found, key=lambda h: (not h.active(c.now_ms), -h.placed_ms)):
            frozen = json.loads(hold.snapshot)
            rows.append((hold, hold.active(c.now_ms), frozen["account"] is not None,
                         len(frozen["devices"]), len(frozen["attachments"])))
        return self.kit.render(c, "holds.html", rows=rows, account=account,
                               default_days=PRESERVATION_REQUEST_DAYS)

    def place_hold(self, c: Ctx) -> Response:
        self._service().place(
            c.p,
            c.field("account"),
            HoldKind.PRESERVATION_REQUEST,
            days=_days(c.field("days")),
            reference=c.field("reference"),
        )
        return self.kit.redirect(c, "/holds", "hold_placed")

    def extend_hold(self, c: Ctx) -> Response:
        self._service().extend(c.p, c.path_param("hold_id"), days=_days(c.field("days")))
        return self.kit.redirect(c, "/holds", "hold_extended")

    def release_hold(self, c: Ctx) -> Response:
        self._service().release(c.p, c.path_param("hold_id"), reason=c.field("reason"))
        return self.kit.redirect(c, "/holds", "hold_released")
