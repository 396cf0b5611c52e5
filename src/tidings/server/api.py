"""HTTP routes of the messaging API. Thin: validation and I/O here, protocol logic below."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from tidings import __version__
from tidings.wire import PROTOCOL_VERSION


class Health(BaseModel):
    status: str
    version: str
    protocol_version: int


def build_router() -> APIRouter:
    """The router of the public messaging API."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", version=__version__, protocol_version=PROTOCOL_VERSION)

    return router
