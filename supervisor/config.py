"""Settings: one declarative model, one loader for CLI flags, environment and a TOML file.

Precedence, highest first: CLI flags, ``LLAMA_SUPERVISOR_*`` environment variables, the TOML
file (``--config`` or ``LLAMA_SUPERVISOR_CONFIG``), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from supervisor.errors import ConfigError
from supervisor.rpc.address import check_workers

ENV_PREFIX = "LLAMA_SUPERVISOR_"
# llama-server flags that say where a child listens: the gateway's alone (loopback only).
CHILD_LISTEN_FLAGS = frozenset({"--host", "--port", "--reuse-port"})


def default_cache_dir() -> Path:
    """Where builds, downloads and the demo model are cached (outside any checkout)."""
    explicit = os.environ.get(f"{ENV_PREFIX}CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llama-supervisor"


class ModelSettings(BaseModel):
    """Per-model overrides. ``file`` names the model: a file name or stem found in a models
    directory, or a path to a ``.gguf`` file (the config file is trusted admin input)."""

    file: str = Field(description="GGUF file name, stem, or path")
    alias: str | None = Field(default=None, description="name the model is served under")
    ctx_size: int | None = Field(default=None, ge=0, description="llama-server --ctx-size")
    n_gpu_layers: int | None = Field(default=None, ge=-1, description="llama-server -ngl")
    parallel: int | None = Field(default=None, ge=1, description="parallel slots (-np)")
    threads: int | None = Field(
        default=None, ge=1, description="--threads for this model's children (wins over the plan)"
    )
    extra_args: list[str] = Field(default_factory=list, description="more llama-server flags")
    pinned: bool = Field(default=False, description="load at start, never evict, restart on crash")
    preload: bool = Field(default=False, description="load at start-up")
    idle_ttl_s: float | None = Field(default=None, gt=0, description="unload after idle seconds")
    reranker: bool = Field(
        default=False,
        description="a dedicated reranker: its one child runs with --reranking and serves "
        "/v1/rerank (no second child is started for it)",
    )
    mmproj: str | None = Field(
        default=None,
        description="multimodal projector (--mmproj): a file name in the model's folder, or a "
        "path; unset: an mmproj*.gguf beside the model is paired by name; empty: none",
    )
    rpc: list[str] | None = Field(
        default=None,
        description="llama.cpp RPC workers (`llama-supervisor rpc-worker`) as host:port, whose "
        "devices take this model's layers (--rpc, with n_gpu_layers); unset: the global rpc; "
        "empty: none",
    )

    @field_validator("extra_args")
    @classmethod
    def _no_listen_flags(cls, value: list[str]) -> list[str]:
        """Where a child listens is the gateway's choice (loopback, a free port): see
        children/argv.py, which also puts its own --host and --port last."""
        taken = sorted({arg.split("=", 1)[0] for arg in value} & CHILD_LISTEN_FLAGS)
        if taken:
            raise ValueError(f"extra_args may not set {', '.join(taken)}: children listen on "
                             "127.0.0.1 on a port the gateway picks")  # fmt: skip
        return value


class PeerSettings(BaseModel):
    """Another OpenAI-compatible server whose models the gateway serves too (another
    llama-supervisor, a llama-server, vLLM, ...)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the peer's name: its models are also served as <name>/<model id>",
    )
    url: str = Field(
        pattern=r"^http://[^/?#\s]+/?$",
        description="the peer's base address, http://host:port (its /v1 routes are used)",
    )
    api_key: SecretStr | None = Field(default=None, description="key sent to the peer")
    models: list[str] | None = Field(
        default=None, description="the peer's models to serve; unset: what its /v1/models lists"
    )
    spillover: bool = Field(
        default=True,
        description="take requests for a model served both here and by this peer when the "
        "local queue is full (instead of a 429)",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # a bad value may be a key or a database password
    )

    host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    port: int = Field(default=8080, ge=0, le=65535, description="port the gateway listens on")
    models_dirs: list[Path] = Field(
        default_factory=lambda: [Path("models")], description="directories scanned for .gguf"
    )
    llama_server: Path | None = Field(
        default=None, description="llama-server binary; found in the build cache when unset"
    )
    bitnet_llama_server: Path | None = Field(
        default=None,
        description="llama-server for BitNet-architecture models (build_llamacpp.sh --source "
        "<BitNet checkout>); unset: the main binary, whose llama.cpp runs them too",
    )
    models: list[ModelSettings] = Field(default_factory=list, description="per-model overrides")
    default_model: str | None = Field(default=None, description="model for requests naming none")
    autoload: bool = Field(default=True, description="load a model on its first request")

    ctx_size: int | None = Field(default=None, ge=0, description="default --ctx-size")
    n_gpu_layers: int | None = Field(default=None, ge=-1, description="default -ngl")
    parallel: int = Field(default=4, ge=1, description="default parallel slots per model")
    threads: int | None = Field(
        default=None,
        ge=1,
        description="--threads for every child, instead of their share of the cores (a "
        "model's own threads, or a load request's, win over it)",
    )
    cpu_cores: int | list[int] | None = Field(
        default=None,
        description="the cores children may use: a count (the first N of those below) or a "
        "list of CPU ids; unset: the gateway's affinity mask and cgroup CPU quota, one "
        "logical CPU per physical core",
    )
    place_children: bool = Field(
        default=True,
        description="share the cores among running children (threads, CPU affinity, polling) "
        "and pick each child's GPUs by free memory; off: every child takes llama.cpp's "
        "defaults (all cores, all GPUs)",
    )
    embedding_pooling: str = Field(
        default="mean", description="pooling for embedding children of models that set none"
    )

    load_timeout_s: float = Field(default=300.0, gt=0, description="max wait for a child")
    stop_grace_s: float = Field(default=10.0, ge=0, description="SIGTERM→SIGKILL grace")
    drain_timeout_s: float = Field(
        default=60.0, ge=0, description="how long unload and swap wait for in-flight requests"
    )
    queue_max: int = Field(default=64, ge=0, description="requests queued per model at most")
    queue_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="longest wait in a queue, then 503 with Retry-After: well inside the 60 s "
        "after which nginx (by default), load balancers and many clients give up on a silent "
        "answer, so that a waiting client hears why",
    )
    idle_ttl_s: float | None = Field(default=None, gt=0, description="unload after idle seconds")
    max_loaded_models: int | None = Field(default=None, ge=1, description="loaded at once")
    memory_reserve_mb: int = Field(default=512, ge=0, description="RAM kept free for the host")
    health_interval_s: float = Field(default=5.0, gt=0, description="liveness check period")
    health_timeout_s: float = Field(default=3.0, gt=0, description="liveness check timeout")
    health_failures: int = Field(default=2, ge=1, description="missed checks before a restart")
    restart_max_attempts: int = Field(default=5, ge=1, description="restarts of a pinned model")
    restart_backoff_max_s: float = Field(default=30.0, gt=0, description="longest restart wait")
    log_level: str = Field(default="info", description="gateway log level")
    log_format: Literal["text", "json"] = Field(
        default="text", description="gateway log lines: text, or one JSON object per line"
    )
    access_log: bool = Field(
        default=False,
        description="one gateway log line per request (costs about 4% of the gateway's CPU); "
        "/metrics counts requests either way",
    )
    child_log_lines: int = Field(
        default=1000, ge=10, description="lines of each model's llama-server output kept"
    )
    child_log_echo: Literal["all", "warnings"] = Field(
        default="warnings",
        description="which llama-server lines the gateway's log repeats: its warnings, errors "
        "and unmarked output, or all (several info lines per request); every line is kept in "
        "the model's log either way",
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, how long in-flight requests and streams may run on",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="inference keys; none (and no admin keys) means open"
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list, description="admin keys: load, unload, swap, reload, logs, and all"
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="file of keys, one per line: 'admin <key>' or 'inference <key>' (or a bare "
        "key: inference); '#' starts a comment",
    )
    max_body_bytes: int = Field(
        default=16 * 1024**2,
        ge=1,
        description="largest request body accepted, on every route (then 413)",
    )
    head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="longest a client may take to send a request's line and headers, and "
        "how long a new connection may stay silent (then 408 and the connection is closed)",
    )
    body_idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="longest a request body may stall between reads (then 408 and the "
        "connection is closed)",
    )
    body_min_rate: int = Field(
        default=1024,
        ge=0,
        description="slowest a request body may arrive once it has taken body_idle_timeout_s, "
        "in bytes per second (then 408); 0: no minimum",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="client connections open at once; more are answered 503 and closed. Never "
        "more than half of what the open-files limit leaves after a reserve for children, "
        "model loads and connections to children",
    )
    max_pending_body_bytes: int = Field(
        default=64 * 1024**2,
        ge=1,
        description="bytes of request bodies still arriving that all connections may hold "
        "together (at least max_body_bytes); a body that would pass it is answered 503",
    )
    max_tokens_limit: int | None = Field(
        default=None,
        ge=1,
        description="most tokens a request may ask to generate (max_tokens, n_predict): more is "
        "a 400, and requests that ask none are capped by the child (--n-predict); unset: no cap",
    )
    max_prompt_chars: int | None = Field(
        default=None,
        ge=1,
        description="most characters of prompt (messages, prompt, input, content) a request "
        "may send: more is a 400; unset: only the body size limit and the context apply",
    )
    child_keys: bool = Field(
        default=True,
        description="start each child with a secret key of its own, which only the relay sends, "
        "so other local users cannot use a child's loopback port; off: children answer any "
        "local process, as a plain llama-server does",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins whose web pages may call the gateway (CORS), e.g. "
        '["https://app.example.com"], or ["*"]; none (the default): no CORS headers at all',
    )
    activity_size: int = Field(
        default=500,
        ge=0,
        description="requests kept in the activity log (/api/v2/activity, the console's "
        "Activity view), newest first; 0: none kept",
    )
    activity_text: bool = Field(
        default=False,
        description="also keep each logged request's prompt and completion text (the first "
        "few kilobytes of each) in the activity log; off: only figures are kept",
    )
    pull_allow_private: bool = Field(
        default=False,
        description="let model pulls reach loopback, private and link-local addresses (a "
        "mirror on the LAN); off: only public addresses",
    )
    pull_max_bytes: int = Field(
        default=64 * 1024**3,
        ge=1,
        description="largest model file a pull or import may bring in",
    )
    import_dirs: list[Path] = Field(
        default_factory=list,
        description="folders models may be imported from (POST /v1/import, `models import`), "
        "e.g. a mounted SD card; none: imports from paths are refused",
    )
    peers: list[PeerSettings] = Field(
        default_factory=list,
        description="other OpenAI-compatible servers whose models the gateway serves too "
        "([[peers]]: name, url, api_key, models, spillover)",
    )
    peer_check_interval_s: float = Field(
        default=5.0, gt=0, description="how often each peer's /v1/models is checked"
    )
    peer_timeout_s: float = Field(default=3.0, gt=0, description="longest a peer's check may take")
    rpc: list[str] = Field(
        default_factory=list,
        description="llama.cpp RPC workers (host:port) every model's children use (--rpc); a "
        "model's own rpc wins",
    )
    rpc_allow_public: bool = Field(
        default=False,
        description="allow RPC workers on public addresses (rpc-server has no authentication: "
        "keep workers on a private network); off: only loopback and private addresses",
    )
    sessions_url: SecretStr | None = Field(
        default=None,
        description="where /api sessions are kept: postgresql://user:pass@host/db (shared by "
        "several gateways); unset: SQLite in data_dir",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir, description="build/model cache")
    data_dir: Path = Field(default=Path("data"), description="sessions database lives here")

    @field_validator("sessions_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A secret (it may hold a password): never shown in an error or a log."""
        url = value.get_secret_value() if value is not None else ""
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (unset: SQLite in data_dir)")
        return value if url else None

    @field_validator("peers")
    @classmethod
    def _unique_peers(cls, value: list[PeerSettings]) -> list[PeerSettings]:
        names = [peer.name for peer in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"peer names must be unique: {', '.join(twice)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _rpc_workers(self) -> Settings:
        """RPC worker addresses are host:port, IPv4 or a host name, and not public unless
        rpc_allow_public (host names are checked when resolved, before each load)."""
        try:
            for workers in (self.rpc, *(m.rpc for m in self.models if m.rpc)):
                check_workers(workers, self.rpc_allow_public)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return self

    @property
    def relay_lane_enabled(self) -> bool:
        """Whether ``serve`` hands relayed POSTs to the relay lane (``relay/lane.py``), which
        answers them off the sockets, or sends every request the ASGI way. The lane writes no
        CORS headers and no access-log lines, so ``cors_origins`` or ``access_log`` turns it
        off: the answers are the same, each relayed request costs 0.5 to 1 ms more of the
        gateway's CPU (docs/operations.md)."""
        return not self.cors_origins and not self.access_log


def load_settings(config_file: Path | None = None, **cli: Any) -> Settings:
    """Build settings from CLI values (``None`` means "not given"), environment and TOML."""
    if config_file is None and os.environ.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(os.environ[f"{ENV_PREFIX}CONFIG"])
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    toml_path = config_file

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    given = {key: value for key, value in cli.items() if value is not None}
    try:
        loaded = _Loaded(**given)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    return Settings.model_validate(loaded.model_dump())
