"""The activity log (telemetry/activity.py, GET /api/v2/activity and its SSE follow): what each
finished request leaves there over both ways in (the ASGI way and the relay lane), with its
tokens and speed from a fake child's answer, and what it never keeps."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_child import FakeChild, Reply, Stream
from fakes import FakeFactory
from served import MakeSettings, Serve, served
from sse import DONE, chat_body, delta, event

from supervisor.app import create_app
from supervisor.surfaces.api_v2.activity import _follow
from supervisor.telemetry.activity import ActivityLog
from supervisor.telemetry.activity_text import (
    PARSE_BYTES,
    TEXT_CHARS,
    TextMeter,
    answer_text,
    completion_text,
    prompt_text,
)
from supervisor.telemetry.tokens import TokenMeter

MODEL = "tiny.Q4_1"
CHAT = "/v1/chat/completions"
MakeGGUF = Callable[..., Path]
TIMINGS = {"prompt_n": 7, "predicted_n": 10, "predicted_ms": 500.0}
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def model(make_gguf: MakeGGUF) -> None:
    make_gguf(f"models/{MODEL}.gguf")


def entries(client: httpx.Client, limit: int = 100) -> list[dict[str, Any]]:
    response = client.get("/api/v2/activity", params={"limit": limit})
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    data: list[dict[str, Any]] = listing["data"]
    return data


def record(log: ActivityLog, status: int = 200, meter: TokenMeter | None = None) -> None:
    log.record("POST", CHAT, MODEL, status, 0.25, None, False, meter)


# -- the ring --------------------------------------------------------------------------------
def test_the_ring_keeps_the_last_entries_with_increasing_ids() -> None:
    log = ActivityLog(3, wall=lambda: 1_700_000_000.5)
    for status in (200, 201, 202, 203, 204):
        record(log, status)

    assert [e.status for e in log.recent(10)] == [202, 203, 204]  # oldest first
    assert [e.id for e in log.recent(2)] == [4, 5]
    assert log.recent(0) == []
    entry = log.recent(1)[0].as_json(with_text=False)
    assert entry["time"] == "2023-11-14T22:13:20.250Z"  # the start: 0.25 s before the end
    assert entry["duration_ms"] == 250.0
    assert "prompt" not in entry and "completion" not in entry
    assert log.totals.requests == 5


def test_a_log_of_size_zero_keeps_no_entry_but_counts_them() -> None:
    log = ActivityLog(0)
    record(log)
    assert log.recent(10) == []
    assert log.totals.requests == 1  # the metrics history still sees it


def test_a_meters_counts_and_speed_make_the_entry() -> None:
    log = ActivityLog(10)
    meter = TokenMeter(lambda i, o: None, lambda n, ms: None)
    answer = {
        "usage": {"prompt_tokens": 3, "completion_tokens": 8},
        "timings": {"predicted_n": 8, "predicted_ms": 400},
    }
    meter.body(json.dumps(answer).encode())
    record(log, meter=meter)
    record(log)  # no answer to count

    counted, bare = (e.as_json(with_text=False) for e in log.recent(2))
    assert (counted["prompt_tokens"], counted["completion_tokens"]) == (3, 8)
    assert counted["tokens_per_second"] == 20.0
    assert (bare["prompt_tokens"], bare["tokens_per_second"]) == (None, None)
    assert (log.totals.prompt_tokens, log.totals.completion_tokens) == (3, 8)


@pytest.mark.anyio
async def test_a_slow_follower_misses_entries_rather_than_growing() -> None:
    log = ActivityLog(10)
    with log.follow() as queue:
        for _ in range(300):
            record(log)
        assert queue.qsize() == queue.maxsize < 300
    record(log)  # nobody follows now
    assert log.recent(1)[0].id == 301


@pytest.mark.anyio
async def test_the_follow_sends_recent_entries_then_new_ones() -> None:
    log = ActivityLog(10)
    record(log, 201)
    record(log, 202)
    stopping = asyncio.Event()
    events = _follow(log, 1, stopping)

    first = json.loads((await anext(events)).removeprefix(b"data: "))
    assert first["status"] == 202  # only the most recent one
    later = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    record(log, 203)
    assert json.loads((await later).removeprefix(b"data: "))["status"] == 203
    stopping.set()
    with pytest.raises(StopAsyncIteration):
        await anext(events)


@pytest.mark.anyio
async def test_a_follower_that_goes_leaves_no_task_behind() -> None:
    """The client goes while the follow waits for an entry: nothing is left waiting on the
    queue (the response's task is cancelled, as Starlette does when a client disconnects)."""
    log = ActivityLog(10)
    stopping = asyncio.Event()

    async def follow() -> None:
        async for _ in _follow(log, 0, stopping):
            pass  # pragma: no cover

    reader = asyncio.create_task(follow())
    for _ in range(5):
        await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    for _ in range(5):
        await asyncio.sleep(0)
    waiting = [task for task in asyncio.all_tasks() if "Queue.get" in repr(task.get_coro())]
    assert [task for task in waiting if not task.done()] == []


# -- over both ways in -----------------------------------------------------------------------
def test_a_chat_answer_is_logged_with_its_tokens_and_speed(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 10}
    answer = {"choices": [{"message": {"content": "Hello"}}], "usage": usage, "timings": TIMINGS}
    fake_child.answer("POST", CHAT, Reply(json=answer))

    assert client.post(CHAT, json=chat_body(MODEL)).status_code == 200

    [entry] = entries(client)
    assert entry["route"] == CHAT and entry["method"] == "POST"
    assert (entry["model"], entry["status"], entry["stream"]) == (MODEL, 200, False)
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (7, 10)
    assert entry["tokens_per_second"] == 20.0  # 10 tokens in 500 ms
    assert entry["ttft_ms"] is None
    assert entry["duration_ms"] > 0
    assert "prompt" not in entry and "completion" not in entry  # activity_text is off


def test_a_streamed_answer_is_logged_with_its_first_token(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    final = {"choices": [], "timings": {**TIMINGS, "predicted_n": 4, "predicted_ms": 100.0}}
    fake_child.answer("POST", CHAT, Stream([delta("Hel"), delta("lo"), event(final), DONE]))

    with client.stream("POST", CHAT, json=chat_body(MODEL, stream=True)) as response:
        assert response.status_code == 200
        response.read()

    [entry] = entries(client)
    assert entry["stream"] is True
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (7, 4)
    assert entry["tokens_per_second"] == 40.0
    assert entry["ttft_ms"] is not None and entry["ttft_ms"] <= entry["duration_ms"]


def test_answers_the_gateway_reshapes_are_logged_with_their_tokens(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    """/api/v2/chat parses its answer (``count_answer``); /api/chat streams are translated
    event by event (a meter's ``event``)."""
    answer = {"choices": [{"message": {"content": "hi"}}], "timings": TIMINGS}
    events = [delta("hi"), event({"choices": [], "timings": TIMINGS}), DONE]
    replies: Iterator[Reply | Stream] = iter([Reply(json=answer), Stream(events)])
    fake_child.answer("POST", CHAT, lambda request: next(replies))
    chat = {"messages": [{"role": "user", "content": "Hi"}]}

    assert client.post(f"/api/v2/chat/{MODEL}.gguf", json=chat).status_code == 200
    assert client.post("/api/chat", json={**chat, "model": MODEL, "stream": True}).is_success

    api, v2 = entries(client)
    assert (v2["route"], v2["completion_tokens"], v2["tokens_per_second"]) == (
        "/api/v2/chat/{model_id}", 10, 20.0,
    )  # fmt: skip
    assert (api["route"], api["prompt_tokens"], api["completion_tokens"]) == ("/api/chat", 7, 10)


def test_reads_are_not_logged_and_refusals_are(client: httpx.Client) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/api/v2/activity").status_code == 200
    assert client.head("/health").status_code in (200, 405)
    assert client.post(CHAT, json=chat_body("no-such-model")).status_code == 404
    assert client.post(CHAT, content=b"{not json").status_code == 400

    logged = entries(client)
    assert [(e["route"], e["status"]) for e in logged] == [(CHAT, 400), (CHAT, 404)]
    assert logged[0]["id"] > logged[1]["id"]  # newest first
    assert all(e["prompt_tokens"] is None for e in logged)


def test_requests_refused_for_their_key_are_logged(serve: Serve) -> None:
    with serve(admin_keys=["admin-key"]) as client:
        assert client.post(CHAT, json=chat_body(MODEL)).status_code == 401
        client.headers["Authorization"] = "Bearer admin-key"
        logged = entries(client)
    # Refused before routing: no route template yet, labelled as /metrics labels it.
    assert [(e["method"], e["route"], e["status"]) for e in logged] == [("POST", "unmatched", 401)]


def test_text_is_kept_only_when_configured(serve: Serve, fake_child: FakeChild) -> None:
    answer = {"choices": [{"message": {"content": "Hello there"}}], "timings": TIMINGS}
    streamed = [delta("Hel"), delta("lo!"), event({"choices": [], "timings": TIMINGS}), DONE]
    replies: Iterator[Reply | Stream] = iter([Reply(json=answer), Stream(streamed)])
    fake_child.answer("POST", CHAT, lambda request: next(replies))

    with serve(activity_text=True) as client:
        assert client.post(CHAT, json=chat_body(MODEL, "Hi there")).status_code == 200
        with client.stream("POST", CHAT, json=chat_body(MODEL, "Again", stream=True)) as response:
            response.read()
        streamed_entry, whole_entry = entries(client)

    assert (whole_entry["prompt"], whole_entry["completion"]) == ("user: Hi there", "Hello there")
    assert (streamed_entry["prompt"], streamed_entry["completion"]) == ("user: Again", "Hello!")


def test_the_http_follow_gets_each_new_entry(
    make_settings: MakeSettings, factory: FakeFactory, fake_child: FakeChild
) -> None:
    fake_child.answer(
        "POST",
        CHAT,
        Reply(json={"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}),
    )
    settings = make_settings()
    app = create_app(settings, factory=factory)
    with served(app, settings) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.post(CHAT, json=chat_body("nope")).status_code == 404
        with client.stream("GET", "/api/v2/activity/stream", params={"recent": 5}) as follow:
            assert follow.headers["content-type"].startswith("text/event-stream")
            assert follow.headers["cache-control"] == "no-cache"
            lines = follow.iter_lines()
            assert json.loads(next(lines).removeprefix("data: "))["status"] == 404
            poster = threading.Thread(
                target=lambda: httpx.post(f"{url}{CHAT}", json=chat_body(MODEL), timeout=10)
            )
            poster.start()
            entry = json.loads(next(line for line in lines if line).removeprefix("data: "))
            poster.join()
    assert (entry["status"], entry["model"], entry["completion_tokens"]) == (200, MODEL, 1)


# -- the text, pulled out of requests and answers --------------------------------------------
def test_prompt_text_of_each_surface() -> None:
    parts = [{"type": "text", "text": "Hi"}]
    chat = {
        "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": parts}]
    }
    assert prompt_text(json.dumps(chat).encode()) == "system: Be brief\nuser: Hi"
    anthropic = {"system": "Rules", "messages": [{"role": "user", "content": "Yo"}]}
    assert prompt_text(json.dumps(anthropic).encode()) == "system: Rules\nuser: Yo"
    assert prompt_text(b'{"prompt": "Once upon"}') == "Once upon"
    assert prompt_text(b'{"input": "x' + b"y" * 10_000 + b'"}') == "x" + "y" * 4095
    assert prompt_text(b"not json") is None
    assert prompt_text(b'{"model": "m"}') is None


def test_no_more_than_parse_bytes_are_parsed_for_a_text() -> None:
    """Text is read on the event loop when a request is recorded: a body or a whole answer
    over ``PARSE_BYTES`` is not parsed, and a stream is read from its first ones only."""
    long_chat = {"messages": [{"role": "user", "content": "z" * PARSE_BYTES}]}
    too_long = f"(not shown: over {PARSE_BYTES} bytes of JSON)"
    assert prompt_text(json.dumps(long_chat).encode()) == too_long

    def count(prompt: int, completion: int) -> None:
        pass

    whole = TextMeter(count)
    whole.body(json.dumps({"choices": [{"message": {"content": "w" * PARSE_BYTES}}]}).encode())
    assert completion_text(whole) == too_long
    stream = TextMeter(count)
    padding = "p" * 1000  # a field of no text: the events are large, their text small
    for _ in range(PARSE_BYTES // 1000 + 10):
        stream.chunk(event({"pad": padding, "choices": [{"delta": {"content": "a"}}]}))
    stream.chunk(delta("END"))
    text = completion_text(stream)
    assert text is not None and set(text) == {"a"} and len(text) < PARSE_BYTES // 1000
    short = TextMeter(count)
    short.chunk(delta("x" * (TEXT_CHARS + 10)))
    assert completion_text(short) == "x" * TEXT_CHARS


def test_answer_text_of_each_surface() -> None:
    assert answer_text({"choices": [{"message": {"content": "a"}}]}) == "a"
    assert answer_text({"choices": [{"delta": {"content": "b"}}]}) == "b"
    assert answer_text({"choices": [{"text": "c"}]}) == "c"
    assert answer_text({"content": "d", "stop": False}) == "d"  # llama.cpp's /completion
    assert answer_text({"content": [{"type": "text", "text": "e"}]}) == "e"  # Anthropic
    assert answer_text({"type": "content_block_delta", "delta": {"text": "f"}}) == "f"
    assert answer_text({"type": "response.output_text.delta", "delta": "g"}) == "g"
    responses = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "h"}]}]}
    assert answer_text(responses) == "h"
    assert answer_text({"data": [{"embedding": [0.1]}]}) == ""


def test_a_text_meter_keeps_what_it_saw_and_a_plain_one_nothing() -> None:
    def count(prompt: int, completion: int) -> None:
        pass

    text = TextMeter(count)
    text.chunk(delta("Hi") + delta(" you"))
    text.close()
    plain = TokenMeter(count)
    plain.chunk(delta("Hi"))
    assert text.seen and not hasattr(plain, "seen")
