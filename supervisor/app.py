"""create_app(settings): the lifespan wires the gateway's services onto app.state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__
from .backends.pool import ProcessFactory
from .config import Settings
from .gateway import build_gateway
from .http_errors import install_error_handlers
from .routes import openai, root


def create_app(settings: Settings, *, factory: ProcessFactory | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = build_gateway(settings, factory)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title="llama-supervisor",
        version=__version__,
        description="One gateway in front of supervised llama.cpp servers.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(root.router)
    app.include_router(openai.router)
    return app
