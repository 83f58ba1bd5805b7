"""The OpenAI surface through the real gateway and a real llama-server running SmolLM2."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from harness import MODEL_ID, RunningGateway, wait_for, wait_until_gone
from prometheus_client.parser import text_string_to_metric_families
from sse import chat_body, data_lines

pytestmark = pytest.mark.integration

# Thousands of tokens take SmolLM2 on two cores far longer than FREED_WITHIN, so a slot that
# frees within it was freed by the disconnect, not by the end of the generation.
LONG = {"max_tokens": 6000, "ignore_eos": True}  # ignore_eos: llama.cpp's own, passed through
FREED_WITHIN = 10.0


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """conftest's gateway with child keys off: the disconnect tests read the child's /slots
    directly, which a keyed child refuses (test_child_security.py checks that)."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    running = RunningGateway(
        llama_server_bin, demo_model_dir, log, env={"LLAMA_SUPERVISOR_CHILD_KEYS": "false"}
    )
    yield running
    running.stop()


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=120)


def test_model_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL_ID]
    assert client.models.retrieve(f"{MODEL_ID}.gguf").id == MODEL_ID


def test_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    assert reply.model == MODEL_ID
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streamed_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2
    assert text.strip()
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=8)
    assert reply.object == "text_completion"
    assert reply.choices[0].text


def test_embeddings_and_chat_on_the_same_model(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL_ID, input=["hello", "world"])
    assert [len(d.embedding) for d in result.data] == [576, 576]
    assert result.data[0].embedding != result.data[1].embedding
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None


def test_unknown_model_is_an_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "model_not_found"


def test_raw_sse_framing(gateway: RunningGateway) -> None:
    body = chat_body(MODEL_ID, "Say hello", max_tokens=12, stream=True)
    url = f"{gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        raw = response.read().decode()
    assert raw.endswith("\n\n")
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        chunk = json.loads(event.removeprefix("data: "))
        assert chunk["object"] == "chat.completion.chunk"


def metric(gateway: RunningGateway, name: str) -> float:
    """The value of one sample of the gateway's /metrics for this model, 0 if absent."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("model") == MODEL_ID
    )


def test_metrics_count_the_tokens_of_real_answers(
    client: openai.OpenAI, gateway: RunningGateway
) -> None:
    tokens_out = "llama_supervisor_tokens_out_total"
    ttft = "llama_supervisor_time_to_first_token_seconds_count"
    before, streams_before = metric(gateway, tokens_out), metric(gateway, ttft)
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert reply.usage is not None
    after_reply = metric(gateway, tokens_out)
    assert after_reply == before + reply.usage.completion_tokens
    stream = client.completions.create(model=MODEL_ID, prompt="Once", max_tokens=8, stream=True)
    assert list(stream)
    assert metric(gateway, tokens_out) > after_reply  # from the final event's timings
    assert metric(gateway, ttft) == streams_before + 1
    assert metric(gateway, "llama_supervisor_tokens_in_total") > 0


def slots_busy(port: int) -> bool:
    slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
    return any(slot["is_processing"] for slot in slots)


def test_client_disconnect_mid_stream_frees_the_slot(gateway: RunningGateway) -> None:
    body = {"model": MODEL_ID, "prompt": "Tell me a long story.", "stream": True, **LONG}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=60) as resp:
        events = data_lines(resp.iter_lines(), strict=True)
        for _ in range(3):
            next(events)
        port = gateway.child_port()
        assert slots_busy(port)
    # The client hung up after 3 of 6000 tokens: the slot must free without finishing them.
    assert wait_for(lambda: not slots_busy(port), timeout=FREED_WITHIN)


def test_client_giving_up_on_a_non_streamed_request_frees_the_slot(
    gateway: RunningGateway,
) -> None:
    body = {"model": MODEL_ID, "prompt": "Tell me a long story.", **LONG}
    errors: list[Exception] = []

    def impatient_client() -> None:
        try:
            httpx.post(f"{gateway.url}/v1/completions", json=body, timeout=httpx.Timeout(3.0))
        except httpx.ReadTimeout as exc:
            errors.append(exc)

    # Load the model first, so the client's 3 s are all spent generating.
    httpx.post(f"{gateway.url}/v1/completions", json={"prompt": "x", "max_tokens": 1,
               "model": MODEL_ID}, timeout=120).raise_for_status()  # fmt: skip
    port = gateway.child_port()
    client = threading.Thread(target=impatient_client)
    client.start()
    assert wait_for(lambda: slots_busy(port), timeout=FREED_WITHIN)
    client.join()
    assert errors, "the request finished before the client gave up; the test proves nothing"
    # llama-server notices a closed connection of a non-streamed request only after a full
    # second in which no result of any task arrives; our own /slots polls are such results,
    # so poll more slowly than that.
    assert wait_for(lambda: not slots_busy(port), timeout=FREED_WITHIN, every=1.5)


def test_child_killed_mid_stream_ends_with_an_error_event(gateway: RunningGateway) -> None:
    body = {"model": MODEL_ID, "prompt": "Write an essay.", "stream": True, **LONG}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=60) as resp:
        events = data_lines(resp.iter_lines(), strict=True)
        next(events)
        victims = [c for c in gateway.children() if "--embeddings" not in c.cmdline()]
        os.kill(victims[0].pid, signal.SIGKILL)
        rest = list(events)
    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])
    assert error["error"]["code"] == "backend_error"
    assert not wait_until_gone(victims, timeout=5)
    # The model loads again on its next request.
    reply = httpx.post(
        f"{gateway.url}/v1/completions",
        json={"model": MODEL_ID, "prompt": "Hello", "max_tokens": 4},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
