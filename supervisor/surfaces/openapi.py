"""Decorator helpers for documenting raw-body routes, and the OpenAPI document builder."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from supervisor.surfaces.anthropic.schemas import CountTokensRequest, MessagesRequest
from supervisor.surfaces.api.schemas import (
    ApiChatRequest,
    ApiEmbeddingsRequest,
    ApiGenerateRequest,
)
from supervisor.surfaces.api_v2.schemas import LoadParams, SwapRequest, V2ChatRequest
from supervisor.surfaces.common_schemas import REF, OpenAIError, Responses
from supervisor.surfaces.native.more_schemas import (
    ControlRequest,
    InfillRequest,
    LoraScales,
    RerankRequest,
    ResponsesRequest,
    TranscriptionForm,
)
from supervisor.surfaces.native.schemas import (
    DetokenizeRequest,
    EmbeddingRequest,
    NativeCompletionRequest,
    TokenizeRequest,
)
from supervisor.surfaces.openai.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
)
from supervisor.surfaces.pull_schemas import ImportBody, PullBody

# -- decorator helpers and the schema -------------------------------------------------------
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest, CompletionRequest, EmbeddingsRequest, NativeCompletionRequest,
    TokenizeRequest, DetokenizeRequest, EmbeddingRequest, LoadParams, SwapRequest,
    V2ChatRequest, ApiChatRequest, ApiGenerateRequest, ApiEmbeddingsRequest,
    MessagesRequest, CountTokensRequest, ResponsesRequest, RerankRequest, InfillRequest,
    ControlRequest, TranscriptionForm, LoraScales, PullBody, ImportBody,
)  # fmt: skip
_ERRORS: dict[int, str] = {
    400: "Bad JSON or a parameter out of range",
    401: "No API key, or an unknown one (when keys are configured)",
    403: "An inference key on an admin route",
    404: "Unknown model (or session)",
    409: "The model file exists already, or is being pulled or imported now",
    413: "The model file is over pull_max_bytes",
    429: "The model's queue is full; see Retry-After",
    502: "The model server failed while serving the request",
    503: "The model cannot be loaded now; see Retry-After",
    507: "The disk is full",
}
OPENAI_SSE = "Server-sent events: data: {chunk} … data: [DONE]"
API_SSE = 'Server-sent events: data: {"token", "done": false} … then {"done": true, "full_text", …}'


def json_body(
    model: type[BaseModel], *, required: bool = True, media: str = "application/json"
) -> dict[str, Any]:
    """``openapi_extra`` documenting a request body the route reads raw (JSON, unless
    ``media`` says otherwise)."""
    schema = {"$ref": f"{REF}{model.__name__}"}
    content = {media: {"schema": schema}}
    return {"requestBody": {"required": required, "content": content}}


def replies(
    model: Any, *codes: int, error: type[BaseModel] = OpenAIError, stream: str | None = None
) -> Responses:
    """``responses``: ``model`` on 200 (and SSE if ``stream``), ``error`` on each code."""
    ok: dict[str, Any] = {"model": model}
    if stream is not None:
        ok["content"] = {"text/event-stream": {"schema": {"type": "string", "description": stream}}}
    answers: Responses = {200: ok}
    for code in codes:
        answers[code] = {"model": error, "description": _ERRORS[code]}
    return answers


def text_reply(description: str) -> Responses:
    """``responses`` of a route that answers plain text, not JSON (GET /metrics)."""
    content = {"text/plain": {"schema": {"type": "string", "description": description}}}
    return {200: {"description": "Successful Response", "content": content}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models, with the documented 200 models in place of
    the routes' ``dict`` annotations, and without 422 (validation errors answer 400)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    mode: JsonSchemaMode = "validation"
    pairs = [(model, mode) for model in REQUEST_MODELS]
    _, top = models_json_schema(pairs, ref_template=REF + "{model}")
    # A model in both a request and a reply (LoadParams): the request's form keeps its defaults.
    components.update(top.get("$defs", {}))
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            _tidy_responses(operation.get("responses", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    app.openapi_schema = schema
    return schema


def _tidy_responses(responses: dict[str, Any]) -> None:
    """A documented model replaces the ``dict`` annotation's schema beside it; a route that
    only streams loses the empty JSON schema FastAPI gives any ``Response``."""
    responses.pop("422", None)
    for response in responses.values():
        content: dict[str, Any] = response.get("content", {})
        for media_type, media in list(content.items()):
            ref = media.get("schema", {}).get("$ref")
            if ref is not None:
                media["schema"] = {"$ref": ref}
            elif media.get("schema") == {} and len(content) > 1:
                del content[media_type]
