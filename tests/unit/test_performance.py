"""The performance figures of GET /api/v2/models/{id} (and ``models status``): tokens generated
and their average speed, fed by the token meter every relayed answer passes, so /v1 traffic
counts, streamed or not, over either way a request comes in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_child import FakeChild, Reply, Stream
from served import Serve
from sse import DONE, delta, event

from supervisor.telemetry.performance import Performance, PerformanceTable
from supervisor.telemetry.tokens import TokenMeter

MODEL = "tiny.Q4_1"
MakeGGUF = Callable[..., Path]
TIMINGS = {"prompt_n": 4, "predicted_n": 10, "predicted_ms": 250.0}
USAGE = {"prompt_tokens": 4, "completion_tokens": 10}


def performance(client: Any) -> dict[str, Any]:
    reply = client.get(f"/api/v2/models/{MODEL}.gguf")
    assert reply.status_code == 200
    figures = reply.json()["performance"]
    return {key: figures[key] for key in ("tokens_processed", "average_speed")}


@pytest.fixture(autouse=True)
def model(make_gguf: MakeGGUF) -> None:
    make_gguf(f"models/{MODEL}.gguf")


def test_a_v1_answer_moves_the_performance_figures(serve: Serve, fake_child: FakeChild) -> None:
    answer = {"choices": [{"message": {"content": "hi"}}], "usage": USAGE, "timings": TIMINGS}
    fake_child.answer("POST", "/v1/chat/completions", Reply(json=answer))
    with serve() as client:
        assert performance(client) == {"tokens_processed": 0, "average_speed": 0.0}
        chat = client.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
        assert chat.status_code == 200
        assert performance(client) == {"tokens_processed": 10, "average_speed": 40.0}


def test_a_v1_stream_moves_the_performance_figures_once(
    serve: Serve, fake_child: FakeChild
) -> None:
    # Cumulative timings in more than one event: the answer counts once, with its last.
    early = {"prompt_n": 4, "predicted_n": 1, "predicted_ms": 20.0}
    pieces = [
        event({"choices": [{"delta": {"content": "h"}}], "timings": early}),
        delta("i"),
        event({"choices": [], "usage": USAGE, "timings": TIMINGS}),
        DONE,
    ]
    fake_child.answer("POST", "/v1/chat/completions", Stream(pieces))
    with serve() as client:
        body = {"model": MODEL, "messages": [], "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
            assert streamed.read() == b"".join(pieces)
        assert performance(client) == {"tokens_processed": 10, "average_speed": 40.0}


def test_an_answer_without_timings_leaves_the_figures_alone(
    serve: Serve, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", "/v1/chat/completions", Reply(json={"usage": USAGE}))
    with serve() as client:
        assert client.post("/v1/chat/completions", json={"model": MODEL}).status_code == 200
        assert performance(client) == {"tokens_processed": 0, "average_speed": 0.0}


def test_the_table_adds_up_each_models_tokens_and_time() -> None:
    table = PerformanceTable()
    table.add("a", 10, 0.5)
    table.add("a", 30, 1.5)
    table.add("b", 1, 0.0)
    assert table.of("a") == Performance(40, 2.0) and table.of("a").average_speed == 20.0
    assert table.of("b").average_speed == 0.0  # no time: no speed
    assert table.of("c") == Performance()


def test_the_api_surfaces_count_each_answer_once(serve: Serve, fake_child: FakeChild) -> None:
    """/api/v2's whole chat (parsed, not metered) and /api's stream (parsed events)."""
    answer = {"choices": [{"message": {"content": "hi"}}], "usage": USAGE, "timings": TIMINGS}
    fake_child.answer("POST", "/v1/chat/completions", Reply(json=answer))
    with serve() as client:
        chat = {"messages": [{"role": "user", "content": "Hi"}]}
        assert client.post(f"/api/v2/chat/{MODEL}", json=chat).status_code == 200
        assert performance(client) == {"tokens_processed": 10, "average_speed": 40.0}
        pieces = [delta("h"), event({"choices": [], "timings": TIMINGS}), DONE]
        fake_child.answer("POST", "/v1/chat/completions", Stream(pieces))
        streamed = client.post("/api/chat", json={"model": MODEL, **chat, "stream": True})
        assert streamed.status_code == 200 and '"done":true' in streamed.text
        assert performance(client) == {"tokens_processed": 20, "average_speed": 40.0}


def test_a_meter_times_an_answer_once_and_only_with_timings() -> None:
    timed: list[tuple[int, float]] = []
    body = event({"usage": USAGE, "timings": TIMINGS}).removeprefix(b"data: ")
    TokenMeter(lambda i, o: None, lambda n, ms: timed.append((n, ms))).body(body)
    assert timed == [(10, 250.0)]
    stream = TokenMeter(lambda i, o: None, lambda n, ms: timed.append((n, ms)))
    stream.chunk(event({"timings": {**TIMINGS, "predicted_n": 3, "predicted_ms": 50}}))
    stream.chunk(event({"timings": TIMINGS}))
    assert timed == [(10, 250.0)]  # nothing before the stream ends
    stream.close()
    assert timed == [(10, 250.0), (10, 250.0)]
    bare = TokenMeter(lambda i, o: None, lambda n, ms: timed.append((n, ms)))
    bare.body(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')
    bare.chunk(event({"usage": USAGE}))
    bare.close()
    assert len(timed) == 2
