"""Shared pieces of the documentation models: the forwarded-body base and error bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REF = "#/components/schemas/"
Responses = dict[int | str, dict[str, Any]]
Stop = str | list[str] | None


class ForwardedBody(BaseModel):
    """A request body whose other fields go to llama-server as they are."""

    model_config = ConfigDict(extra="allow")


# -- errors -----------------------------------------------------------------------------------
class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, rate_limit_error, unavailable_error …")
    param: str | None = None
    code: str | None = Field(None, description="model_not_found, queue_full, model_not_loaded …")


class OpenAIError(BaseModel):
    """The error envelope of every surface but /api."""

    error: OpenAIErrorBody


class DetailError(BaseModel):
    """The /api surface's error body."""

    detail: str
