"""What a child is asked to be: its role (what it serves) and the load parameters a request
may set. Plain values, shared by the lifecycle (which children exist) and the launch (what
command line each gets), so that neither imports the other for them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from supervisor.models.registry import ModelEntry


class Role(StrEnum):
    """What a child serves. llama.cpp answers /v1/embeddings only when started with
    --embeddings, and such a child is meant for embedding models (its chat output differs), so
    one model may have a chat child and, on demand, a separate embedding child. Rerank
    likewise: llama-server answers /v1/rerank only when started with --reranking."""

    CHAT = "chat"
    EMBEDDING = "embedding"
    RERANK = "rerank"


def child_name(entry_id: str, role: Role) -> str:
    """How logs and tasks name a model's child: the model's id for its chat (main) child,
    ``id#role`` for the others."""
    return entry_id if role is Role.CHAT else f"{entry_id}#{role.value}"


def serving_role(entry: ModelEntry, role: Role) -> Role:
    """Which of the model's children serves ``role``: a dedicated reranker's main child runs
    with --reranking already, so its rerank requests go there rather than to a second child."""
    if role is Role.RERANK and entry.reranker:
        return Role.CHAT
    return role


@dataclass(frozen=True)
class LoadParams:
    """The /api/v2 surface's load body; ``None`` means "the configured default"."""

    n_gpu_layers: int | None = None
    n_ctx: int | None = None
    n_batch: int | None = None
    threads: int | None = None
    use_mlock: bool | None = None
    f16_kv: bool | None = None
