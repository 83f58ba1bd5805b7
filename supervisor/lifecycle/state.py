"""A model's lifecycle states, their legal transitions and the status snapshot that routes
show."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from supervisor.children.spec import LoadParams
from supervisor.errors import IllegalTransition
from supervisor.placement.plan import Placement


class ModelState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    FAILED = "failed"


TRANSITIONS: dict[ModelState, frozenset[ModelState]] = {
    ModelState.UNLOADED: frozenset({ModelState.LOADING}),
    ModelState.LOADING: frozenset({ModelState.READY, ModelState.FAILED}),
    ModelState.READY: frozenset(
        {ModelState.DRAINING, ModelState.STOPPING, ModelState.FAILED, ModelState.LOADING}
    ),
    ModelState.DRAINING: frozenset({ModelState.STOPPING, ModelState.FAILED}),
    ModelState.STOPPING: frozenset({ModelState.UNLOADED, ModelState.FAILED}),
    ModelState.FAILED: frozenset({ModelState.LOADING, ModelState.UNLOADED}),
}


def check_transition(current: ModelState, target: ModelState) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"model state cannot go from {current} to {target}")


@dataclass(frozen=True)
class ModelStatus:
    """What the list and info routes show about one model (a snapshot; never mutated)."""

    id: str
    path: Path
    state: ModelState
    pinned: bool = False
    pid: int | None = None
    port: int | None = None
    params: LoadParams = field(default_factory=LoadParams)
    memory_estimate: int | None = None  # bytes
    rss: int | None = None  # bytes, measured
    loaded_at: float | None = None  # epoch seconds the current child became ready
    load_seconds: float | None = None  # how long its load took
    last_error: str | None = None
    exit_code: int | None = None  # of the last child that died unasked
    restart_count: int = 0
    in_flight: int = 0
    queued: int = 0
    embedding_state: ModelState = ModelState.UNLOADED
    rerank_state: ModelState = ModelState.UNLOADED  # of the child serving /v1/rerank
    placements: dict[str, Placement] = field(default_factory=dict)  # running children, by role
    pids: dict[str, int] = field(default_factory=dict)  # running children's pids, by role
