"""The console's pages, one module per group: `auth` (sign-in, TOTP, enrolment, sign-out),
`preferences` (media settings, the exposure counter), `cases` (queues, the case view and its
actions), `appeals`, `audit`, `staff` (accounts and two-person grants), `banks` (the hash banks,
read only) and `transparency` (the transparency report).

Each module declares its routes (`ROUTES`, `tidings.console.routing.RouteSpec` rows) and one
page class whose handler methods carry the routes' names. A page object is built from the
shared `tidings.console.rendering.PageKit`, the `tidings.console.context.ConsoleContext` (both
held by `base.ContextPages`) and whatever state only it needs; session, CSRF and permission
checks happen before any handler runs, once, in `tidings.console.web.Console`.
"""
