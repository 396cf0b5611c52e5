"""The data inventory (legal and admin roles, `Permission.VIEW_INVENTORY`): ``/inventory``
shows every category of user data this deployment holds, its tables and fields, retention
(from the node's configuration), the least legal process a request needs, and what is never
held (`tidings.safety.inventory`, docs/operations.md "Data inventory"). Each view is audited
under the signed-in staff member."""

from __future__ import annotations

from starlette.responses import Response

from tidings.safety.audit import AuditAction
from tidings.safety.inventory import NEVER_HELD, NOT_PRODUCIBLE, inventory
from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages

__all__ = ["ROUTES", "InventoryPages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/inventory", Permission.VIEW_INVENTORY, "inventory"),
)


class InventoryPages(ContextPages):
    def inventory(self, c: Ctx) -> Response:
        self.ctx.audit.append(
            actor=c.p.staff_id,
            action=AuditAction.INVENTORY_VIEW,
            target="inventory",
            now_ms=c.now_ms,
        )
        return self.kit.render(
            c,
            "inventory.html",
            categories=inventory(self.ctx.retention),
            never_held=NEVER_HELD,
            not_producible=sorted(NOT_PRODUCIBLE.items()),
        )
