"""The /api surface: models list and info, load and unload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from supervisor.surfaces import services
from supervisor.surfaces.api import dialect as api_dialect
from supervisor.surfaces.schemas import (
    ApiLoadResponse,
    ApiModel,
    ApiModelList,
    DetailError,
    replies,
)

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/models", summary="List models", responses=replies(ApiModelList))
async def list_models(request: Request) -> dict[str, Any]:
    manager = services.manager(request)
    entries = services.catalog(request).entries()
    pairs = [(e, manager.status(e)) for e in entries]
    return api_dialect.models_list(pairs, services.peer_models(request))


@router.get(
    "/models/{model_name}",
    summary="Get a model",
    responses=replies(ApiModel, 404, error=DetailError),
)
async def model_info(request: Request, model_name: str) -> dict[str, Any]:
    entry = services.pick_model(request, model_name)
    return api_dialect.model_entry(entry, services.manager(request).status(entry))


@router.post(
    "/models/{model_name}/load",
    summary="Load a model",
    responses=replies(ApiLoadResponse, 404, 503, error=DetailError),
)
async def load_model(request: Request, model_name: str) -> dict[str, Any]:
    entry = services.pick_model(request, model_name)
    await services.manager(request).load(entry)
    return api_dialect.load_response(entry.id)


@router.post(
    "/models/{model_name}/unload",
    summary="Unload a model",
    responses=replies(ApiLoadResponse, 404, error=DetailError),
)
async def unload_model(request: Request, model_name: str) -> dict[str, Any]:
    entry = services.pick_model(request, model_name)
    await services.manager(request).unload(entry)
    return api_dialect.unload_response(entry.id)
