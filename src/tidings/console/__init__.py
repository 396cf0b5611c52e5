"""The staff web console (`tidings.console`): server-rendered pages over `tidings.safety`.

`build_console(service_or_context, ...)` returns an ASGI app that `tidings.app` mounts under
``/console``. Pages (`tidings.console.pages`, one module per group): sign-in (password, then
TOTP), the owner's enrolment and sign-out (`auth`); media preferences (`preferences`); queues,
the case view (verified evidence with per-item franking results, the context transcript,
account history, prior decisions, notes) and decision forms, two-person BAN / referral
(`cases`); `appeals`; the audit log with its chain verification (`audit`); staff management
with enrolment links and two-person grants (`staff`). `tidings.console.web` holds the route
table and the dispatcher (session, CSRF and permission checks),
`tidings.console.rendering` what the pages share, and `tidings.console.security` CSRF, cookies
and headers (HSTS over HTTPS).
"""

from tidings.console.context import ConsoleContext
from tidings.console.routing import RouteSpec
from tidings.console.web import ROUTES, Console, build_console

__all__ = ["ROUTES", "Console", "ConsoleContext", "RouteSpec", "build_console"]
