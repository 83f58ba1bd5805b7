"""Anthropic Messages models (/v1/messages): documentation only; bodies go to llama-server,
which speaks the Messages API itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from supervisor.surfaces.common_schemas import ForwardedBody


class AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]] = Field(
        description="Text, or blocks: text, image (base64 source), tool_use, tool_result"
    )


class MessagesRequest(ForwardedBody):
    model: str = Field(description="A model's id, file name or alias")
    messages: list[AnthropicMessage]
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = Field(False, description="Answer as typed SSE events (message_start …)")
    temperature: float | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None


class CountTokensRequest(ForwardedBody):
    model: str
    messages: list[AnthropicMessage]
    system: str | list[dict[str, Any]] | None = None


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None


class MessageReply(ForwardedBody):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[dict[str, Any]]
    model: str
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class InputTokensReply(BaseModel):
    input_tokens: int


class AnthropicErrorBody(BaseModel):
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, "
        "not_found_error, request_too_large, rate_limit_error, api_error, overloaded_error"
    )
    message: str


class AnthropicError(BaseModel):
    """The error body of /v1/messages, as Anthropic's API answers."""

    type: Literal["error"] = "error"
    error: AnthropicErrorBody
