"""The reviewer's own media settings and the wellbeing exposure counter.

``/preferences``: blur and greyscale, each "organisation default", on or off
(`tidings.console.state.PreferenceStore`: in the shared database on a SQL deployment).
``/wellbeing/exposure``: the console script reports each revealed media item; the answer is
the session's running count.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from tidings.safety.staff import Permission

from ..rendering import PageKit
from ..routing import Ctx, RouteSpec
from ..state import Preferences

__all__ = ["ROUTES", "PreferencePages"]

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/preferences", None, "preferences"),
    RouteSpec("POST", "/preferences", None, "save_preferences"),
    RouteSpec("POST", "/wellbeing/exposure", Permission.VIEW_EVIDENCE, "exposure"),
)


class PreferencePages:
    """Media preferences and the exposure count, over the kit's stores."""

    def __init__(self, kit: PageKit) -> None:
        self.kit = kit

    def preferences(self, c: Ctx) -> Response:
        media = self.kit.media
        return self.kit.render(
            c,
            "preferences.html",
            prefs=media.get(c.p.staff_id),
            org_blur=media.blur_default,
            org_grey=media.greyscale_default,
        )

    def save_preferences(self, c: Ctx) -> Response:
        def choice(name: str) -> bool | None:
            return {"on": True, "off": False}.get(c.field(name))

        chosen = Preferences(blur=choice("blur"), greyscale=choice("greyscale"))
        self.kit.media.put(c.p.staff_id, chosen)
        return self.kit.redirect(c, "/preferences", "prefs")

    def exposure(self, c: Ctx) -> Response:
        count = self.kit.exposure.add(c.session_id, 1)
        return JSONResponse({"exposure": count})
