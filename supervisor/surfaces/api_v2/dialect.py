"""The /api/v2 surface: models list, model info, load, unload, swap. Pure functions.

/api/v2 names models by file name, so every id here is ``ModelEntry.file_name``. Its status
words are "loaded" (our READY) and, for info, "unloaded"; any other lifecycle state is shown as
its own value ("loading", "draining", "stopping", "failed"). Each model also carries our
extension key ``"state"`` with the full status snapshot operators need, its running children's
placement (threads, CPUs, polling, GPUs) included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from supervisor.children.spec import LoadParams
from supervisor.clock import iso
from supervisor.errors import BadRequest
from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.models.memory import format_bytes
from supervisor.models.registry import ModelEntry
from supervisor.peers.model import PeerModel
from supervisor.placement.plan import Placement

# (key, minimum) for the /api/v2 integer load parameters; -1 GPU layers means "all".
_INT_PARAMS: dict[str, int] = {"n_gpu_layers": -1, "n_ctx": 0, "n_batch": 1, "threads": 1}
_INT_MAX = 2**31 - 1  # llama-server reads these flags as C ints
_BOOL_PARAMS: tuple[str, ...] = ("use_mlock", "f16_kv")


def status_word(state: ModelState) -> str:
    """The /api/v2 word for a lifecycle state: READY is "loaded", the rest keep their value."""
    return "loaded" if state is ModelState.READY else state.value


def model_summary(entry: ModelEntry) -> dict[str, Any]:
    """One item of ``available_models``."""
    return {
        "id": entry.file_name,
        "size": entry.size,
        "modified": iso(entry.modified),
        "metadata": _metadata(entry),
        "capabilities": list(entry.capabilities),
    }


def peer_model_summary(model: PeerModel) -> dict[str, Any]:
    """A peer's model in ``available_models``: its name is all its peer's /v1/models tells.
    ``peer`` (ours) marks it: it has no children, logs or lifecycle here."""
    unknown = {"context_length": None, "embedding_length": None, "block_count": None}
    return {
        "id": model.file_name,
        "size": 0,
        "modified": None,
        "metadata": {"model_type": None, "parameters": unknown},
        "capabilities": list(model.capabilities),
        "peer": model.peer,
    }


def _metadata(entry: ModelEntry) -> dict[str, Any]:
    info = entry.info
    return {
        "model_type": info.architecture,
        "parameters": {
            "context_length": info.context_length,
            "embedding_length": info.embedding_length,
            "block_count": info.block_count,
        },
    }


def params_dict(params: LoadParams) -> dict[str, Any]:
    """The load parameters that were given (not None), in declaration order."""
    values = ((f.name, getattr(params, f.name)) for f in fields(params))
    return {name: value for name, value in values if value is not None}


def state_details(status: ModelStatus) -> dict[str, Any]:
    """Everything an operator needs about one model's lifecycle, JSON-friendly."""
    estimate = status.memory_estimate
    return {
        "state": status.state.value,
        "pinned": status.pinned,
        "pid": status.pid,
        "port": status.port,
        "memory_estimate_bytes": estimate,
        "memory_estimate": format_bytes(estimate) if estimate is not None else None,
        "rss_bytes": status.rss,
        "load_seconds": status.load_seconds,
        "loaded_at": iso(status.loaded_at),
        "last_error": status.last_error,
        "exit_code": status.exit_code,
        "restart_count": status.restart_count,
        "in_flight": status.in_flight,
        "queued": status.queued,
        "embedding_state": status.embedding_state.value,
        "rerank_state": status.rerank_state.value,
        "path": status.path.name,  # the file, not where the host keeps it
        "params": params_dict(status.params),
        "children": children(status),
    }


def children(status: ModelStatus) -> list[dict[str, Any]]:
    """Each running child of the model (chat, embedding, rerank) and where it runs."""
    return [
        child_placement(role, placement, status.pids.get(role))
        for role, placement in status.placements.items()
    ]


