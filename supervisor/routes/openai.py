"""The OpenAI surface under /v1: bodies pass through to the child untouched."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..backends.argv import Role
from ..dialects import openai
from . import gateway

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return openai.model_list(gateway(request).registry.entries())


@router.get("/models/{model_id}")
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    return openai.model_object(gateway(request).registry.resolve(model_id))


async def _relay(request: Request, path: str, role: Role) -> Response:
    body = await request.body()
    data = openai.parse_body(body)
    openai.wants_stream(data)  # a bad value is our clear 400, not the child's
    gw = gateway(request)
    entry = gw.pick_model(openai.requested_model(data))
    return await gw.proxy.forward(
        lambda: gw.acquire(entry, role), path, body, openai.error_event, request.receive
    )


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _relay(request, "/v1/chat/completions", Role.CHAT)


@router.post("/completions")
async def completions(request: Request) -> Response:
    return await _relay(request, "/v1/completions", Role.CHAT)


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    return await _relay(request, "/v1/embeddings", Role.EMBEDDING)
