"""GET /metrics with fake children: request counts, latency and time-to-first-token, tokens,
queue depth and model states read at scrape time, and the lifecycle's counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from fake_child import Answer, FakeChild, Reply, Request, Stream
from fakes import FakeFactory, FakeProcess, Script, make_entry
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from supervisor.app import create_app
from supervisor.children.argv import ChildCommand
from supervisor.children.child import Backend
from supervisor.children.spec import LoadParams, Role
from supervisor.config import Settings
from supervisor.lifecycle.model import ManagedModel, ModelHost
from supervisor.lifecycle.state import ModelState
from supervisor.models.memory import GpuInfo, MemoryProbe
from supervisor.placement.plan import MemoryFit, Placement
from supervisor.telemetry.prometheus import Telemetry
from supervisor.telemetry.tokens import TokenMeter, answer_tokens, scan_tokens

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]
Sample = tuple[str, dict[str, str], float]


def scrape(client: TestClient) -> list[Sample]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> list[Sample]:
    families = text_string_to_metric_families(text)
    return [(s.name, s.labels, s.value) for f in families for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, got, v in samples if n == name and labels.items() <= got.items())


def event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        models_dirs=[tmp_path / "models"],
        llama_server=Path(sys.executable),
        data_dir=tmp_path / "data",
        **overrides,
    )


@pytest.fixture
def factory(fake_child: FakeChild) -> FakeFactory:
    return FakeFactory(base_url=fake_child.url)


@pytest.fixture
def client(tmp_path: Path, make_gguf: MakeGGUF, factory: FakeFactory) -> Iterator[TestClient]:
    make_gguf(f"models/{MODEL}.gguf")
    make_gguf("models/v2/tiny-next.gguf")
    make_gguf("models/other.gguf")
    app = create_app(settings(tmp_path, max_loaded_models=1), factory=factory)
    with TestClient(app) as test_client:
        yield test_client


def test_requests_are_counted_by_route_template_model_and_status(
    client: TestClient, fake_child: FakeChild
) -> None:
    reply = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    fake_child.answer("POST", "/v1/chat/completions", Reply(json=reply))
    assert client.post("/v1/chat/completions", json={"model": f"{MODEL}.gguf"}).status_code == 200
    assert client.get(f"/v1/models/{MODEL}.gguf").status_code == 200
    assert client.get("/v1/models/nope").status_code == 404
    samples = scrape(client)
    requests = "llama_supervisor_requests_total"
    chat = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value(samples, requests, model=MODEL, **chat) == 1
    info = {"route": "/v1/models/{model_id}", "method": "GET"}
    assert value(samples, requests, model=MODEL, status="200", **info) == 1
    assert value(samples, requests, model="", status="404", **info) == 1  # no such model
    latency = "llama_supervisor_request_duration_seconds_count"
    assert value(samples, latency, route="/v1/chat/completions", model=MODEL) == 1
    assert value(samples, "llama_supervisor_tokens_in_total", model=MODEL) == 7
    assert value(samples, "llama_supervisor_tokens_out_total", model=MODEL) == 3
    ttft = "llama_supervisor_time_to_first_token_seconds_count"
    assert value(samples, ttft) == 0  # nothing streamed


def test_an_unrouted_404_is_labelled_unmatched_never_by_its_path(client: TestClient) -> None:
    assert client.get("/no/such/place-1234").status_code == 404
    assert client.request("BREW", "/coffee").status_code in (404, 405)
    samples = scrape(client)
    unmatched = [s for s in samples if s[1].get("route") == "unmatched"]
    assert value(unmatched, "llama_supervisor_requests_total", method="GET", status="404") == 1
    assert value(unmatched, "llama_supervisor_requests_total", method="other") == 1
    assert not any("place-1234" in str(labels) for _, labels, _ in samples)


def test_a_stream_is_timed_to_its_first_token_and_its_tokens_counted_once(
    client: TestClient, fake_child: FakeChild
) -> None:
    timings = {"prompt_n": 5, "predicted_n": 1}
    final = {"choices": [], "timings": {"prompt_n": 5, "predicted_n": 2}}
    last = event(final)
    cut = last.index(b"timings") + 3
    # llama-server may repeat cumulative timings in every event; the final event arrives
    # in two pieces, split inside its "timings" key.
    pieces = [
        event({"choices": [], "timings": timings}),
        last[:cut],
        last[cut:],
        b"data: [DONE]\n\n",
    ]
    fake_child.answer("POST", "/v1/chat/completions", Stream(pieces))
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": MODEL, "stream": True}
    ) as response:
        assert response.read() == b"".join(pieces)
    samples = scrape(client)
    ttft = "llama_supervisor_time_to_first_token_seconds_count"
    assert value(samples, ttft, route="/v1/chat/completions", model=MODEL) == 1
    assert value(samples, "llama_supervisor_tokens_in_total", model=MODEL) == 5
    assert value(samples, "llama_supervisor_tokens_out_total", model=MODEL) == 2


def test_tokens_of_reshaped_answers_are_counted(client: TestClient, fake_child: FakeChild) -> None:
    """/api/v2 chat parses the answer itself; /api streams are translated event by event."""
    usage = {"prompt_tokens": 4, "completion_tokens": 6}
    completion = {"choices": [{"message": {"content": "hi"}}], "usage": usage}
    events = [
        event({"choices": [{"delta": {"content": "hi"}}]}),
        event({"choices": [], "usage": usage}),
        b"data: [DONE]\n\n",
    ]
    answers: Iterator[Answer] = iter([Reply(json=completion), Stream(events)])
    fake_child.answer("POST", "/v1/chat/completions", lambda request: next(answers))
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    assert client.post(f"/api/v2/chat/{MODEL}.gguf", json=chat).status_code == 200
    streamed = client.post("/api/chat", json={**chat, "model": MODEL, "stream": True})
    assert streamed.status_code == 200
    samples = scrape(client)
    assert value(samples, "llama_supervisor_tokens_in_total", model=MODEL) == 8
    assert value(samples, "llama_supervisor_tokens_out_total", model=MODEL) == 12
    requests = "llama_supervisor_requests_total"
    assert value(samples, requests, route="/api/chat", model=MODEL, status="200") == 1


def test_lifecycle_counters_and_state_gauges(client: TestClient) -> None:
    assert client.post(f"/api/v2/models/{MODEL}/load").status_code == 200
    samples = scrape(client)
    state = "llama_supervisor_model_state"
    assert value(samples, state, model=MODEL, role="chat", state="ready") == 1
    assert value(samples, state, model=MODEL, role="chat") == 1  # one state at a time
    assert value(samples, "llama_supervisor_models_loaded") == 1
    loads = "llama_supervisor_model_loads_total"
    assert value(samples, loads, model=MODEL, role="chat", outcome="ok") == 1
    assert value(samples, "llama_supervisor_model_load_duration_seconds_count", model=MODEL) == 1

    swap = client.post(f"/api/v2/models/{MODEL}/swap", json={"path": "v2/tiny-next.gguf"})
    assert swap.status_code == 200, swap.text
    assert client.post("/api/models/other/load").status_code == 200  # evicts tiny (max 1)
    assert client.post("/api/models/other/unload").status_code == 200
    samples = scrape(client)
    swaps = "llama_supervisor_model_swaps_total"
    assert value(samples, swaps, model=MODEL, role="chat", mode="blue-green") == 1
    assert value(samples, "llama_supervisor_model_evictions_total", model=MODEL) == 1
    unloads = "llama_supervisor_model_unloads_total"
    assert value(samples, unloads, model=MODEL) == 1
    assert value(samples, unloads, model="other") == 1
    assert value(samples, loads, outcome="ok") == 3  # tiny, tiny's new version, other
    assert value(samples, state, model=MODEL, state="unloaded") == 1
    assert value(samples, "llama_supervisor_models_loaded") == 0


def test_a_failed_load_is_counted(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf(f"models/{MODEL}.gguf")
    factory = FakeFactory([Script(fail_with=["error loading model"])])
    with TestClient(create_app(settings(tmp_path), factory=factory)) as client:
        assert client.post("/v1/completions", json={"model": MODEL}).status_code == 503
        samples = scrape(client)
    loads = "llama_supervisor_model_loads_total"
    assert value(samples, loads, model=MODEL, outcome="failed") == 1
    assert value(samples, "llama_supervisor_model_state", model=MODEL, state="failed") == 1
    requests = "llama_supervisor_requests_total"
    assert value(samples, requests, route="/v1/completions", model=MODEL, status="503") == 1


@pytest.mark.anyio
async def test_queue_depth_and_in_flight_are_read_at_scrape_time(
    tmp_path: Path, make_gguf: MakeGGUF, fake_child: FakeChild
) -> None:
    make_gguf(f"models/{MODEL}.gguf")
    app = create_app(settings(tmp_path, parallel=1), factory=FakeFactory(base_url=fake_child.url))
    answered = threading.Event()  # the fake child answers from its own thread

    def slow_answer(request: Request) -> Reply:
        answered.wait(timeout=30)
        return Reply(json={"choices": []})

    fake_child.answer("POST", "/v1/completions", slow_answer)
    async with running(app) as http:
        body = {"model": MODEL, "prompt": "x"}
        first = asyncio.create_task(http.post("/v1/completions", json=body))
        second = asyncio.create_task(http.post("/v1/completions", json=body))
        samples: list[Sample] = []
        for _ in range(200):  # until one holds the slot and the other waits for it
            await asyncio.sleep(0.01)
            samples = parse((await http.get("/metrics")).text)
            if value(samples, "llama_supervisor_queue_depth", model=MODEL) == 1:
                break
        assert value(samples, "llama_supervisor_queue_depth", model=MODEL, role="chat") == 1
        assert value(samples, "llama_supervisor_in_flight_requests", model=MODEL) == 1
        answered.set()
        assert [r.status_code for r in await asyncio.gather(first, second)] == [200, 200]
        samples = parse((await http.get("/metrics")).text)
        assert value(samples, "llama_supervisor_queue_depth", model=MODEL) == 0
        assert value(samples, "llama_supervisor_in_flight_requests", model=MODEL) == 0


CHILD_METRICS = (
    "llama_supervisor_child_threads",
    "llama_supervisor_child_cpus",
    "llama_supervisor_child_placement_info",
)


def test_each_running_childs_placement_is_read_at_scrape_time(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    make_gguf(f"models/{MODEL}.gguf")
    app = create_app(
        settings(tmp_path, cpu_cores=1), factory=FakeFactory(), probe=MemoryProbe(gpu_reader=list)
    )
    with TestClient(app) as client:
        assert not [s for s in scrape(client) if s[0] in CHILD_METRICS]
        assert client.post(f"/api/v2/models/{MODEL}/load").status_code == 200
        cores = client.get("/api/v2/metrics").json()["cpu"]["for_children"]
        pinned = cores["cpus"] if cores["pinnable"] else []  # one CPU (cpu_cores=1), or none
        samples = scrape(client)
        labels = {"model": MODEL, "role": "chat"}
        assert value(samples, "llama_supervisor_child_threads", **labels) == 1
        assert value(samples, "llama_supervisor_child_cpus", **labels) == len(pinned)
        info = [labels for n, labels, v in samples if n == CHILD_METRICS[2] and v == 1]
        cpus = ",".join(str(cpu) for cpu in pinned)
        assert info == [{"model": MODEL, "role": "chat", "cpus": cpus, "gpus": "", "memory": "RAM"}]
        assert client.post(f"/api/v2/models/{MODEL}/unload").status_code == 200
        assert not [s for s in scrape(client) if s[0] in CHILD_METRICS]  # no stale child


@pytest.mark.anyio
async def test_a_childs_gpus_and_cpu_list_are_labels_of_its_placement_info() -> None:
    gpus = tuple(GpuInfo(i, "NVIDIA H200", 0, 0, 0, uuid=f"GPU-{i}") for i in (0, 1))
    placement = Placement(3, (0, 1, 3), memory=MemoryFit(1, 2, "VRAM", gpus, (7, 5)))
    entry = make_entry(pooling_type=1)
    process = FakeProcess("tiny#embedding", ChildCommand([]), "", Script())
    await process.start()
    model = ManagedModel(entry, Role.EMBEDDING, cast(ModelHost, SimpleNamespace()))
    model.state = ModelState.READY
    model.backend = Backend(entry, Role.EMBEDDING, process, 1, 1, LoadParams(), 0.1,
                            placement=placement)  # fmt: skip
    telemetry = Telemetry()
    telemetry.watch(lambda: [model])
    samples = parse(telemetry.exposition().decode())
    labels = {"model": entry.id, "role": "embedding"}
    assert value(samples, "llama_supervisor_child_threads", **labels) == 3
    assert value(samples, "llama_supervisor_child_cpus", **labels) == 3
    info = labels | {"cpus": "0-1,3", "gpus": "0,1", "memory": "VRAM"}
    assert value(samples, "llama_supervisor_child_placement_info", **info) == 1
    process.die(1)  # a dead child shows no placement, even before its model notices
    assert not [s for s in parse(telemetry.exposition().decode()) if s[0] in CHILD_METRICS]


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, and an HTTP client that calls it in this event loop."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


# -- finding token counts in raw answers ------------------------------------------------------
def test_token_counts_are_read_from_usage_else_timings() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 4}
    timings = {"cache_n": 2, "prompt_n": 7, "predicted_n": 4, "predicted_ms": 10.0}
    assert answer_tokens({"usage": usage, "timings": timings}) == (9, 4)
    assert answer_tokens({"usage": None, "timings": timings}) == (9, 4)  # cached ones too
    assert answer_tokens({"usage": {"prompt_tokens": 3, "total_tokens": 3}}) == (3, 0)
    assert answer_tokens({"choices": []}) is None
    assert answer_tokens([1, 2]) is None


def test_raw_answers_are_scanned_without_parsing_them_whole() -> None:
    # llama-server's native /completion: "timings_per_token" is not "timings".
    native = b'{"content":"x","generation_settings":{"timings_per_token":false},'
    native += b'"timings":{"cache_n":0,"prompt_n":1,"predicted_n":3}}'
    assert scan_tokens(native) == (1, 3)
    embeddings = b'{"data":[' + b"0.1," * 100_000 + b'0.1],"usage":{"prompt_tokens":3}}'
    assert scan_tokens(embeddings) == (3, 0)
    quoted = json.dumps({"content": 'say "usage": {"prompt_tokens": 99}'}).encode()
    assert scan_tokens(quoted) is None  # a key inside a string is escaped
    assert scan_tokens(b'{"object":"usage","x":1}') is None
    assert scan_tokens(b'{"usage": {"prompt_tokens": 2, "completion_tokens": 5}}') == (2, 5)


def test_a_meter_counts_one_answer_once() -> None:
    counted: list[tuple[int, int]] = []
    meter = TokenMeter(lambda tokens_in, tokens_out: counted.append((tokens_in, tokens_out)))
    meter.body(b'{"usage":{"prompt_tokens":1,"completion_tokens":2}}')
    meter.body(b'{"error":"nope"}')
    assert counted == [(1, 2)]
    final = event({"timings": {"prompt_n": 4, "predicted_n": 8}})
    cut = final.index(b"timings") + 3
    for piece in (event({"timings": {"prompt_n": 4, "predicted_n": 1}}), final[:cut], final[cut:]):
        meter.chunk(piece)
    assert counted == [(1, 2)]  # a stream counts when it ends...
    meter.close()
    meter.close()
    assert counted == [(1, 2), (4, 8)]  # ...once, with the latest (cumulative) figures
    cut_off = TokenMeter(lambda tokens_in, tokens_out: counted.append((tokens_in, tokens_out)))
    cut_off.chunk(event({"choices": []}))
    cut_off.close()  # a stream that ended before its final event has nothing to count
    assert counted == [(1, 2), (4, 8)]


# -- the Responses API's and Anthropic's usage ------------------------------------------------
def typed_event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


# Anthropic's stream: input (less the cache read, counted apart) in message_start, output so
# far in message_delta.
MESSAGE_START = typed_event(
    "message_start",
    {"type": "message_start", "message": {"type": "message", "content": [], "usage": {
        "cache_read_input_tokens": 3, "input_tokens": 5, "output_tokens": 0}}},
)  # fmt: skip
MESSAGE_DELTA = typed_event(
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
)
MESSAGE_STOP = typed_event("message_stop", {"type": "message_stop"})


def test_token_counts_are_read_from_anthropic_and_responses_usage() -> None:
    anthropic = {"cache_read_input_tokens": 2, "input_tokens": 4, "output_tokens": 9}
    assert answer_tokens({"type": "message", "usage": anthropic}) == (6, 9)
    assert answer_tokens({"usage": {"input_tokens": 4, "output_tokens": 9}}) == (4, 9)
    assert answer_tokens({"usage": {"output_tokens": 7}}) == (0, 7)  # message_delta's
    # The Responses API's input_tokens already include the cached ones.
    responses = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17,
                 "input_tokens_details": {"cached_tokens": 4}}  # fmt: skip
    assert answer_tokens({"object": "response", "usage": responses}) == (12, 5)
    assert answer_tokens({"usage": {"input_tokens": 40}}) is None  # a count, no answer
    assert answer_tokens({"usage": {"input_tokens": "4", "output_tokens": 9}}) is None
    assert answer_tokens({"usage": {"input_tokens": 4, "output_tokens": 9,
                                    "cache_read_input_tokens": None}}) is None  # fmt: skip


def test_anthropic_and_responses_events_are_scanned() -> None:
    assert scan_tokens(MESSAGE_START) == (8, 0)
    assert scan_tokens(MESSAGE_DELTA) == (0, 7)
    assert scan_tokens(MESSAGE_STOP) is None
    usage = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
    completed = {"type": "response.completed", "response": {"status": "completed", "usage": usage}}
    assert scan_tokens(typed_event("response.completed", completed)) == (12, 5)


def test_a_meter_keeps_the_largest_of_each_count_of_a_stream() -> None:
    counted: list[tuple[int, int]] = []
    meter = TokenMeter(lambda tokens_in, tokens_out: counted.append((tokens_in, tokens_out)))
    delta = typed_event("content_block_delta", {"type": "content_block_delta"})
    for piece in (MESSAGE_START, delta, MESSAGE_DELTA, MESSAGE_STOP):
        meter.chunk(piece)
    meter.close()
    assert counted == [(8, 7)]  # input from the first event, output from the last
    created = {"type": "response.created", "response": {"status": "in_progress", "output": []}}
    done = {"type": "response.completed",
            "response": {"usage": {"input_tokens": 12, "output_tokens": 5}}}  # fmt: skip
    for payload in (created, done):
        meter.chunk(typed_event(str(payload["type"]), payload))
    meter.close()
    assert counted == [(8, 7), (12, 5)]


def test_a_meter_counts_an_anthropic_stream_read_in_one_piece() -> None:
    """A short answer's events can reach the gateway in one read: its input tokens, in
    message_start, count as much as when they come apart."""
    counted: list[tuple[int, int]] = []
    meter = TokenMeter(lambda tokens_in, tokens_out: counted.append((tokens_in, tokens_out)))
    meter.chunk(MESSAGE_START + MESSAGE_DELTA + MESSAGE_STOP)
    meter.close()
    assert counted == [(8, 7)]
