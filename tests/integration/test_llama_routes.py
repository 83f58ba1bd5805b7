"""llama-server's other surfaces through the real gateway and a real SmolLM2 child: Anthropic
Messages and OpenAI Responses with the official SDKs, rerank, infill, templates, token counts
and introspection (issue 16)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from harness import MODEL_ID, RunningGateway, wait_until_gone

pytestmark = pytest.mark.integration

INFERENCE = "inference-key-for-routes"
ADMIN = "admin-key-for-routes"
TOKEN_LIMIT = 64
ASK = [{"role": "user", "content": "What is the capital of France?"}]
LONG = {"max_tokens": TOKEN_LIMIT, "ignore_eos": True}


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """A keyed gateway (clients must send a key; the Anthropic SDK sends x-api-key) with a
    token limit and a small body limit, so that each error class can be met."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    running = RunningGateway(
        llama_server_bin, demo_model_dir, log,
        env={
            "LLAMA_SUPERVISOR_API_KEYS": json.dumps([INFERENCE]),
            "LLAMA_SUPERVISOR_ADMIN_KEYS": json.dumps([ADMIN]),
            "LLAMA_SUPERVISOR_MAX_TOKENS_LIMIT": str(TOKEN_LIMIT),
            "LLAMA_SUPERVISOR_MAX_BODY_BYTES": "65536",
        },
    )  # fmt: skip
    yield running
    running.stop()


@pytest.fixture
def claude(gateway: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=INFERENCE, max_retries=0, timeout=120)


@pytest.fixture
def oai(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=INFERENCE, max_retries=0, timeout=120
    )


def post(gateway: RunningGateway, path: str, body: Any, key: str = INFERENCE) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=120)


def get(gateway: RunningGateway, path: str, key: str = INFERENCE) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(f"{gateway.url}{path}", headers=headers, timeout=60)


def no_host_paths(text: str, *roots: Path) -> None:
    for root in roots:
        assert str(root) not in text


# -- Anthropic Messages ----------------------------------------------------------------------
def test_anthropic_sdk_creates_a_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=MODEL_ID, max_tokens=16, messages=ASK)  # type: ignore[arg-type]
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL_ID
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0


def test_anthropic_sdk_streams_a_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=MODEL_ID, max_tokens=16, messages=ASK) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.usage.output_tokens > 0


def test_anthropic_sdk_counts_tokens(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model=MODEL_ID, messages=ASK)  # type: ignore[arg-type]
    assert counted.input_tokens > 5


def test_anthropic_sdk_meets_each_error_class(
    claude: anthropic.Anthropic, gateway: RunningGateway
) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=ASK)  # type: ignore[arg-type]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as too_many:
        claude.messages.create(model=MODEL_ID, max_tokens=TOKEN_LIMIT + 1, messages=ASK)  # type: ignore[arg-type]
    assert too_many.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    stranger = anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        stranger.messages.create(model=MODEL_ID, max_tokens=8, messages=ASK)  # type: ignore[arg-type]
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    huge = [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(anthropic.APIStatusError) as large:
        claude.messages.create(model=MODEL_ID, max_tokens=8, messages=huge)  # type: ignore[arg-type]
    assert large.value.status_code == 413
    assert large.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]


def test_a_childs_own_refusal_comes_in_anthropics_shape(gateway: RunningGateway) -> None:
    """llama-server words its errors in OpenAI's envelope; on /v1/messages the client gets
    Anthropic's."""
    asked = {"model": MODEL_ID, "max_tokens": 8, "messages": ASK, "temperature": "hot"}
    reply = post(gateway, "/v1/messages", asked)
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    assert "temperature" in body["error"]["message"]


# -- OpenAI Responses ------------------------------------------------------------------------
def test_openai_sdk_creates_a_response(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model=MODEL_ID, input="Say hello.", max_output_tokens=16)
    assert response.status == "completed" and response.model == MODEL_ID
    assert response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0


def test_openai_sdk_streams_a_response(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=MODEL_ID, input="Say hi.", max_output_tokens=16,
                                       stream=True))  # fmt: skip
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text


