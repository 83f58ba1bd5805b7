"""What command line a llama-server child gets: pure functions over settings and a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from supervisor.children.spec import LoadParams, Role
from supervisor.config import Settings
from supervisor.models.memory import context_total
from supervisor.models.registry import ModelEntry
from supervisor.placement.plan import Placement
from supervisor.rpc.workers import model_workers


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
    threads: int | None = None  # --threads and --threads-batch
    poll: int | None = None
    tensor_split: tuple[int, ...] = ()
    pooling: str | None = None
    reranking: bool = False
    mmproj: Path | None = None  # the multimodal projector, on the main child only
    batch_size: int | None = None
    mlock: bool = False
    kv_cache_type: str | None = None
    n_predict: int | None = None  # the default token limit of requests that set none
    api_key_file: Path | None = None  # the child refuses requests without the key in it
    rpc: tuple[str, ...] = ()  # RPC workers (host:port) whose devices take layers: --rpc
    extra_args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ChildCommand:
    """How a child is started: its command line, what its environment adds to the gateway's,
    and the CPUs it is pinned to."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cpus: tuple[int, ...] = ()  # empty: not pinned (the gateway's own affinity)


def child_command(spec: LaunchSpec, placement: Placement | None) -> ChildCommand:
    """The command for ``spec``, confined to the ``placement``'s CPUs and GPUs."""
    placed = placement or Placement()
    env: dict[str, str] = {}
    if placed.cuda_devices is not None:
        # PCI order, as NVML numbers GPUs, in case an index stands in for a UUID.
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": placed.cuda_devices}
    return ChildCommand(build_argv(spec), env, placed.cpus)


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def launch_spec(
    settings: Settings,
    entry: ModelEntry,
    binary: Path,
    role: Role = Role.CHAT,
    port: int = 0,
    params: LoadParams | None = None,
    placement: Placement | None = None,
) -> LaunchSpec:
    """Merge, highest first: the load request's parameters, the model's [[models]] entry,
    the global defaults. Threads, polling and the GPU split come from the ``placement``
    (which already honours threads set by hand)."""
    own = entry.overrides
    asked = params or LoadParams()
    placed = placement or Placement()
    pooling = None
    if role is Role.EMBEDDING and entry.info.pooling_type is None:
        pooling = settings.embedding_pooling
    # A dedicated reranker's main child reranks too; like an embedding child it generates no
    # text, so it gets no default token limit.
    reranking = role is Role.RERANK or (role is Role.CHAT and entry.reranker)
    generates = role is Role.CHAT and not reranking
    return LaunchSpec(
        binary=binary,
        model_path=entry.path,
        alias=entry.id,
        host="127.0.0.1",
        port=port,
        role=role,
        ctx_size=context_size(settings, entry, asked),
        n_gpu_layers=_first(
            asked.n_gpu_layers, own.n_gpu_layers if own else None, settings.n_gpu_layers
        ),
        parallel=parallel_slots(settings, entry),
        threads=_first(
            placed.threads, asked.threads, own.threads if own else None, settings.threads
        ),
        poll=placed.poll,
        tensor_split=placed.memory.tensor_split if placed.memory else (),
        pooling=pooling,
        reranking=reranking,
        mmproj=entry.mmproj if role is Role.CHAT else None,
        batch_size=asked.n_batch,
        mlock=bool(asked.use_mlock),
        # f16 is llama.cpp's default KV type: only f16_kv=false changes anything.
        kv_cache_type="f32" if asked.f16_kv is False else None,
        n_predict=settings.max_tokens_limit if generates else None,
        extra_args=tuple(own.extra_args) if own else (),
        rpc=tuple(worker.strip() for worker in model_workers(settings, entry)),
    )


def parallel_slots(settings: Settings, entry: ModelEntry) -> int:
    own = entry.overrides
    return own.parallel if own and own.parallel is not None else settings.parallel


def context_size(settings: Settings, entry: ModelEntry, params: LoadParams | None) -> int | None:
    """A child's --ctx-size: the load request's, the model's [[models]] entry's, the global
    default; None leaves it to llama-server."""
    own = entry.overrides
    asked = params or LoadParams()
    return _first(asked.n_ctx, own.ctx_size if own else None, settings.ctx_size)


def slot_context(entry: ModelEntry, ctx_size: int | None, parallel: int) -> int:
    """Tokens of context in each of a child's ``parallel`` slots: an explicit --ctx-size is
    split between them; unset or 0, llama-server gives each slot the model's trained context
    (models/memory.py ``context_total``)."""
    return context_total(entry, ctx_size, parallel) // max(1, parallel)


def build_argv(spec: LaunchSpec) -> list[str]:
    argv = [
        str(spec.binary),
        "--model", str(spec.model_path),
        "--alias", spec.alias,
    ]  # fmt: skip
    optional: list[tuple[str, int | str | None]] = [
        ("--ctx-size", spec.ctx_size),
        ("--n-gpu-layers", spec.n_gpu_layers),
        ("--parallel", spec.parallel),
        ("--threads", spec.threads),
        ("--threads-batch", spec.threads),
        ("--poll", spec.poll),
        ("--tensor-split", ",".join(map(str, spec.tensor_split)) or None),
        ("--batch-size", spec.batch_size),
        ("--cache-type-k", spec.kv_cache_type),
        ("--cache-type-v", spec.kv_cache_type),
        ("--n-predict", spec.n_predict),
        ("--rpc", ",".join(spec.rpc) or None),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    if spec.mlock:
        argv.append("--mlock")
    if spec.role is Role.EMBEDDING:
        argv.append("--embeddings")
        if spec.pooling:
            argv += ["--pooling", spec.pooling]
    if spec.reranking:
        argv.append("--reranking")  # llama.cpp: --embeddings with rank pooling, in one flag
    if spec.mmproj is not None:
        argv += ["--mmproj", str(spec.mmproj)]
    argv += list(spec.extra_args)
    if spec.api_key_file is not None:
        argv += ["--api-key-file", str(spec.api_key_file)]
    # Last, as llama.cpp keeps an option's last value: nothing before can move a child off
    # loopback (config.py also refuses listen flags in extra_args).
    argv += ["--host", spec.host, "--port", str(spec.port)]
    return argv
