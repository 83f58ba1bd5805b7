"""Shared routes: GET (and HEAD) /health (llama.cpp's form), GET / (the /api and OpenAI
surfaces' root) and GET /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from supervisor import __version__
from supervisor.surfaces import services
from supervisor.surfaces.openai import dialect as openai
from supervisor.surfaces.schemas import Health, ModelList, RootInfo, replies, text_reply
from supervisor.telemetry.prometheus import METRICS_CONTENT_TYPE

router = APIRouter(tags=["shared"])


@router.get("/health", summary="Gateway health", responses=replies(Health))
# llama-server's other name for it, public too: clients written for llama-server probe it.
@router.get(
    "/v1/health", summary="Gateway health (llama-server's /v1 name)", responses=replies(Health)
)
# Probes may ask with HEAD, public like GET (auth.PUBLIC_PATHS): GET's answer, whose body the
# server drops. Not in the API document, where it would only repeat GET.
@router.head("/health", include_in_schema=False)
@router.head("/v1/health", include_in_schema=False)
async def health() -> dict[str, str]:
    """200 while the gateway runs, whether or not models are loaded."""
    return {"status": "ok"}


@router.get(
    "/models", summary="List models (llama-server's root name)", responses=replies(ModelList)
)
async def list_models(request: Request) -> dict[str, Any]:
    """``GET /v1/models``'s list, under the root name llama-server also serves it at."""
    return openai.model_list(services.catalog(request).entries(), services.peer_models(request))


@router.get("/", summary="Server information", responses=replies(RootInfo))
async def root(request: Request) -> dict[str, Any]:
    return {
        "name": "llama-supervisor",
        "version": __version__,
        "status": "running",
        "models_available": len(services.catalog(request).entries())
        + len(services.peer_models(request)),
    }


@router.get(
    "/metrics", summary="Prometheus metrics", responses=text_reply("Prometheus text format")
)
async def metrics(request: Request) -> Response:
    """Requests, latencies, tokens, queues and the models' lifecycle, for Prometheus."""
    exposition = services.telemetry(request).exposition()
    return Response(exposition, media_type=METRICS_CONTENT_TYPE)
