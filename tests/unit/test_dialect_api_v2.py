from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from supervisor.children.spec import LoadParams
from supervisor.errors import BadRequest
from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.models.gguf import GGUFInfo
from supervisor.models.memory import GpuInfo
from supervisor.models.registry import ModelEntry
from supervisor.placement.plan import MemoryFit, Placement
from supervisor.surfaces.api_v2 import dialect as api_v2

MODIFIED = 1705314600.0  # 2024-01-15T10:30:00Z
LOADED_AT = 1705320000.75  # 2024-01-15T12:00:00Z (fractions are dropped)
PATH = Path("/models/llama-2-7b-chat.gguf")
MiB = 1024**2

INFO = GGUFInfo(
    architecture="llama",
    name="Llama 2 7B Chat",
    context_length=4096,
    embedding_length=4096,
    block_count=32,
    file_type="Q4_K_M",
    pooling_type=None,
    has_chat_template=True,
    parameter_count=6_738_415_616,
)
ENTRY = ModelEntry(
    id="llama-2-7b-chat",
    path=PATH,
    file_name="llama-2-7b-chat.gguf",
    stem="llama-2-7b-chat",
    alias=None,
    size=4702869504,
    modified=MODIFIED,
    info=INFO,
)
OTHER = ModelEntry(
    id="tiny",
    path=Path("/models/tiny.gguf"),
    file_name="tiny.gguf",
    stem="tiny",
    alias=None,
    size=1024,
    modified=0.0,
    info=GGUFInfo(
        architecture=None,
        name=None,
        context_length=None,
        embedding_length=None,
        block_count=None,
        file_type=None,
        pooling_type=None,
        has_chat_template=False,
        parameter_count=None,
    ),
)
READY = ModelStatus(
    id="llama-2-7b-chat",
    path=PATH,
    state=ModelState.READY,
    pinned=True,
    pid=4242,
    port=41001,
    params=LoadParams(n_ctx=2048, use_mlock=False),
    memory_estimate=103179878,
    rss=99_000_000,
    loaded_at=LOADED_AT,
    load_seconds=1.5,
    restart_count=1,
    in_flight=2,
    queued=3,
    placements={"chat": Placement(threads=2, cpus=(0, 1), memory=MemoryFit(10, 20, "RAM"))},
    pids={"chat": 4242},
)
UNLOADED = ModelStatus(id="tiny", path=Path("/models/tiny.gguf"), state=ModelState.UNLOADED)

SUMMARY: dict[str, Any] = {
    "id": "llama-2-7b-chat.gguf",
    "size": 4702869504,
    "modified": "2024-01-15T10:30:00Z",
    "metadata": {
        "model_type": "llama",
        "parameters": {"context_length": 4096, "embedding_length": 4096, "block_count": 32},
    },
    "capabilities": ["completion"],
}
READY_DETAILS: dict[str, Any] = {
    "state": "ready",
    "pinned": True,
    "pid": 4242,
    "port": 41001,
    "memory_estimate_bytes": 103179878,
    "memory_estimate": "98.4MB",
    "rss_bytes": 99_000_000,
    "load_seconds": 1.5,
    "loaded_at": "2024-01-15T12:00:00Z",
    "last_error": None,
    "exit_code": None,
    "restart_count": 1,
    "in_flight": 2,
    "queued": 3,
    "embedding_state": "unloaded",
    "rerank_state": "unloaded",
    "path": "llama-2-7b-chat.gguf",  # the file name: no host paths for clients
    "params": {"n_ctx": 2048, "use_mlock": False},
    "children": [
        {
            "role": "chat",
            "pid": 4242,
            "threads": 2,
            "cpus": [0, 1],
            "shared": False,
            "poll": None,
            "memory": "RAM",
            "gpus": [],
            "tensor_split": [],
        }
    ],
}


def test_iso_is_utc_with_seconds_and_z() -> None:
    assert api_v2.iso(MODIFIED) == "2024-01-15T10:30:00Z"
    assert api_v2.iso(LOADED_AT) == "2024-01-15T12:00:00Z"
    assert api_v2.iso(0) == "1970-01-01T00:00:00Z"
    assert api_v2.iso(None) is None


def test_model_summary_uses_file_name_as_id() -> None:
    assert api_v2.model_summary(ENTRY) == SUMMARY


