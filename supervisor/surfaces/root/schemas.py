"""Shared route models: /health, /, /v1/stats."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from supervisor.surfaces.api_v2.schemas import Metrics


# -- shared -----------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class RootInfo(BaseModel):
    name: str
    version: str
    status: Literal["running"] = "running"
    models_available: int


class StatsModel(BaseModel):
    id: str
    state: str
    in_flight: int
    queued: int
    restart_count: int
    memory_estimate_bytes: int | None
    rss_bytes: int | None


class StatsModels(BaseModel):
    available: int
    loaded: int
    data: list[StatsModel]


class Stats(BaseModel):
    object: Literal["stats"] = "stats"
    version: str
    uptime_seconds: float
    uptime: str
    models: StatsModels
    system: Metrics
