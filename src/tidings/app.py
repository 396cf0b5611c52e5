"""The composition root: builds the one ASGI application from the configuration.

This is the only module (with `cli`) that knows every layer; everything else receives what it
needs by dependency injection.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tidings import __version__
from tidings.errors import TidingsError
from tidings.server.api import build_router
from tidings.server.config import ServerConfig


def create_app(config: ServerConfig) -> FastAPI:
    """Build the ASGI app for ``config``; creates the data directory if it is missing."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="Tidings", version=__version__)
    app.state.config = config
    app.include_router(build_router())

    @app.exception_handler(TidingsError)
    async def _typed_error(_: Request, exc: TidingsError) -> JSONResponse:
        # The message is written to be safe to show: it never carries content or keys.
        return JSONResponse(
            status_code=400, content={"error": {"code": exc.code, "message": exc.message}}
        )

    return app
