"""The hash banks, read only (legal and admin roles, `Permission.VIEW_BANKS`): changes are made
with `tidings admin bank ...`, where every one is audited under the operator.

- ``/banks``: every bank with its active, device-eligible and removed counts, the list
  version, and the two-jurisdiction rule in words;
- ``/banks/{bank_name}``: one page of a bank's entries (paged in SQL, `BANK_PAGE` a page),
  filtered by signal type and by device eligibility, each with its sources (organisation,
  jurisdiction, added and withdrawn dates) and whether it reaches devices.

Both views are audited under the signed-in staff member (`tidings.safety.banks.BankService`).
"""

from __future__ import annotations

from starlette.responses import Response

from tidings.safety.banks import TWO_JURISDICTION_RULE, BankService, EntryFilter, SignalType
from tidings.safety.staff import Permission

from ..routing import Ctx, RouteSpec
from .base import ContextPages, configured

__all__ = ["BANK_PAGE", "ROUTES", "BankPages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/banks", Permission.VIEW_BANKS, "banks"),
    RouteSpec("GET", "/banks/{bank_name}", Permission.VIEW_BANKS, "bank"),
)

BANK_PAGE = 50
_ELIGIBLE = {"yes": True, "no": False}


class BankPages(ContextPages):
    def _service(self) -> BankService:
        return configured(self.ctx.banks, "hash banks")

    def banks(self, c: Ctx) -> Response:
        service = self._service()
        return self.kit.render(
            c,
            "banks.html",
            summaries=service.list_banks(c.p),
            list_version=service.list_version(),
            rule=TWO_JURISDICTION_RULE,
        )

    def bank(self, c: Ctx) -> Response:
        """``?type=pdq|md5|sha256``, ``?eligible=yes|no``, ``?removed=1``, ``?page=N``
        (1-based); an unknown value of any of them is ignored."""
        service = self._service()
        kind_text = c.query("type")
        kind = SignalType(kind_text) if kind_text in set(SignalType) else None
        eligible = _ELIGIBLE.get(c.query("eligible"))
        removed = c.query("removed") == "1"
        page_text = c.query("page")
        number = int(page_text) if page_text.isdigit() and 0 < len(page_text) < 7 else 1
        number = max(1, number)
        where = EntryFilter(kind, eligible, removed)
        page = service.entries(
            c.p, c.path_param("bank_name"), where, limit=BANK_PAGE, offset=(number - 1) * BANK_PAGE
        )
        filters = {
            "type": kind.value if kind else "",
            "eligible": c.query("eligible") if eligible is not None else "",
            "removed": "1" if removed else "",
        }
        query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
        return self.kit.render(
            c,
            "bank.html",
            page=page,
            number=number,
            pages=max(1, -(-page.total // BANK_PAGE)),
            filters=filters,
            query=query,
            signal_types=[t.value for t in SignalType],
            rule=TWO_JURISDICTION_RULE,
        )
