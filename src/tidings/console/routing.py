"""What a console route is, and what its handler receives.

Each page module (`tidings.console.pages`) declares its routes as `RouteSpec` rows: method,
path (relative to the mount), the permission the dispatcher checks before the handler runs
(`None`: any signed-in staff member; `PUBLIC`: no session), and the name, which is also the
name of the page object's handler method. The handler gets a `Ctx` (one request, after
authentication) and returns a Starlette response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from tidings.safety.staff import Permission, Principal

__all__ = ["PUBLIC", "Ctx", "Handler", "RouteSpec"]

PUBLIC = "public"
"""Marker for routes that need no session (sign-in pages, static files)."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One console route: method, path (relative to the mount), the permission it needs."""

    method: str
    path: str
    permission: Permission | str | None
    name: str


@dataclass(slots=True)
class Ctx:
    """One request, after authentication (``principal`` is None on a `PUBLIC` route)."""

    request: Request
    form: FormData | None
    now_ms: int
    principal: Principal | None = None
    token: str = ""
    session_id: str = ""
    names: dict[str, str] = field(default_factory=dict)

    @property
    def p(self) -> Principal:
        """The signed-in principal (only on routes that need a session)."""
        assert self.principal is not None
        return self.principal

    def path_param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str) -> str:
        return self.request.query_params.get(name, "")

    def field(self, name: str, default: str = "") -> str:
        if self.form is None:
            return default
        value = self.form.get(name)
        return value if isinstance(value, str) else default

    def fields(self, name: str) -> list[str]:
        if self.form is None:
            return []
        return [v for v in self.form.getlist(name) if isinstance(v, str)]


Handler = Callable[[Ctx], Response]