def child_placement(role: str, placement: Placement, pid: int | None) -> dict[str, Any]:
    """One child's threads, CPUs, polling and memory. GPUs by NVML index and name (as
    ``nvidia-smi`` lists them); a split across several GPUs in their free MiB."""
    memory = placement.memory
    return {
        "role": role,
        "pid": pid,
        "threads": placement.threads,
        "cpus": list(placement.cpus),
        "shared": placement.shared,
        "poll": placement.poll,
        "memory": memory.where if memory else None,
        "gpus": [{"index": gpu.index, "name": gpu.name} for gpu in placement.gpus],
        "tensor_split": list(memory.tensor_split) if memory else [],
    }


def loaded_models(
    statuses: list[tuple[ModelEntry, ModelStatus]],
) -> dict[str, dict[str, Any]]:
    """``loaded_models``: every model that is not unloaded, keyed by file name."""
    return {
        entry.file_name: {
            "status": status_word(status.state),
            "load_time": iso(status.loaded_at),
            "state": state_details(status),
        }
        for entry, status in statuses
        if status.state is not ModelState.UNLOADED
    }


def models_list(
    entries: list[ModelEntry],
    statuses: list[tuple[ModelEntry, ModelStatus]],
    peers: Sequence[PeerModel] = (),
) -> dict[str, Any]:
    """``GET /api/v2/models``: the local models, then the peers' (``Peers.models``), which
    have no children here, so no ``loaded_models`` entry."""
    return {
        "available_models": [model_summary(entry) for entry in entries]
        + [peer_model_summary(model) for model in peers],
        "loaded_models": loaded_models(statuses),
    }


def model_info(
    entry: ModelEntry,
    status: ModelStatus,
    *,
    tokens_processed: int = 0,
    average_speed: float = 0.0,
) -> dict[str, Any]:
    """``GET /api/v2/models/{model_id}``; ``average_speed`` is in tokens per second."""
    return {
        "id": entry.file_name,
        "size": entry.size,
        "modified": iso(entry.modified),
        "status": status_word(status.state),
        "metadata": _metadata(entry),
        "capabilities": list(entry.capabilities),
        "performance": {
            "load_time": iso(status.loaded_at),
            "tokens_processed": tokens_processed,
            "average_speed": average_speed,
        },
        "state": state_details(status),
    }


def parse_load_params(body: dict[str, Any] | None) -> LoadParams:
    """The /api/v2 load body. Every key is optional; JSON ``null`` means "the default"."""
    if body is None:
        return LoadParams()
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    allowed = (*_INT_PARAMS, *_BOOL_PARAMS)
    for key in body:
        if key not in allowed:
            raise BadRequest(f"Unknown load parameter '{key}'", param=key)
    values: dict[str, Any] = {}
    for key, minimum in _INT_PARAMS.items():
        values[key] = _int_param(body, key, minimum)
    for key in _BOOL_PARAMS:
        values[key] = _bool_param(body, key)
    return LoadParams(**values)


def _int_param(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    # bool is a subclass of int; ``true`` is not a layer count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"'{key}' must be an integer", param=key)
    if value < minimum:
        raise BadRequest(f"'{key}' must be >= {minimum}", param=key)
    if value > _INT_MAX:
        raise BadRequest(f"'{key}' must be <= {_INT_MAX}", param=key)
    return value


def _bool_param(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be a boolean", param=key)
    return value


def parse_swap_body(body: dict[str, Any]) -> tuple[str, LoadParams]:
    """``POST /api/v2/models/{id}/swap``: ``{"path": "...", ...optional load parameters}``."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest("'path' is required and must be a non-empty string", param="path")
    rest = {key: value for key, value in body.items() if key != "path"}
    return path, parse_load_params(rest)


def load_response(status: ModelStatus, memory_used: str) -> dict[str, Any]:
    """``POST /api/v2/models/{model_id}/load``'s success body."""
    return {
        "status": "success",
        "message": "Model loaded successfully",
        "load_time": iso(status.loaded_at),
        "memory_used": memory_used,
    }


def unload_response(unloaded_at: float) -> dict[str, Any]:
    """``POST /api/v2/models/{model_id}/unload``'s success body."""
    return {
        "status": "success",
        "message": "Model unloaded successfully",
        "unload_time": iso(unloaded_at),
    }
