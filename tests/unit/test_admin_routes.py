"""The /api/v2 and /api model routes with fake children: shapes, load parameters, swap path
checks, and each surface's error format."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeFactory
from fastapi.testclient import TestClient
from served import MakeSettings

from supervisor.app import create_app
from supervisor.models.memory import MemoryProbe

MakeGGUF = Callable[..., Path]


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def models(tmp_path: Path, make_gguf: MakeGGUF) -> Path:
    make_gguf("models/tiny.Q4_1.gguf")
    make_gguf("models/v2/tiny-next.gguf")
    make_gguf("outside/evil.gguf")
    os.symlink(tmp_path / "outside" / "evil.gguf", tmp_path / "models" / "escape.gguf")
    return tmp_path / "models"


@pytest.fixture
def client(models: Path, factory: FakeFactory, make_settings: MakeSettings) -> Iterator[TestClient]:
    settings = make_settings(models_dirs=[models], parallel=2)
    with TestClient(create_app(settings, factory=factory)) as test_client:
        yield test_client


def test_api_v2_lists_files_with_metadata_and_loaded_state(client: TestClient) -> None:
    listed = client.get("/api/v2/models").json()
    ids = [m["id"] for m in listed["available_models"]]
    assert ids == ["tiny-next.gguf", "tiny.Q4_1.gguf"]
    tiny = listed["available_models"][1]
    assert tiny["metadata"] == {
        "model_type": "llama",
        "parameters": {"context_length": 2048, "embedding_length": 64, "block_count": 2},
    }
    assert listed["loaded_models"] == {}
    assert client.post("/api/v2/models/tiny.Q4_1.gguf/load").json()["status"] == "success"
    loaded = client.get("/api/v2/models").json()["loaded_models"]
    assert loaded["tiny.Q4_1.gguf"]["status"] == "loaded"


def test_load_maps_seed_001_parameters_to_flags(client: TestClient, factory: FakeFactory) -> None:
    body = {"n_gpu_layers": 0, "n_ctx": 512, "n_batch": 64, "threads": 1, "use_mlock": False}
    reply = client.post("/api/v2/models/tiny.Q4_1/load", json=body)
    assert reply.status_code == 200, reply.text
    assert set(reply.json()) == {"status", "message", "load_time", "memory_used"}
    assert reply.json()["memory_used"].endswith("B")
    argv = " ".join(factory.made[-1].argv)
    assert "--ctx-size 512" in argv and "--batch-size 64" in argv and "--threads 1" in argv
    info = client.get("/api/v2/models/tiny.Q4_1.gguf").json()
    assert info["status"] == "loaded"
    assert info["state"]["params"]["n_ctx"] == 512
    assert info["state"]["pid"] == factory.made[-1].pid


def test_each_running_child_shows_its_threads_cpus_and_memory(
    models: Path, factory: FakeFactory, make_settings: MakeSettings
) -> None:
    settings = make_settings(models_dirs=[models], cpu_cores=1)
    app = create_app(settings, factory=factory, probe=MemoryProbe(gpu_reader=list))
    with TestClient(app) as client:
        shared_out = client.get("/api/v2/metrics").json()["cpu"]["for_children"]
        assert len(shared_out["cpus"]) == 1 and "cpu_cores 1" in shared_out["source"]
        assert client.post("/api/v2/models/tiny.Q4_1/load").status_code == 200
        children = client.get("/api/v2/models/tiny.Q4_1.gguf").json()["state"]["children"]
        assert children == [
            {
                "role": "chat",
                "pid": factory.made[-1].pid,
                "threads": 1,  # alone on the one core it may use
                "cpus": shared_out["cpus"] if shared_out["pinnable"] else [],
                "shared": False,
                "poll": None,
                "memory": "RAM",
                "gpus": [],
                "tensor_split": [],
            }
        ]
        listed = client.get("/api/v2/models").json()["loaded_models"]
        assert listed["tiny.Q4_1.gguf"]["state"]["children"] == children
        client.post("/api/v2/models/tiny.Q4_1/unload")
        assert client.get("/api/v2/models/tiny.Q4_1").json()["state"]["children"] == []


def test_bad_load_parameters_are_400s_in_the_openai_envelope(client: TestClient) -> None:
    for body in ({"n_ctx": "big"}, {"threads": 0}, {"use_mlock": 1}, {"nope": 1}):
        reply = client.post("/api/v2/models/tiny.Q4_1/load", json=body)
        assert reply.status_code == 400, body
        assert reply.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/api/v2/models/nope/load").status_code == 404


def test_unload_answers_seed_001s_shape(client: TestClient, factory: FakeFactory) -> None:
    client.post("/api/v2/models/tiny.Q4_1/load")
    reply = client.post("/api/v2/models/tiny.Q4_1/unload").json()
    assert set(reply) == {"status", "message", "unload_time"}
    assert not factory.made[-1].alive


def test_swap_accepts_files_inside_models_dirs_only(
    client: TestClient, factory: FakeFactory, tmp_path: Path
) -> None:
    client.post("/api/v2/models/tiny.Q4_1/load")
    swap = "/api/v2/models/tiny.Q4_1/swap"
    for path in (
        str(tmp_path / "outside" / "evil.gguf"),
        "../outside/evil.gguf",
        "escape.gguf",
        "/etc/passwd",
        "missing.gguf",
        "",
    ):
        reply = client.post(swap, json={"path": path})
        assert reply.status_code == 400, path
        assert reply.json()["error"]["param"] == "path"
    reply = client.post(swap, json={"path": "v2/tiny-next.gguf", "n_ctx": 256})
    assert reply.status_code == 200, reply.text
    assert reply.json()["mode"] == "blue-green"
    assert "v2/tiny-next.gguf" in " ".join(factory.made[-1].argv)
    assert client.get("/api/v2/models/tiny.Q4_1").json()["state"]["path"].endswith("tiny-next.gguf")


def test_api_models_routes_and_detail_errors(client: TestClient) -> None:
    listed = client.get("/api/models").json()["models"]
    tiny = next(m for m in listed if m["name"] == "tiny.Q4_1")
    assert set(tiny) == {
        "name", "family", "size_mb", "quantization", "context_size", "template",
        "parameters", "loaded",
    }  # fmt: skip
    assert tiny["loaded"] is False
    assert client.post("/api/models/tiny.Q4_1/load").json() == {
        "status": "success",
        "message": "Model 'tiny.Q4_1' loaded",
    }
    assert client.get("/api/models/tiny.Q4_1").json()["loaded"] is True
    assert client.post("/api/models/tiny.Q4_1/unload").json()["message"].endswith("unloaded")
    missing = client.get("/api/models/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Model not found: nope"}


def test_reload_reports_only_new_files_as_added(
    client: TestClient, models: Path, make_gguf: MakeGGUF
) -> None:
    assert client.post("/api/v2/reload").json()["added"] == []
    make_gguf("models/fresh.gguf")
    assert client.post("/api/v2/reload").json()["added"] == ["fresh"]
    assert client.post("/api/v2/reload").json()["added"] == []
