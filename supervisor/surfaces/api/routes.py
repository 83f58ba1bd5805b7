"""The /api surface (seed 002, MyLLM): models list and info, load and unload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from supervisor.relay.plan import gateway, pick_model
from supervisor.surfaces.api import dialect as myllm
from supervisor.surfaces.schemas import (
    DetailError,
    MyllmLoadResponse,
    MyllmModel,
    MyllmModelList,
    replies,
)

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/models", summary="List models", responses=replies(MyllmModelList))
async def list_models(request: Request) -> dict[str, Any]:
    gw = gateway(request)
    return myllm.models_list([(e, gw.manager.status(e)) for e in gw.registry.entries()])


@router.get(
    "/models/{model_name}",
    summary="Get a model",
    responses=replies(MyllmModel, 404, error=DetailError),
)
async def model_info(request: Request, model_name: str) -> dict[str, Any]:
    gw = gateway(request)
    entry = pick_model(request, model_name)
    return myllm.model_entry(entry, gw.manager.status(entry))


@router.post(
    "/models/{model_name}/load",
    summary="Load a model",
    responses=replies(MyllmLoadResponse, 404, 503, error=DetailError),
)
async def load_model(request: Request, model_name: str) -> dict[str, Any]:
    gw = gateway(request)
    entry = pick_model(request, model_name)
    await gw.manager.model(entry).load()
    return myllm.load_response(entry.id)


@router.post(
    "/models/{model_name}/unload",
    summary="Unload a model",
    responses=replies(MyllmLoadResponse, 404, error=DetailError),
)
async def unload_model(request: Request, model_name: str) -> dict[str, Any]:
    gw = gateway(request)
    entry = pick_model(request, model_name)
    await gw.manager.unload(entry)
    return myllm.unload_response(entry.id)
