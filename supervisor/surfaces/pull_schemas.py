"""Pull and import models (``/api/v2/models/pull…``, ``/v1/import``): documentation only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PULL_SSE = (
    "Server-sent events: event: progress (data: {id, file, bytes, total, rate}) a few times a "
    "second, then event: done (data: {id, file, model, bytes, sha256}) or event: error "
    "(data: {id, file, error: {type, message}}); type is checksum_mismatch, not_gguf, "
    "too_large, disk_full, cancelled or download_failed"
)


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="http(s) URL of a .gguf, or hf://ORG/REPO/PATH.gguf")
    sha256: str | None = Field(None, pattern="^[0-9a-fA-F]{64}$", description="checked at the end")
    file: str | None = Field(None, description="the name to store it under; default: the URL's")


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(
        None, description="a .gguf under import_dirs: absolute, or relative to the first"
    )
    url: str | None = Field(None, description="instead of path: pull this URL")
    sha256: str | None = Field(None, pattern="^[0-9a-fA-F]{64}$")
    file: str | None = Field(None, description="the name to store it under")
    stream: bool = Field(False, description="with url: the pull's server-sent events")


class PullListing(BaseModel):
    id: str
    url: str = Field(description="scheme, host and path: no credentials, no query")
    file: str
    bytes: int
    total: int | None
    rate: float = Field(description="bytes per second, over the last few seconds")
    state: Literal["connecting", "downloading", "verifying", "installing"]
    started_at: str = Field(description="ISO 8601, UTC")


class PullList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PullListing]


class PullCancelled(BaseModel):
    id: str
    status: Literal["cancelled"] = "cancelled"


class Imported(BaseModel):
    object: Literal["model"] = "model"
    id: str = Field(description="the id the model is served under")
    file: str
    bytes: int
    sha256: str
    status: Literal["imported"] = "imported"
