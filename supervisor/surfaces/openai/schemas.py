"""OpenAI surface models (/v1, and the native /chat/completions): documentation only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from supervisor.surfaces.common_schemas import ForwardedBody, Stop


# -- OpenAI (/v1, and native /chat/completions) -------------------------------------------------
class ChatMessage(ForwardedBody):
    role: str = Field(description="system, user, assistant or tool")
    content: str | list[dict[str, Any]] | None = Field(None, description="Text, or content parts")


class ChatCompletionRequest(ForwardedBody):
    model: str | None = Field(None, description="Alias, file name or stem; default model if unset")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = Field(False, description="Answer as SSE chunks ending in data: [DONE]")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, description="Tokens to generate at most")
    stop: Stop = Field(None, description="Stop sequences")
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None


class CompletionRequest(ForwardedBody):
    model: str | None = Field(None, description="Alias, file name or stem; default model if unset")
    prompt: str | list[str] = Field(description="Text to complete")
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = None
    stop: Stop = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None


class EmbeddingsRequest(ForwardedBody):
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]] = Field(description="Text(s) or tokens")
    encoding_format: str | None = Field(None, description="float (default) or base64")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str | None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = Field(None, description="stop or length")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 if asked")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage | None = None


class ModelObject(BaseModel):
    id: str = Field(description="The model's alias, else its file stem")
    object: Literal["model"] = "model"
    created: int = Field(description="The file's modification time, epoch seconds")
    owned_by: str
    capabilities: list[str] = Field(
        default=["completion"],
        description="Present only when more than completion: completion (rerank for a "
        "dedicated reranker), then what the model's multimodal projector adds: vision, audio",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class PeerObject(BaseModel):
    name: str
    url: str = Field(description="The peer's address (never its key)")
    state: Literal["unknown", "up", "down"] = Field(
        description="unknown until its first check; down after a failed one"
    )
    latency_ms: float | None = Field(description="How long its last check took")
    models: list[str] = Field(description="Its models served here (as <name>/<id>, and <id>)")
    spillover: bool = Field(description="Whether it takes requests a full local queue refuses")
    in_flight: int = Field(description="Requests relayed to it now")
    checked_at: float | None = Field(description="Its last check, epoch seconds")
    last_error: str | None = Field(description="Why its last check failed; null when up")


class PeerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PeerObject]
