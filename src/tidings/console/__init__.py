"""The staff web console (`tidings.console`): server-rendered pages over `tidings.safety`.

`build_console(service_or_context, ...)` returns an ASGI app that `tidings.app` mounts under
``/console``. Pages: sign-in (password, then TOTP), queues, case view (verified evidence with
per-item franking results, the context transcript, account history, prior decisions, notes),
decision forms (two-person BAN / referral), appeals, the audit log with its chain
verification, staff management with enrolment links and two-person grants
(`tidings.console.staff_pages`), and the owner's enrolment pages. See `tidings.console.web` for
the route table and `tidings.console.security` for CSRF, cookies and headers (HSTS over HTTPS).
"""

from tidings.console.context import ConsoleContext
from tidings.console.web import ROUTES, Console, RouteSpec, build_console

__all__ = ["ROUTES", "Console", "ConsoleContext", "RouteSpec", "build_console"]
