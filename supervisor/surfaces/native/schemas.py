"""llama.cpp's native route models: documentation only."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from supervisor.surfaces.common_schemas import ForwardedBody


# -- llama.cpp's native routes ----------------------------------------------------------------
class NativeCompletionRequest(ForwardedBody):
    prompt: str | list[Any] = Field(description="Text, tokens, or a mix")
    n_predict: int | None = Field(None, ge=-1, description="Tokens to predict; -1 is unlimited")
    temperature: float | None = Field(None, description="0 or less is greedy")
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    seed: int | None = Field(None, description="-1 for a random seed")
    stop: list[str] | None = None
    stream: bool = Field(False, description="Answer as SSE events ending in data: [DONE]")
    model: str | None = Field(None, description="Default model, else the only loaded one")


class NativeCompletion(ForwardedBody):
    """llama-server's /completion answer (it carries more fields than these)."""

    content: str
    stop: bool = True
    model: str | None = None
    tokens_predicted: int | None = None
    tokens_evaluated: int | None = None
    timings: dict[str, float] | None = None


class TokenizeRequest(ForwardedBody):
    content: str
    add_special: bool | None = None
    with_pieces: bool | None = Field(None, description="Answer {id, piece} pairs")
    model: str | None = None


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[dict[str, Any]]


class DetokenizeRequest(ForwardedBody):
    tokens: list[int]
    model: str | None = None


class DetokenizeResponse(BaseModel):
    content: str


class EmbeddingRequest(ForwardedBody):
    content: str | list[str]
    model: str | None = None


class NativeEmbedding(ForwardedBody):
    index: int = 0
    embedding: list[list[float]] | list[float] = Field(description="Per token unless pooled")
