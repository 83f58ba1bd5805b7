"""What command line a llama-server child gets: pure functions over settings and a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..config import Settings
from ..registry import ModelEntry


class Role(StrEnum):
    """What a child serves. llama.cpp answers /v1/embeddings only when started with
    --embeddings, and such a child is meant for embedding models (its chat output differs), so
    one model may have a chat child and, on demand, a separate embedding child."""

    CHAT = "chat"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class LaunchSpec:
    binary: Path
    model_path: Path
    alias: str
    host: str
    port: int
    role: Role = Role.CHAT
    ctx_size: int | None = None
    n_gpu_layers: int | None = None
    parallel: int | None = None
    threads: int | None = None
    pooling: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)


def launch_spec(
    settings: Settings, entry: ModelEntry, binary: Path, role: Role, port: int
) -> LaunchSpec:
    """Merge global defaults with the model's own overrides (the model's win)."""
    own = entry.overrides
    pooling = None
    if role is Role.EMBEDDING and entry.info.pooling_type is None:
        pooling = settings.embedding_pooling
    return LaunchSpec(
        binary=binary,
        model_path=entry.path,
        alias=entry.id,
        host="127.0.0.1",
        port=port,
        role=role,
        ctx_size=own.ctx_size if own and own.ctx_size is not None else settings.ctx_size,
        n_gpu_layers=(
            own.n_gpu_layers if own and own.n_gpu_layers is not None else settings.n_gpu_layers
        ),
        parallel=own.parallel if own and own.parallel is not None else settings.parallel,
        threads=settings.threads,
        pooling=pooling,
        extra_args=tuple(own.extra_args) if own else (),
    )


def build_argv(spec: LaunchSpec) -> list[str]:
    argv = [
        str(spec.binary),
        "--model", str(spec.model_path),
        "--alias", spec.alias,
        "--host", spec.host,
        "--port", str(spec.port),
    ]  # fmt: skip
    optional: list[tuple[str, int | str | None]] = [
        ("--ctx-size", spec.ctx_size),
        ("--n-gpu-layers", spec.n_gpu_layers),
        ("--parallel", spec.parallel),
        ("--threads", spec.threads),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    if spec.role is Role.EMBEDDING:
        argv.append("--embeddings")
        if spec.pooling:
            argv += ["--pooling", spec.pooling]
    argv += list(spec.extra_args)
    return argv