def test_state_details_lists_every_status_field() -> None:
    assert api_v2.state_details(READY) == READY_DETAILS
    assert api_v2.state_details(UNLOADED) == {
        "state": "unloaded",
        "pinned": False,
        "pid": None,
        "port": None,
        "memory_estimate_bytes": None,
        "memory_estimate": None,
        "rss_bytes": None,
        "load_seconds": None,
        "loaded_at": None,
        "last_error": None,
        "exit_code": None,
        "restart_count": 0,
        "in_flight": 0,
        "queued": 0,
        "embedding_state": "unloaded",
        "rerank_state": "unloaded",
        "path": "tiny.gguf",
        "params": {},
        "children": [],
    }


def test_each_running_child_shows_its_threads_cpus_and_gpus() -> None:
    gpus = tuple(
        GpuInfo(index, "NVIDIA H200", total=140_000 * MiB, used=0, free=free * MiB,
                uuid=f"GPU-{index}")
        for index, free in ((0, 70_000), (1, 50_000))
    )  # fmt: skip
    vram = MemoryFit(100 * MiB, 120_000 * MiB, "VRAM", gpus, (70_000, 50_000))
    status = dataclasses.replace(
        READY,
        placements={
            "chat": Placement(threads=1, cpus=(0,), shared=True, poll=0, memory=vram),
            "embedding": Placement(threads=None),
        },
        pids={"chat": 4242, "embedding": 4243},
    )
    assert api_v2.state_details(status)["children"] == [
        {
            "role": "chat",
            "pid": 4242,
            "threads": 1,
            "cpus": [0],
            "shared": True,
            "poll": 0,
            "memory": "VRAM",
            # by NVML index and name: never a UUID or a host path
            "gpus": [{"index": 0, "name": "NVIDIA H200"}, {"index": 1, "name": "NVIDIA H200"}],
            "tensor_split": [70_000, 50_000],
        },
        {
            "role": "embedding",
            "pid": 4243,
            "threads": None,
            "cpus": [],
            "shared": False,
            "poll": None,
            "memory": None,
            "gpus": [],
            "tensor_split": [],
        },
    ]


def test_state_details_shows_memory_in_human_units() -> None:
    assert api_v2.state_details(READY)["memory_estimate"] == "98.4MB"


def test_models_list_shows_only_models_that_are_not_unloaded() -> None:
    failed = ModelStatus(
        id="tiny",
        path=Path("/models/tiny.gguf"),
        state=ModelState.FAILED,
        last_error="boom",
        exit_code=1,
    )
    body = api_v2.models_list([ENTRY, OTHER], [(ENTRY, READY), (OTHER, UNLOADED)])
    assert body == {
        "available_models": [
            SUMMARY,
            {
                "id": "tiny.gguf",
                "size": 1024,
                "modified": "1970-01-01T00:00:00Z",
                "metadata": {
                    "model_type": None,
                    "parameters": {
                        "context_length": None,
                        "embedding_length": None,
                        "block_count": None,
                    },
                },
                "capabilities": ["completion"],
            },
        ],
        "loaded_models": {
            "llama-2-7b-chat.gguf": {
                "status": "loaded",
                "load_time": "2024-01-15T12:00:00Z",
                "state": READY_DETAILS,
            }
        },
    }
    loaded = api_v2.loaded_models([(OTHER, failed)])
    assert loaded["tiny.gguf"]["status"] == "failed"
    assert loaded["tiny.gguf"]["load_time"] is None
    assert loaded["tiny.gguf"]["state"]["last_error"] == "boom"


def test_model_info_has_seed_shape_plus_state() -> None:
    body = api_v2.model_info(ENTRY, READY, tokens_processed=15000, average_speed=150.0)
    assert body == {
        **SUMMARY,
        "status": "loaded",
        "performance": {
            "load_time": "2024-01-15T12:00:00Z",
            "tokens_processed": 15000,
            "average_speed": 150.0,
        },
        "state": READY_DETAILS,
    }
    assert list(body)[:5] == ["id", "size", "modified", "status", "metadata"]


