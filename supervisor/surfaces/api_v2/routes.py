"""The /api/v2 surface: models list and info with their lifecycle state, and the
admin routes: load, unload, hot swap, reload."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from supervisor import __version__
from supervisor.clock import iso
from supervisor.errors import ChildRejected
from supervisor.models.memory import format_bytes
from supervisor.relay.failures import CLIENT_CLOSED_REQUEST
from supervisor.relay.stream import Passthrough
from supervisor.surfaces import services
from supervisor.surfaces.api_v2 import chat as api_v2_chat
from supervisor.surfaces.api_v2 import dialect as api_v2
from supervisor.surfaces.openai.dialect import error_event as openai_error_event
from supervisor.surfaces.openai.dialect import parse_body
from supervisor.surfaces.schemas import (
    OPENAI_SSE,
    ChatCompletion,
    LoadParams,
    LoadResponse,
    Metrics,
    ReloadResponse,
    SwapRequest,
    SwapResponse,
    UnloadResponse,
    V2ChatRequest,
    V2Health,
    V2ModelInfo,
    V2ModelsList,
    json_body,
    replies,
)
from supervisor.telemetry.host import health_v2, system_metrics

router = APIRouter(prefix="/api/v2", tags=["api/v2"])


@router.get("/models", summary="List models", responses=replies(V2ModelsList))
async def list_models(request: Request) -> dict[str, Any]:
    manager = services.manager(request)
    entries = services.catalog(request).entries()
    statuses = [(e, manager.status(e)) for e in entries]
    return api_v2.models_list(entries, statuses, services.peer_models(request))


@router.get("/models/{model_id}", summary="Get a model", responses=replies(V2ModelInfo, 404))
async def model_info(request: Request, model_id: str) -> dict[str, Any]:
    entry = services.pick_model(request, model_id)
    performance = services.performance(request).of(entry.id)
    return api_v2.model_info(
        entry,
        services.manager(request).status(entry),
        tokens_processed=performance.tokens,
        average_speed=performance.average_speed,
    )


async def _optional_body(request: Request) -> dict[str, Any] | None:
    body = await request.body()
    return parse_body(body) if body.strip() else None


@router.post(
    "/models/{model_id}/load",
    summary="Load a model",
    openapi_extra=json_body(LoadParams, required=False),
    responses=replies(LoadResponse, 400, 404, 503),
)
async def load_model(request: Request, model_id: str) -> dict[str, Any]:
    """Load with the /api/v2 parameters; a loaded model with other parameters is swapped to
    them without dropping requests."""
    manager = services.manager(request)
    entry = services.pick_model(request, model_id)
    params = api_v2.parse_load_params(await _optional_body(request))
    await manager.load(entry, params)
    status = manager.status(entry)
    used = status.rss if status.rss is not None else status.memory_estimate
    return api_v2.load_response(status, format_bytes(used or 0))


@router.post(
    "/models/{model_id}/unload", summary="Unload a model", responses=replies(UnloadResponse, 404)
)
async def unload_model(request: Request, model_id: str) -> dict[str, Any]:
    await services.manager(request).unload(services.pick_model(request, model_id))
    return api_v2.unload_response(time.time())


@router.post(
    "/models/{model_id}/swap",
    summary="Hot-swap a model's file",
    openapi_extra=json_body(SwapRequest),
    responses=replies(SwapResponse, 400, 404, 503),
)
async def swap_model(request: Request, model_id: str) -> dict[str, Any]:
    """Hot-swap to another file version: ``{"path": …}`` (a .gguf inside a models directory)
    plus optional load parameters."""
    manager = services.manager(request)
    entry = services.pick_model(request, model_id)
    path, params = api_v2.parse_swap_body(parse_body(await request.body()))
    current = manager.get(entry)  # its entry is the version now served (looking makes nothing)
    new = services.catalog(request).version(current.entry if current else entry, path)
    report = await manager.swap(entry, new, params)
    return {
        "status": "success",
        "message": f"Model swapped ({report.mode})",
        "mode": report.mode,
        "swap_seconds": round(report.seconds, 3),
        "path": str(new.path),
        "load_time": iso(report.backend.loaded_at),
    }


@router.post(
    "/chat/{model_id}",
    summary="Chat with a model",
    openapi_extra=json_body(V2ChatRequest),
    responses=replies(ChatCompletion, 400, 404, 429, 502, 503),
)
async def chat(request: Request, model_id: str) -> Response:
    """The /api/v2 chat: an OpenAI ``chat.completion`` whose ``model`` is the file name."""
    entry = services.serve_model(request, model_id)
    upstream = api_v2_chat.parse_v2_chat(parse_body(await request.body()), stream=False)
    services.limits(request).general.check(upstream)
    targets = services.targets(request)
    answer = await services.proxy(request).fetch_json(
        lambda: targets.acquire(entry), "/v1/chat/completions", json.dumps(upstream).encode(),
        request.receive,
    )  # fmt: skip
    if answer is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    status, completion = answer
    if status >= 400 or not isinstance(completion, dict):
        raise ChildRejected(status, completion)
    services.count_answer(request, entry.id, completion)
    return JSONResponse(api_v2_chat.v2_reply(completion, entry.file_name))


@router.post(
    "/chat/{model_id}/stream",
    summary="Chat with a model, streamed",
    openapi_extra=json_body(V2ChatRequest),
    responses=replies(None, 400, 404, 429, 502, 503, stream=OPENAI_SSE),
)
async def chat_stream(request: Request, model_id: str) -> Response:
    """The /api/v2 stream: ``chat.completion.chunk`` events ending in ``data: [DONE]``,
    relayed as the child sends them."""
    entry = services.serve_model(request, model_id)
    upstream = api_v2_chat.parse_v2_chat(parse_body(await request.body()), stream=True)
    services.limits(request).general.check(upstream)
    targets, meter = services.targets(request), services.meter(request, entry.id)
    return await services.proxy(request).forward(
        lambda: targets.acquire(entry), "/v1/chat/completions", json.dumps(upstream).encode(),
        Passthrough(openai_error_event, meter=meter), request.receive,
    )  # fmt: skip


@router.get("/metrics", summary="System metrics", responses=replies(Metrics))
async def metrics(request: Request) -> dict[str, Any]:
    """CPU, memory and GPU figures of the host, and the cores the gateway shares
    out among its children."""
    return system_metrics(services.probe(request), services.manager(request).placer.cores)


@router.get("/health", summary="Health", responses=replies(V2Health))
@router.head("/health", include_in_schema=False)  # as /health's (surfaces/root/routes.py)
async def health(request: Request) -> dict[str, Any]:
    last_error = services.reloader(request).last_error
    return health_v2(__version__, services.started_at(request), last_error)


@router.post("/reload", summary="Reload the configuration", responses=replies(ReloadResponse))
async def reload(request: Request) -> dict[str, Any]:
    """Re-read the configuration (like SIGHUP): changed models are hot-swapped, removed ones
    drained and unloaded, new ones registered."""
    report = await services.reloader(request).reload()
    return {"status": "success", "message": "Configuration reloaded", **report}
