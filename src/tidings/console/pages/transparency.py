"""The transparency report page (`Permission.VIEW_TRANSPARENCY`: legal and admin), generated
from the system's records for ``?period=`` (`tidings.safety.transparency.parse_period`; or
``?from=YYYY-MM-DD&to=YYYY-MM-DD``; default: the current half-year), and the same report as
JSON (``/transparency.json``, the form ``tidings transparency --json`` prints). Every view is
audited (``transparency.view``: who, which period, which form)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from tidings.errors import NotFoundError
from tidings.safety.audit import AuditAction
from tidings.safety.staff import Permission
from tidings.safety.transparency import (
    Period,
    TransparencyReport,
    build_report,
    current_half,
    parse_period,
    period_between,
)

from ..routing import Ctx, RouteSpec
from ..transparency import report_values
from .base import ContextPages

__all__ = ["ROUTES", "TransparencyPages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/transparency", Permission.VIEW_TRANSPARENCY, "transparency"),
    RouteSpec("GET", "/transparency.json", Permission.VIEW_TRANSPARENCY, "transparency_json"),
)


class TransparencyPages(ContextPages):
    @staticmethod
    def _period(c: Ctx) -> Period:
        """The period the query names. Raises `InvalidPeriodError` (400) for a bad one."""
        first, last = c.query("from"), c.query("to")
        if first or last:
            return period_between(first, last)
        text = c.query("period")
        return parse_period(text) if text else current_half(c.now_ms)

    def _report(self, c: Ctx, via: str) -> TransparencyReport:
        """The report of the query's period, audited (``via``: the form asked for).

        Raises:
            NotFoundError: the console has no report sources (404).
            InvalidPeriodError: a bad period (400); nothing is audited then.
        """
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
            details={"start_ms": period.start_ms, "end_ms": period.end_ms, "via": via},
        )
        return report

    def transparency(self, c: Ctx) -> Response:
        """The report page (`_report`'s errors)."""
        return self.kit.render(c, "transparency.html", **report_values(self._report(c, "console")))

    def transparency_json(self, c: Ctx) -> Response:
        """The report as JSON (`TransparencyReport.to_json`; `_report`'s errors), as a
        download named after the period."""
        report = self._report(c, "console-json")
        name = f"tidings-transparency-{report.period.label}.json"
        return JSONResponse(
            report.to_json(), headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )
