"""The transparency report page (`Permission.VIEW_TRANSPARENCY`: legal and admin), generated
from the system's records for ``?period=`` (`tidings.safety.transparency.parse_period`; or
``?from=YYYY-MM-DD&to=YYYY-MM-DD``; default: the current half-year). Every view is audited
(``transparency.view``: who, which period)."""

from __future__ import annotations

from starlette.responses import Response

from tidings.errors import NotFoundError
from tidings.safety.audit import AuditAction
from tidings.safety.staff import Permission
from tidings.safety.transparency import (
    FigureStatus,
    Period,
    build_report,
    current_half,
    parse_period,
    period_between,
)

from ..context import ConsoleContext
from ..rendering import PageKit
from ..routing import Ctx, RouteSpec
from ..transparency import charts_of, label_of, overview_of

__all__ = ["ROUTES", "TransparencyPages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/transparency", Permission.VIEW_TRANSPARENCY, "transparency"),
)


class TransparencyPages:
    def __init__(self, kit: PageKit, context: ConsoleContext) -> None:
        self.kit = kit
        self.ctx = context

    @staticmethod
    def _period(c: Ctx) -> Period:
        """The period the query names. Raises `InvalidPeriodError` (400) for a bad one."""
        first, last = c.query("from"), c.query("to")
        if first or last:
            return period_between(first, last)
        text = c.query("period")
        return parse_period(text) if text else current_half(c.now_ms)

    def transparency(self, c: Ctx) -> Response:
        """The report of the period. Raises NotFoundError (404) when the console has no
        report sources, InvalidPeriodError (400) for a bad period; audited before it renders."""
        sources = self.ctx.transparency
        if sources is None:
            raise NotFoundError("the transparency report is not available on this console")
        period = self._period(c)
        report = build_report(sources, period, generated_ms=c.now_ms)
        self.ctx.audit.append(
            actor=c.p.staff_id,
            action=AuditAction.TRANSPARENCY_VIEW,
            target=f"transparency:{period.label}",
            now_ms=c.now_ms,
            details={"start_ms": period.start_ms, "end_ms": period.end_ms, "via": "console"},
        )
        return self.kit.render(
            c,
            "transparency.html",
            report=report,
            charts=charts_of(report),
            overview=overview_of(report),
            label_of=label_of,
            S=FigureStatus,
        )
