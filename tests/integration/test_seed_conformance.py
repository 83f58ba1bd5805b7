"""Each seed document's examples, sent unchanged (ports aside) through the gateway to a real
llama-server, with the answers checked against the shapes the documents show."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import MODEL_ID, RunningGateway
from sse import sse_data

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    log = tmp_path_factory.mktemp("conformance") / "gateway.log"
    gateway = RunningGateway(llama_server_bin, demo_model_dir, log, "--default-model", MODEL_ID)
    yield gateway
    gateway.stop()


def post(gw: RunningGateway, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body, timeout=120)


def sse(gw: RunningGateway, path: str, body: dict[str, Any]) -> list[str]:
    """The data payloads of a streamed answer, checking the SSE framing on the way."""
    with httpx.stream("POST", f"{gw.url}{path}", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    return sse_data(raw, strict=True)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_usage(usage: dict[str, Any]) -> None:
    assert all(is_int(usage[k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))


# -- llama.cpp's native routes (BitNet's server) -------------------------------------------
def test_seed_004_health(gw: RunningGateway) -> None:
    assert httpx.get(f"{gw.url}/health").json() == {"status": "ok"}


def test_seed_004_chat_completions(gw: RunningGateway) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is BitNet?"},
        ],
        "temperature": 0.7,
        "max_tokens": 100,
        "stream": False,
    }
    reply = post(gw, "/chat/completions", body).json()
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    check_usage(reply["usage"])


def test_seed_004_completion_with_llama_cpp_sampling(gw: RunningGateway) -> None:
    body = {"prompt": "The capital of France is", "n_predict": 50, "temperature": 0.7,
            "top_k": 40, "top_p": 0.95, "repeat_penalty": 1.1, "seed": 42}  # fmt: skip
    reply = post(gw, "/completion", body).json()
    assert isinstance(reply["content"], str) and reply["content"]


def test_seed_004_streams_end_with_done(gw: RunningGateway) -> None:
    chat = sse(gw, "/chat/completions", {"messages": [{"role": "user", "content": "Count to 5"}],
                                         "stream": True, "max_tokens": 16})  # fmt: skip
    assert chat[-1] == "[DONE]"
    assert any(json.loads(e)["choices"] and "delta" in json.loads(e)["choices"][0]
               for e in chat[:-1])  # fmt: skip
    completion = sse(gw, "/completion", {"prompt": "Once", "n_predict": 8, "stream": True})
    assert completion[-1] == "[DONE]"
    assert all("content" in json.loads(e) for e in completion[:-1])


def test_seed_004_tokenize_round_trip_and_embedding(gw: RunningGateway) -> None:
    tokens = post(gw, "/tokenize", {"content": "Hello world"}).json()["tokens"]
    assert tokens and all(is_int(t) for t in tokens)
    assert post(gw, "/detokenize", {"tokens": tokens}).json()["content"].strip() == "Hello world"
    embedded = post(gw, "/embedding", {"content": "Hello"}).json()
    assert len(embedded[0]["embedding"][0]) == 576


def test_seed_004_no_model_to_serve_is_a_503(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    gateway = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "gateway.log")
    try:
        reply = post(gateway, "/completion", {"prompt": "Hi", "n_predict": 4})
        assert reply.status_code == 503
        assert reply.headers["retry-after"]
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    finally:
        gateway.stop()


# -- the OpenAI surface (OffGrid LLM's routes) ---------------------------------------------
def test_seed_003_root_and_models(gw: RunningGateway) -> None:
    root = httpx.get(f"{gw.url}/").json()
    assert {"name", "version", "status"} <= set(root) and root["status"] == "running"
    models = httpx.get(f"{gw.url}/v1/models").json()
    assert models["object"] == "list"
    for model in models["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model" and is_int(model["created"])


def test_seed_003_chat_with_penalties_and_stop(gw: RunningGateway) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is machine learning?"},
        ],
        "temperature": 0.7,
        "max_tokens": 150,
        "top_p": 0.95,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "stop": ["\n\n\n", "###", "User:", "END"],
    }
    reply = post(gw, "/v1/chat/completions", body).json()
    assert reply["object"] == "chat.completion"
    assert reply["model"] == MODEL_ID
    assert reply["choices"][0]["index"] == 0
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    check_usage(reply["usage"])


def test_seed_003_text_completion(gw: RunningGateway) -> None:
    reply = post(gw, "/v1/completions", {"model": MODEL_ID, "prompt": "Once upon a time",
                                         "temperature": 0.7, "max_tokens": 100}).json()  # fmt: skip
    assert reply["object"] == "text_completion"
    assert isinstance(reply["choices"][0]["text"], str)
    check_usage(reply["usage"])


def test_seed_003_errors(gw: RunningGateway) -> None:
    missing = post(gw, "/v1/chat/completions", {"model": "invalid-model", "messages": []})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert missing.json()["error"]["message"] == "Model not found: invalid-model"
    assert httpx.get(f"{gw.url}/v1/chat/completions").status_code == 405


def test_seed_003_stats(gw: RunningGateway) -> None:
    stats = httpx.get(f"{gw.url}/v1/stats").json()
    assert stats["models"]["available"] >= 1
    assert {"cpu", "memory", "gpu"} <= set(stats["system"])


# -- the /api/v2 surface's system routes ---------------------------------------------------
def test_seed_001_metrics_and_health(gw: RunningGateway) -> None:
    metrics = httpx.get(f"{gw.url}/api/v2/metrics").json()
    assert set(metrics) == {"cpu", "memory", "gpu", "timestamp"}
    assert set(metrics["cpu"]["cores"]) == {"physical", "logical"}
    assert set(metrics["cpu"]["frequency"]) == {"current", "min", "max"}
    assert set(metrics["memory"]) == {"total_mb", "available_mb", "used_mb", "percent"}
    assert metrics["gpu"]["available"] is False
    health = httpx.get(f"{gw.url}/api/v2/health").json()
    assert set(health) == {"status", "version", "uptime", "last_error"}
    assert health["status"] == "healthy"


def test_seed_001_chat_and_stream(gw: RunningGateway) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.7,
        "top_p": 0.95,
        "n_predict": 100,
    }
    reply = post(gw, f"/api/v2/chat/{MODEL_ID}.gguf", body).json()
    assert reply["object"] == "chat.completion"
    assert reply["model"] == f"{MODEL_ID}.gguf"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    check_usage(reply["usage"])
    events = sse(gw, f"/api/v2/chat/{MODEL_ID}.gguf/stream",
                 {"messages": [{"role": "user", "content": "Tell me a story"}],
                  "temperature": 0.8, "top_p": 0.95, "n_predict": 12})  # fmt: skip
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    info = httpx.get(f"{gw.url}/api/v2/models/{MODEL_ID}.gguf").json()
    assert info["performance"]["tokens_processed"] > 0
    assert info["performance"]["average_speed"] > 0


# -- the /api surface -----------------------------------------------------------------------
def test_seed_002_chat_keeps_the_session(gw: RunningGateway) -> None:
    first = post(gw, "/api/chat", {
        "model": MODEL_ID,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Hello!"}],
        "stream": False,
        "options": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 24},
    })  # fmt: skip
    assert first.status_code == 200, first.text
    reply = first.json()
    assert set(reply) == {"message", "session_id", "usage"}
    assert reply["message"]["role"] == "assistant"
    check_usage(reply["usage"])
    session = reply["session_id"]
    second = post(gw, "/api/chat", {"model": MODEL_ID, "session_id": session, "stream": False,
                                    "messages": [{"role": "user", "content": "And again?"}],
                                    "options": {"max_tokens": 8}}).json()  # fmt: skip
    assert second["session_id"] == session
    # The history went first: the child saw more prompt tokens the second time.
    assert second["usage"]["prompt_tokens"] > reply["usage"]["prompt_tokens"]
    stored = httpx.get(f"{gw.url}/api/sessions/{session}").json()
    assert [m["role"] for m in stored["messages"]] == [
        "system", "user", "assistant", "user", "assistant"
    ]  # fmt: skip


def test_seed_002_streamed_chat_events(gw: RunningGateway) -> None:
    events = [json.loads(e) for e in sse(gw, "/api/chat", {
        "model": MODEL_ID, "messages": [{"role": "user", "content": "Hello!"}],
        "stream": True, "options": {"max_tokens": 16}})]  # fmt: skip
    tokens, final = events[:-1], events[-1]
    assert tokens and all(set(t) == {"token", "done"} and t["done"] is False for t in tokens)
    assert final["done"] is True
    assert final["full_text"] == "".join(t["token"] for t in tokens)
    stored = httpx.get(f"{gw.url}/api/sessions/{final['session_id']}").json()
    assert stored["messages"][-1]["content"] == final["full_text"]


def test_seed_002_generate_and_embeddings(gw: RunningGateway) -> None:
    body = {"model": MODEL_ID, "prompt": "Once upon a time", "stream": False,
            "options": {"temperature": 0.8, "max_tokens": 20}}  # fmt: skip
    generated = post(gw, "/api/generate", body)
    assert set(generated.json()) == {"text", "usage"}
    events = [json.loads(e) for e in sse(gw, "/api/generate", {
        "model": MODEL_ID, "prompt": "Once upon a time", "stream": True,
        "options": {"max_tokens": 8}})]  # fmt: skip
    assert events[-1]["done"] is True
    assert events[-1]["full_text"] == "".join(e["token"] for e in events[:-1])
    embedded = post(gw, "/api/embeddings", {"model": MODEL_ID, "input": "Hello world"}).json()
    assert embedded["model"] == MODEL_ID and len(embedded["embedding"]) == 576


def test_seed_002_errors_are_detail_with_the_right_status(gw: RunningGateway) -> None:
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}
    for options in ({"temperature": 2.5}, {"top_p": -0.1}, {"top_k": -1}, {"max_tokens": 0},
                    {"repeat_penalty": -1}, {"temperature": "hot"}):  # fmt: skip
        reply = post(gw, "/api/chat", chat | {"options": options})
        assert reply.status_code == 400, options
        assert set(reply.json()) == {"detail"}
    assert post(gw, "/api/chat", chat | {"model": "llama-9"}).status_code == 404
    missing = post(gw, "/api/chat", chat | {"session_id": "no-such-session"})
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
    assert httpx.get(f"{gw.url}/api/models/nope").json() == {"detail": "Model not found: nope"}


def test_seed_002_session_delete(gw: RunningGateway) -> None:
    body = {"model": MODEL_ID, "options": {"max_tokens": 4},
            "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    reply = post(gw, "/api/chat", body).json()
    session = reply["session_id"]
    listed = httpx.get(f"{gw.url}/api/sessions").json()["sessions"]
    assert session in [s["id"] for s in listed]
    assert httpx.delete(f"{gw.url}/api/sessions/{session}").status_code == 200
    assert httpx.get(f"{gw.url}/api/sessions/{session}").status_code == 404