def test_responses_input_tokens(gateway: RunningGateway) -> None:
    for path in ("/v1/responses/input_tokens", "/responses/input_tokens"):
        reply = post(gateway, path, {"model": MODEL_ID, "input": "Hello there"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["input_tokens"] > 0


# -- children killed mid-stream --------------------------------------------------------------
def _kill_mid_stream(gateway: RunningGateway, path: str, body: dict[str, Any]) -> list[str]:
    """The stream's lines after the chat child is killed under it."""
    headers = {"x-api-key": INFERENCE}
    with httpx.stream("POST", f"{gateway.url}{path}", json=body, headers=headers,
                      timeout=60) as reply:  # fmt: skip
        assert reply.status_code == 200
        lines = reply.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                break
        victims = [c for c in gateway.children() if "--embeddings" not in c.cmdline()
                   and "--reranking" not in c.cmdline()]  # fmt: skip
        os.kill(victims[0].pid, signal.SIGKILL)
        rest = [line for line in lines if line]
    assert not wait_until_gone(victims, timeout=5)
    return rest


def test_a_child_killed_mid_message_ends_the_stream_with_anthropics_error_event(
    gateway: RunningGateway,
) -> None:
    body = {"model": MODEL_ID, "messages": ASK, "stream": True, **LONG}
    rest = _kill_mid_stream(gateway, "/v1/messages", body)
    assert rest[-2] == "event: error", rest[-3:]
    error = json.loads(rest[-1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"


def test_a_child_killed_mid_response_ends_the_stream_with_an_error_event(
    gateway: RunningGateway,
) -> None:
    body = {"model": MODEL_ID, "input": "Write an essay.", "stream": True,
            "max_output_tokens": TOKEN_LIMIT, "ignore_eos": True}  # fmt: skip
    rest = _kill_mid_stream(gateway, "/v1/responses", body)
    assert rest[-2] == "event: error", rest[-3:]
    error = json.loads(rest[-1].removeprefix("data: "))
    assert error["type"] == "error" and error["code"] == "backend_error"


# -- llama-server's own routes ---------------------------------------------------------------
def test_rerank_starts_a_rerank_child_and_scores_each_document(gateway: RunningGateway) -> None:
    documents = ["Paris is the capital of France.", "Bananas are yellow."]
    for path in ("/v1/rerank", "/rerank", "/reranking", "/v1/reranking"):
        reply = post(gateway, path, {"model": MODEL_ID, "query": "France", "documents": documents})
        assert reply.status_code == 200, (path, reply.text)
        results = reply.json()["results"]
        assert sorted(r["index"] for r in results) == [0, 1]
        assert all(isinstance(r["relevance_score"], float) for r in results)
    assert any("--reranking" in child.cmdline() for child in gateway.children())


def test_infill_passes_llama_servers_own_refusal_through(gateway: RunningGateway) -> None:
    """SmolLM2 has no fill-in-the-middle tokens: llama-server's 501 comes through unchanged."""
    reply = post(gateway, "/infill", {"model": MODEL_ID, "input_prefix": "def f(",
                                      "input_suffix": "):", "n_predict": 4})  # fmt: skip
    assert reply.status_code == 501, reply.text
    assert reply.json()["error"]["type"] == "not_supported_error"


def test_apply_template_and_chat_input_tokens(gateway: RunningGateway) -> None:
    template = post(gateway, "/apply-template", {"model": MODEL_ID, "messages": ASK})
    assert template.status_code == 200, template.text
    assert "capital of France" in template.json()["prompt"]
    for path in ("/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"):
        counted = post(gateway, path, {"model": MODEL_ID, "messages": ASK})
        assert counted.status_code == 200, counted.text
        assert counted.json()["input_tokens"] > 5


def test_native_aliases(gateway: RunningGateway) -> None:
    completion = post(gateway, "/completions", {"model": MODEL_ID, "prompt": "Hi", "n_predict": 3})
    assert completion.status_code == 200, completion.text
    assert completion.json()["tokens_predicted"] > 0
    embedding = post(gateway, "/embeddings", {"model": MODEL_ID, "content": "Hello"})
    assert embedding.status_code == 200, embedding.text
    assert isinstance(embedding.json()[0]["embedding"], list)


def test_introspection_is_router_style_and_names_no_host_path(
    gateway: RunningGateway, demo_model_dir: Path, llama_server_bin: Path
) -> None:
    props = get(gateway, f"/props?model={MODEL_ID}")
    assert props.status_code == 200, props.text
    assert props.json()["model_path"] == f"{MODEL_ID}.gguf"
    assert props.json()["model_alias"] == MODEL_ID
    no_host_paths(props.text, demo_model_dir, llama_server_bin.parent)
    assert get(gateway, "/slots").status_code == 403  # an inference key: admin only
    slots = get(gateway, f"/slots?model={MODEL_ID}", key=ADMIN)
    assert slots.status_code == 200, slots.text
    assert isinstance(slots.json(), list) and slots.json()
    no_host_paths(slots.text, demo_model_dir, llama_server_bin.parent)
    adapters = get(gateway, f"/lora-adapters?model={MODEL_ID}", key=ADMIN)
    assert adapters.status_code == 200 and adapters.json() == []
    unknown = get(gateway, "/props?model=no-such-model")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_transcription_needs_a_model_with_an_audio_projector(gateway: RunningGateway) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        headers={"authorization": f"Bearer {INFERENCE}"},
        data={"model": MODEL_ID},
        files={"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert "audio" in reply.json()["error"]["message"]
