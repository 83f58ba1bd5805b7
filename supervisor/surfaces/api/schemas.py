"""/api surface models: documentation only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from supervisor.surfaces.api_v2.schemas import Message
from supervisor.surfaces.common_schemas import Stop
from supervisor.surfaces.openai.schemas import Usage


# -- /api -------------------------------------------------------------------------------------
class ApiModel(BaseModel):
    name: str
    family: str | None
    size_mb: int
    quantization: str | None
    context_size: int | None
    template: str | None
    parameters: dict[str, Any]
    loaded: bool


class ApiModelList(BaseModel):
    models: list[ApiModel]


class ApiLoadResponse(BaseModel):
    status: Literal["success"] = "success"
    message: str


class InferenceOptions(BaseModel):
    """Unknown options are a 400."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    stop: Stop = None
    repeat_penalty: float | None = Field(None, ge=0)


class ApiChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    session_id: str | None = Field(None, description="Continue this session; unset starts one")
    stream: bool = Field(False, description='SSE {"token", "done": false} … {"done": true}')
    options: InferenceOptions | None = None


class ApiChatReply(BaseModel):
    message: Message
    session_id: str
    usage: Usage


class ApiGenerateRequest(BaseModel):
    model: str | None = None
    prompt: str
    stream: bool = False
    options: InferenceOptions | None = None


class ApiGenerateReply(BaseModel):
    text: str
    usage: Usage


class ApiEmbeddingsRequest(BaseModel):
    model: str | None = None
    input: str | list[str] = Field(description="A string, or a non-empty list of strings")


class ApiEmbeddingsReply(BaseModel):
    embedding: list[float] | None = Field(None, description="For a string input")
    embeddings: list[list[float]] | None = Field(None, description="For a list input")
    model: str


class SessionSummary(BaseModel):
    id: str
    model: str
    created: float
    updated: float
    message_count: int


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class SessionMessage(BaseModel):
    role: str
    content: str
    created: float


class SessionDetail(BaseModel):
    id: str
    model: str
    created: float
    updated: float
    messages: list[SessionMessage]


class SessionDeleted(ApiLoadResponse):
    pass
