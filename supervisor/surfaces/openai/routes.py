"""The OpenAI surface's own routes under /v1: the model list, the peers and the statistics.
Its relayed routes (chat, completions, embeddings, responses …) are the relay table's
(``relay/table.py``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from supervisor import __version__
from supervisor.errors import ModelNotFound
from supervisor.lifecycle.state import ModelState
from supervisor.surfaces import services
from supervisor.surfaces.openai import dialect as openai
from supervisor.surfaces.schemas import ModelList, ModelObject, PeerList, Stats, replies
from supervisor.telemetry.host import format_uptime, system_metrics

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", summary="List models", responses=replies(ModelList))
async def list_models(request: Request) -> dict[str, Any]:
    return openai.model_list(services.catalog(request).entries(), services.peer_models(request))


@router.get("/models/{model_id}", summary="Get a model", responses=replies(ModelObject, 404))
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    """A local model, else a model the lists show of a peer that is up (a bare id)."""
    try:
        return openai.model_object(services.pick_model(request, model_id))
    except ModelNotFound:
        listed = {m.id: m for m in services.peer_models(request)}
        if model_id not in listed:
            raise
        return openai.peer_model_object(listed[model_id])


@router.get("/peers", summary="List peers", responses=replies(PeerList))
async def list_peers(request: Request) -> dict[str, Any]:
    """The peers whose models the gateway serves too: each one's health, latency and models
    (seed 003's ``GET /v1/peers``)."""
    return {"object": "list", "data": services.peers(request).listing()}


@router.get("/stats", summary="Server statistics", responses=replies(Stats))
async def stats(request: Request) -> dict[str, Any]:
    """Server statistics and resource use (/v1/stats, an extra of the OpenAI surface)."""
    manager = services.manager(request)
    statuses = [manager.status(e) for e in services.catalog(request).entries()]
    uptime = time.time() - services.started_at(request)
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
        "system": system_metrics(services.probe(request), manager.placer.cores),
    }
