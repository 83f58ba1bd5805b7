from __future__ import annotations

from pathlib import Path

from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.models.gguf import GGUFInfo
from supervisor.models.registry import ModelEntry
from supervisor.surfaces.api import dialect as api

PATH = Path("/models/Meta-Llama-3-8B-Instruct.Q4_K_M.gguf")
ENTRY = ModelEntry(
    id="llama-3-8b",
    path=PATH,
    file_name="Meta-Llama-3-8B-Instruct.Q4_K_M.gguf",
    stem="Meta-Llama-3-8B-Instruct.Q4_K_M",
    alias="llama-3-8b",
    size=4368 * 1024**2 + 300_000,
    modified=1705314600.0,
    info=GGUFInfo(
        architecture="llama",
        name="Meta Llama 3 8B Instruct",
        context_length=8192,
        embedding_length=4096,
        block_count=32,
        file_type="Q4_K_M",
        pooling_type=None,
        has_chat_template=True,
        parameter_count=8_030_261_248,
    ),
)
BARE = ModelEntry(
    id="tiny",
    path=Path("/models/tiny.gguf"),
    file_name="tiny.gguf",
    stem="tiny",
    alias=None,
    size=700_000,
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
READY = ModelStatus(id="llama-3-8b", path=PATH, state=ModelState.READY, pid=1, port=2)
UNLOADED = ModelStatus(id="tiny", path=Path("/models/tiny.gguf"), state=ModelState.UNLOADED)


def test_model_entry_has_the_api_shape() -> None:
    assert api.model_entry(ENTRY, READY) == {
        "name": "llama-3-8b",
        "family": "llama",
        "size_mb": 4368,
        "quantization": "Q4_K_M",
        "context_size": 8192,
        "template": "chat",
        "parameters": {},
        "loaded": True,
    }


def test_model_entry_for_a_bare_unloaded_model() -> None:
    assert api.model_entry(BARE, UNLOADED) == {
        "name": "tiny",
        "family": None,
        "size_mb": 1,
        "quantization": None,
        "context_size": None,
        "template": None,
        "parameters": {},
        "loaded": False,
    }


def test_model_entry_parameters_and_template_override() -> None:
    body = api.model_entry(ENTRY, READY, {"temperature": 0.7, "top_p": 0.9}, template="llama3")
    assert body["parameters"] == {"temperature": 0.7, "top_p": 0.9}
    assert body["template"] == "llama3"
    assert api.model_entry(ENTRY, READY, template=None)["template"] is None


def test_only_ready_counts_as_loaded() -> None:
    for state in ModelState:
        status = ModelStatus(id="llama-3-8b", path=PATH, state=state)
        assert api.model_entry(ENTRY, status)["loaded"] is (state is ModelState.READY)


def test_models_list() -> None:
    body = api.models_list([(ENTRY, READY), (BARE, UNLOADED)])
    assert [m["name"] for m in body["models"]] == ["llama-3-8b", "tiny"]
    assert body == {"models": [api.model_entry(ENTRY, READY), api.model_entry(BARE, UNLOADED)]}
    assert api.models_list([]) == {"models": []}


def test_load_and_unload_responses() -> None:
    assert api.load_response("llama-3-8b") == {
        "status": "success",
        "message": "Model 'llama-3-8b' loaded",
    }
    assert api.unload_response("llama-3-8b") == {
        "status": "success",
        "message": "Model 'llama-3-8b' unloaded",
    }
