"""The OpenAI surface's own routes under /v1: the model list and the statistics. Its relayed
routes (chat, completions, embeddings, responses …) are the relay table's (``relay/table.py``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from supervisor import __version__
from supervisor.lifecycle.state import ModelState
from supervisor.relay.plan import gateway, pick_model
from supervisor.surfaces.openai import dialect as openai
from supervisor.surfaces.schemas import ModelList, ModelObject, Stats, replies
from supervisor.telemetry.host import format_uptime, system_metrics

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
        "system": system_metrics(gw.probe, gw.manager.placer.cores),
    }
