"""llama-server's other relayed routes (Responses, rerank, infill, templates, token counts,
introspection): documentation only."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, RootModel

from supervisor.surfaces.common_schemas import ForwardedBody


class ResponsesRequest(ForwardedBody):
    model: str | None = Field(None, description="Default model, else the only loaded one")
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    stream: bool = Field(False, description="Answer as typed SSE events (response.created …)")


class ResponseObject(ForwardedBody):
    id: str
    object: str = "response"
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class InputTokensCount(ForwardedBody):
    input_tokens: int


class RerankRequest(ForwardedBody):
    model: str | None = None
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=1)


class RerankReply(ForwardedBody):
    model: str | None = None
    results: list[dict[str, Any]] = Field(description="{index, relevance_score} per document")
    usage: dict[str, int] | None = None


class InfillRequest(ForwardedBody):
    model: str | None = None
    input_prefix: str
    input_suffix: str
    input_extra: list[dict[str, str]] | None = Field(None, description="{filename, text} chunks")
    prompt: str | None = None
    n_predict: int | None = None
    stream: bool = False


class ApplyTemplateReply(BaseModel):
    prompt: str


class TranscriptionForm(BaseModel):
    """multipart/form-data"""

    file: bytes = Field(description="The audio file")
    model: str | None = Field(None, description="A model whose projector has audio")
    language: str | None = None
    response_format: str | None = None


class Transcription(ForwardedBody):
    """llama-server's transcription answer (``response_format`` json); streamed with
    ``"stream": true``."""

    type: str | None = Field(None, description="transcript.text.done")
    text: str
    usage: dict[str, Any] | None = None


class LoraAdapter(ForwardedBody):
    id: int
    path: str = Field(description="The adapter's file name (never a host path)")
    scale: float


class Slot(ForwardedBody):
    """One of a child's slots (llama-server's /slots: more fields than these)."""

    id: int
    n_ctx: int | None = None
    is_processing: bool | None = None


class LoraScale(BaseModel):
    id: int = Field(description="The adapter's index in GET /lora-adapters")
    scale: float = Field(description="0 turns it off")


class LoraScales(RootModel[list[LoraScale]]):
    """The scale of each adapter to change; the others are set to 0."""


class ControlRequest(ForwardedBody):
    id: str = Field(description="The id of a running chat completion")
    action: str = Field(description="reasoning_end")
    model: str | None = None


class Props(ForwardedBody):
    """llama-server's properties of a model's child (no host paths)."""

    model_alias: str | None = None
    default_generation_settings: dict[str, Any] | None = None
    total_slots: int | None = None
    chat_template: str | None = None
    modalities: dict[str, bool] | None = None
