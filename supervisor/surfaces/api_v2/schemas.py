"""/api/v2 surface models: documentation only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from supervisor.surfaces.common_schemas import ForwardedBody


# -- /api/v2 ----------------------------------------------------------------------------------
class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class LoadParams(BaseModel):
    """The /api/v2 load parameters; each is optional, and null means the configured default."""

    model_config = ConfigDict(extra="forbid")
    n_gpu_layers: int | None = Field(None, ge=-1, description="Layers on the GPU; -1 is all")
    n_ctx: int | None = Field(None, ge=0, description="Context window size")
    n_batch: int | None = Field(None, ge=1, description="Prompt processing batch size")
    threads: int | None = Field(None, ge=1)
    use_mlock: bool | None = Field(None, description="Lock the model in memory")
    f16_kv: bool | None = Field(None, description="Half-precision key/value cache")


class SwapRequest(LoadParams):
    path: str = Field(min_length=1, description="A .gguf inside a models directory")


class V2Parameters(BaseModel):
    context_length: int | None
    embedding_length: int | None
    block_count: int | None


class V2Metadata(BaseModel):
    model_type: str | None
    parameters: V2Parameters


class V2ModelSummary(BaseModel):
    id: str = Field(description="The model's file name")
    size: int
    modified: str | None = Field(description="ISO 8601, UTC")
    metadata: V2Metadata
    capabilities: list[str] = Field(
        description="completion (rerank for a dedicated reranker), then what the model's "
        "multimodal projector adds: vision, audio"
    )
    peer: str | None = Field(
        None, description="Present only for another server's model: the peer serving it"
    )


class V2Gpu(BaseModel):
    index: int = Field(description="The GPU's NVML index, as nvidia-smi lists it")
    name: str


class V2Child(BaseModel):
    """Where one running child of the model runs (issue 17's placement)."""

    role: Literal["chat", "embedding", "rerank"]
    pid: int | None = Field(description="The child's process id; null where not known")
    threads: int | None = Field(description="--threads; null: llama.cpp's default")
    cpus: list[int] = Field(description="Logical CPUs the child is pinned to; empty: not pinned")
    shared: bool = Field(description="Shares a core with another busy child")
    poll: int | None = Field(description="--poll; null: llama.cpp's default")
    memory: Literal["RAM", "VRAM"] | None = Field(
        description="Where its weights and KV cache go; null: not placed"
    )
    gpus: list[V2Gpu] = Field(description="The NVIDIA GPUs it uses; empty: none")
    tensor_split: list[int] = Field(
        description="--tensor-split across its GPUs (MiB free on each); empty with one GPU"
    )


class V2State(BaseModel):
    """Our extension: the full lifecycle snapshot of one model."""

    state: str = Field(description="unloaded, loading, ready, draining, stopping or failed")
    pinned: bool
    pid: int | None
    port: int | None
    memory_estimate_bytes: int | None
    memory_estimate: str | None
    rss_bytes: int | None
    load_seconds: float | None
    loaded_at: str | None
    last_error: str | None
    exit_code: int | None
    restart_count: int
    in_flight: int
    queued: int
    embedding_state: str = Field(description="State of the model's embedding child")
    rerank_state: str = Field(
        description="State of the child serving /v1/rerank (a dedicated reranker's own child)"
    )
    path: str
    params: LoadParams
    children: list[V2Child] = Field(description="The model's running children, chat first")


class V2LoadedModel(BaseModel):
    status: str = Field(description="loaded, or the lifecycle state")
    load_time: str | None
    state: V2State


class V2ModelsList(BaseModel):
    available_models: list[V2ModelSummary]
    loaded_models: dict[str, V2LoadedModel] = Field(description="Keyed by file name")


class V2Performance(BaseModel):
    load_time: str | None
    tokens_processed: int
    average_speed: float = Field(description="Tokens per second")


class V2ModelInfo(V2ModelSummary):
    status: str = Field(description="loaded, unloaded, or the lifecycle state")
    performance: V2Performance
    state: V2State


class LoadResponse(BaseModel):
    status: Literal["success"] = "success"
    message: str
    load_time: str | None
    memory_used: str = Field(description="For example 4.5GB")


class UnloadResponse(BaseModel):
    status: Literal["success"] = "success"
    message: str
    unload_time: str | None


class SwapResponse(BaseModel):
    status: Literal["success"] = "success"
    message: str
    mode: Literal["blue-green", "stop-start"]
    swap_seconds: float
    path: str
    load_time: str | None


class ReloadResponse(BaseModel):
    status: Literal["success"] = "success"
    message: str
    swapped: list[str]
    unloaded: list[str]
    added: list[str]


class V2ChatRequest(ForwardedBody):
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n_predict: int | None = Field(None, ge=-1, description="max_tokens: >= 1, or -1 (unlimited)")


class ChildCores(BaseModel):
    """The cores the gateway shares out among its llama-server children."""

    cpus: list[int] = Field(description="Logical CPU ids, one per core children may use")
    pinnable: bool = Field(description="Whether children are pinned to their CPUs")
    source: str = Field(description="How they were found: affinity, cgroup quota, cpu_cores")


class CpuMetrics(BaseModel):
    utilization: float
    cores: dict[str, int | None] = Field(description="physical, logical")
    frequency: dict[str, int | None] = Field(description="current, min, max (MHz)")
    for_children: ChildCores


class MemoryMetrics(BaseModel):
    total_mb: int
    available_mb: int
    used_mb: int
    percent: float


class GpuMetrics(BaseModel):
    available: bool
    name: str | None = None
    memory: dict[str, float] | None = Field(None, description="total_mb, used_mb, percent")


class Metrics(BaseModel):
    cpu: CpuMetrics
    memory: MemoryMetrics
    gpu: GpuMetrics
    timestamp: str | None


class V2Health(BaseModel):
    status: Literal["healthy"] = "healthy"
    version: str
    uptime: str = Field(description="For example 2d 3h 45m")
    last_error: str | None


class ChildLogLine(BaseModel):
    time: str = Field(description="ISO 8601, UTC")
    role: Literal["chat", "embedding", "rerank"]
    pid: int | None
    line: str


class ModelLogs(BaseModel):
    model: str
    lines: list[ChildLogLine] = Field(description="Oldest first")


class ActivityEntry(BaseModel):
    """One finished request (reads, GET/HEAD/OPTIONS, are not logged)."""

    id: int = Field(description="Increasing: a later request has a larger id")
    time: str = Field(description="When the request began: ISO 8601, UTC")
    method: str
    route: str = Field(description="The route template, as /metrics labels it")
    model: str | None
    status: int
    stream: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None = Field(description="A stream's time to its first token")
    tokens_per_second: float | None = Field(description="From llama.cpp's timings")
    duration_ms: float
    prompt: str | None = Field(None, description="Only with activity_text: its first 4096 chars")
    completion: str | None = Field(None, description="Only with activity_text")


class ActivityList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ActivityEntry] = Field(description="Newest first")


class HistoryGpu(BaseModel):
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int
    memory_total_bytes: int


class HistoryModel(BaseModel):
    state: str
    in_flight: int
    queued: int


class HistorySample(BaseModel):
    time: float = Field(description="Epoch seconds")
    requests_per_s: float = Field(description="Logged requests (not reads) per second")
    tokens_per_s: float = Field(description="Completion tokens per second")
    prompt_tokens_per_s: float
    ttft_p50_ms: float | None = Field(description="Over the streams begun since the last sample")
    ttft_p95_ms: float | None
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    gpus: list[HistoryGpu]
    models: dict[str, HistoryModel]


class MetricsHistoryReply(BaseModel):
    interval_s: float
    window_s: float
    samples: list[HistorySample] = Field(description="Oldest first")
