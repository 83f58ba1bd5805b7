"""The OpenAI surface under /v1: bodies pass through to the child untouched."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import __version__
from ..dialects import openai
from ..lifecycle.state import ModelState
from ..metrics import format_uptime, system_metrics
from ..schemas import (
    OPENAI_SSE,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelList,
    ModelObject,
    Stats,
    TextCompletion,
    json_body,
    replies,
)
from . import RELAYS, gateway, pick_model, relay

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", summary="List models", responses=replies(ModelList))
async def list_models(request: Request) -> dict[str, Any]:
    return openai.model_list(gateway(request).registry.entries())


@router.get("/models/{model_id}", summary="Get a model", responses=replies(ModelObject, 404))
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    return openai.model_object(pick_model(request, model_id))


@router.get("/stats", summary="Server statistics", responses=replies(Stats))
async def stats(request: Request) -> dict[str, Any]:
    """Server statistics and resource use (seed 003's "coming soon" /v1/stats)."""
    gw = gateway(request)
    statuses = [gw.manager.status(e) for e in gw.registry.entries()]
    uptime = time.time() - gw.started_at
    return {
        "object": "stats",
        "version": __version__,
        "uptime_seconds": round(uptime, 1),
        "uptime": format_uptime(uptime),
        "models": {
            "available": len(statuses),
            "loaded": sum(1 for s in statuses if s.state is ModelState.READY),
            "data": [
                {
                    "id": s.id,
                    "state": s.state.value,
                    "in_flight": s.in_flight,
                    "queued": s.queued,
                    "restart_count": s.restart_count,
                    "memory_estimate_bytes": s.memory_estimate,
                    "rss_bytes": s.rss,
                }
                for s in statuses
            ],
        },
        "system": system_metrics(gw.probe),
    }


@router.post(
    "/chat/completions",
    summary="Create a chat completion",
    openapi_extra=json_body(ChatCompletionRequest),
    responses=replies(ChatCompletion, 400, 404, 429, 502, 503, stream=OPENAI_SSE),
)
async def chat_completions(request: Request) -> Response:
    return await relay(request, RELAYS["/v1/chat/completions"])


@router.post(
    "/completions",
    summary="Create a text completion",
    openapi_extra=json_body(CompletionRequest),
    responses=replies(TextCompletion, 400, 404, 429, 502, 503, stream=OPENAI_SSE),
)
async def completions(request: Request) -> Response:
    return await relay(request, RELAYS["/v1/completions"])


@router.post(
    "/embeddings",
    summary="Create embeddings",
    openapi_extra=json_body(EmbeddingsRequest),
    responses=replies(EmbeddingsResponse, 400, 404, 429, 502, 503),
)
async def embeddings(request: Request) -> Response:
    return await relay(request, RELAYS["/v1/embeddings"])
