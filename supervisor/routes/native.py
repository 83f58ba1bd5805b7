"""llama.cpp's native root routes (seed 004, BitNet's server): bodies pass through to the
child's own route. ``model`` is optional: without it, the default model, else the only loaded
one, else 503."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..schemas import (
    OPENAI_SSE,
    ChatCompletion,
    ChatCompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    NativeCompletion,
    NativeCompletionRequest,
    NativeEmbedding,
    TokenizeRequest,
    TokenizeResponse,
    json_body,
    replies,
)
from . import RELAYS, relay

router = APIRouter(tags=["native"])


@router.post(
    "/chat/completions",
    summary="Create a chat completion",
    openapi_extra=json_body(ChatCompletionRequest),
    responses=replies(ChatCompletion, 400, 404, 429, 502, 503, stream=OPENAI_SSE),
)
async def chat_completions(request: Request) -> Response:
    """OpenAI-shaped chat; streams end with ``data: [DONE]``."""
    return await relay(request, RELAYS["/chat/completions"])


@router.post(
    "/completion",
    summary="Complete a prompt (llama.cpp)",
    openapi_extra=json_body(NativeCompletionRequest),
    responses=replies(NativeCompletion, 400, 404, 429, 502, 503, stream=OPENAI_SSE),
)
async def completion(request: Request) -> Response:
    """llama.cpp's completion: ``prompt``, ``n_predict``, ``temperature``, ``top_k``,
    ``top_p``, ``repeat_penalty``, ``seed``, ``stop``, ``stream``, and every other field
    llama-server knows. Streams end with ``data: [DONE]`` as seed 004 says (llama-server's
    own /completion stream has no terminator)."""
    return await relay(request, RELAYS["/completion"])


@router.post(
    "/tokenize",
    summary="Tokenize text",
    openapi_extra=json_body(TokenizeRequest),
    responses=replies(TokenizeResponse, 400, 404, 429, 502, 503),
)
async def tokenize(request: Request) -> Response:
    return await relay(request, RELAYS["/tokenize"])


@router.post(
    "/detokenize",
    summary="Turn tokens back into text",
    openapi_extra=json_body(DetokenizeRequest),
    responses=replies(DetokenizeResponse, 400, 404, 429, 502, 503),
)
async def detokenize(request: Request) -> Response:
    return await relay(request, RELAYS["/detokenize"])


@router.post(
    "/embedding",
    summary="Embed text (llama.cpp)",
    openapi_extra=json_body(EmbeddingRequest),
    responses=replies(list[NativeEmbedding], 400, 404, 429, 502, 503),
)
async def embedding(request: Request) -> Response:
    return await relay(request, RELAYS["/embedding"])
