"""What most page groups share: they are built from the shared `PageKit` and the console's
`ConsoleContext`, and some serve a service the node may run without."""

from __future__ import annotations

from typing import TypeVar

from tidings.errors import NotFoundError

from ..context import ConsoleContext
from ..rendering import PageKit

T = TypeVar("T")


class ContextPages:
    """A page group over the kit (rendering, responses) and the context (the services)."""

    def __init__(self, kit: PageKit, context: ConsoleContext) -> None:
        self.kit = kit
        self.ctx = context


def configured(service: T | None, what: str) -> T:
    """``service``, which the node may run without (``what`` names it, plural). Raises
    `NotFoundError` ("<what> are not configured on this console") when it is None."""
    if service is None:
        raise NotFoundError(f"{what} are not configured on this console")
    return service