@pytest.mark.parametrize(
    ("state", "word"),
    [
        (ModelState.UNLOADED, "unloaded"),
        (ModelState.LOADING, "loading"),
        (ModelState.READY, "loaded"),
        (ModelState.DRAINING, "draining"),
        (ModelState.STOPPING, "stopping"),
        (ModelState.FAILED, "failed"),
    ],
)
def test_model_info_status_word(state: ModelState, word: str) -> None:
    status = ModelStatus(id="tiny", path=Path("/models/tiny.gguf"), state=state)
    body = api_v2.model_info(OTHER, status)
    assert body["status"] == word
    assert body["performance"] == {"load_time": None, "tokens_processed": 0, "average_speed": 0.0}


def test_parse_load_params_accepts_seed_body() -> None:
    body = {
        "n_gpu_layers": 32,
        "n_ctx": 2048,
        "n_batch": 512,
        "threads": 4,
        "use_mlock": True,
        "f16_kv": True,
    }
    assert api_v2.parse_load_params(body) == LoadParams(
        n_gpu_layers=32, n_ctx=2048, n_batch=512, threads=4, use_mlock=True, f16_kv=True
    )


def test_parse_load_params_defaults_and_edges() -> None:
    assert api_v2.parse_load_params(None) == LoadParams()
    assert api_v2.parse_load_params({}) == LoadParams()
    assert api_v2.parse_load_params({"n_ctx": None}) == LoadParams()
    edges = {"n_gpu_layers": -1, "n_ctx": 0, "n_batch": 1, "threads": 1, "f16_kv": False}
    assert api_v2.parse_load_params(edges) == LoadParams(
        n_gpu_layers=-1, n_ctx=0, n_batch=1, threads=1, f16_kv=False
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n_gpu_layers": True}, "n_gpu_layers"),  # bool is not an int
        ({"n_ctx": False}, "n_ctx"),
        ({"n_gpu_layers": -2}, "n_gpu_layers"),
        ({"n_ctx": -1}, "n_ctx"),
        ({"n_batch": 0}, "n_batch"),
        ({"threads": 0}, "threads"),
        ({"threads": 4.0}, "threads"),
        ({"n_ctx": "2048"}, "n_ctx"),
        ({"n_ctx": 2**31}, "n_ctx"),  # past a C int: llama-server could not read it
        ({"n_batch": 10**30}, "n_batch"),
        ({"use_mlock": 1}, "use_mlock"),
        ({"f16_kv": "true"}, "f16_kv"),
        ({"n_threads": 4}, "n_threads"),  # unknown key
    ],
)
def test_parse_load_params_rejects(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        api_v2.parse_load_params(body)
    assert caught.value.param == param
    assert param in caught.value.message


def test_parse_load_params_rejects_non_objects() -> None:
    with pytest.raises(BadRequest):
        api_v2.parse_load_params([1, 2])  # type: ignore[arg-type]


def test_parse_swap_body() -> None:
    assert api_v2.parse_swap_body({"path": "/models/new.gguf"}) == (
        "/models/new.gguf",
        LoadParams(),
    )
    assert api_v2.parse_swap_body({"path": "new.gguf", "n_ctx": 4096, "threads": 8}) == (
        "new.gguf",
        LoadParams(n_ctx=4096, threads=8),
    )
    for bad in ({}, {"path": ""}, {"path": 3}, {"path": None}):
        with pytest.raises(BadRequest) as caught:
            api_v2.parse_swap_body(bad)
        assert caught.value.param == "path"
    with pytest.raises(BadRequest) as caught:
        api_v2.parse_swap_body({"path": "new.gguf", "bogus": 1})
    assert caught.value.param == "bogus"


def test_load_and_unload_responses() -> None:
    assert api_v2.load_response(READY, "4.5GB") == {
        "status": "success",
        "message": "Model loaded successfully",
        "load_time": "2024-01-15T12:00:00Z",
        "memory_used": "4.5GB",
    }
    assert api_v2.unload_response(1705321800.0) == {
        "status": "success",
        "message": "Model unloaded successfully",
        "unload_time": "2024-01-15T12:30:00Z",
    }


def test_params_dict_drops_unset_fields() -> None:
    assert api_v2.params_dict(LoadParams()) == {}
    assert api_v2.params_dict(LoadParams(n_gpu_layers=0, f16_kv=True)) == {
        "n_gpu_layers": 0,
        "f16_kv": True,
    }
