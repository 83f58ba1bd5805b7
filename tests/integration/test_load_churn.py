"""Issue 7, item 3: load under churn. 64 concurrent clients on every surface (OpenAI /v1 with
httpx and with the official client, Anthropic Messages, OpenAI Responses, rerank, llama.cpp's
native routes, /api/v2 and /api with sessions), streamed and not, across two models, while one
churn task per model swaps, unloads, loads and reloads it underneath. Every request must
succeed or be deliberately refused (429/503 with Retry-After, in its surface's error format);
none may hang or be cut; afterwards every session holds exactly the turns whose answers were
acknowledged, through the API and in SQLite.

The clients go on until each model has been through one whole churn cycle and at least
``LOAD_CHURN_REQUESTS`` (default 96) requests were sent, never beyond four times that. The soak
variant raises the count, and the churn cycles on meanwhile:
``LOAD_CHURN_REQUESTS=2000 .venv/bin/pytest -s tests/integration/test_load_churn.py``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from harness import MODEL_ID, RunningGateway, wait_for
from sse import chat_body, sse_data, sse_events

pytestmark = pytest.mark.integration

CLIENTS = 64
REQUESTS = int(os.environ.get("LOAD_CHURN_REQUESTS", "96"))
MODELS = ("alpha", "beta")
REQUEST_TIMEOUT_S = 120.0  # a request still unanswered after this is lost (a hang)
TOKENS = 4
MAX_BACK_OFF_S = 1.0
CHURN_PAUSE_S = 0.5
CONFIG = """\
threads = 1
parallel = 4
ctx_size = 2048
queue_max = 28
queue_timeout_s = 30
drain_timeout_s = 30
"""

Check = Callable[[int, str], str | None]  # (status, body) of a 200 -> None if complete


@dataclass
class Tally:
    """What became of every request: ``ok``, ``refused`` (429/503 with Retry-After in the
    surface's error format), ``failed`` (any other answer, an error event included) or
    ``lost`` (a hang, a cut stream, a dropped connection)."""

    sent: int = 0
    ok: int = 0
    refused: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)  # each request's, for the log only
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def line(self) -> str:
        slowest = max(self.seconds, default=0.0)
        median = sorted(self.seconds)[len(self.seconds) // 2] if self.seconds else 0.0
        return (
            f"sent={self.sent} succeeded={self.ok} refused={self.refused} "
            f"failed={len(self.failed)} lost={len(self.lost)} "
            f"(request seconds: median {median:.1f}, slowest {slowest:.1f})"
        )


@dataclass
class Session:
    """One /api client's conversation: the turns the gateway acknowledged, in order."""

    name: str
    id: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)


# -- answers, per surface -------------------------------------------------------------------
def sse_payloads(raw: str) -> list[str]:
    return sse_data(raw.replace("\r\n", "\n"), strict=False)


def openai_stream_complete(raw: str) -> str | None:
    """OpenAI-shaped SSE (chat, completions, /api/v2 chat): chunks, then ``[DONE]``."""
    payloads = sse_payloads(raw)
    if not payloads or payloads[-1] != "[DONE]":
        return f"stream cut (no [DONE]): {raw[-200:]!r}"
    for payload in payloads[:-1]:
        chunk = json.loads(payload)
        if "error" in chunk:
            return f"error event: {payload[:200]}"
    return None


def native_stream_complete(raw: str) -> str | None:
    """llama.cpp's /completion stream: content events, the last with ``stop``, ``[DONE]``."""
    payloads = sse_payloads(raw)
    if not payloads or payloads[-1] != "[DONE]":
        return f"stream cut (no [DONE]): {raw[-200:]!r}"
    events = [json.loads(p) for p in payloads[:-1]]
    if any("error" in e for e in events):
        return f"error event: {raw[-200:]!r}"
    if not events or events[-1].get("stop") is not True:
        return f"no final stop event: {raw[-200:]!r}"
    return None


def typed_stream_complete(last: str) -> Check:
    """A stream of typed events (Anthropic Messages, OpenAI Responses): ``last`` ends it,
    and no ``event: error`` came before."""

    def check(_: int, raw: str) -> str | None:
        events = sse_events(raw.replace("\r\n", "\n"))
        kinds = [e.split("\n", 1)[0].removeprefix("event: ") for e in events]
        if "error" in kinds:
            return f"error event: {raw[-200:]!r}"
        if not kinds or kinds[-1] != last:
            return f"stream cut (no {last}): {raw[-200:]!r}"
        return None

    return check


def api_stream_complete(_: int, raw: str) -> str | None:
    """The /api surface's stream: ``{"token", "done": false}`` events, then ``{"done": true,
    "session_id", "full_text"}``, or ``{"error", "done": true}`` when it fails."""
    payloads = sse_payloads(raw)
    final = json.loads(payloads[-1]) if payloads else {}
    if "error" in final:
        return f"error event: {payloads[-1][:200]}"
    if final.get("done") is not True or not {"session_id", "full_text"} <= set(final):
        return f"stream cut (no final event): {raw[-200:]!r}"
    return None


def json_complete(key: str) -> Check:
    def check(_: int, raw: str) -> str | None:
        answer = json.loads(raw)
        return None if isinstance(answer, dict) and key in answer else f"odd answer: {raw[:200]}"

    return check


def refusal(status: int, headers: httpx.Headers, raw: str, detail: bool) -> bool:
    """A deliberate refusal: 429 or 503, Retry-After, the surface's error format."""
    if status not in (429, 503) or not headers.get("retry-after"):
        return False
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    if detail:
        return set(body) == {"detail"} and isinstance(body["detail"], str)
    return isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str)


async def back_off(headers: httpx.Headers) -> None:
    """What a polite client does with Retry-After (capped, to keep the test short)."""
    await asyncio.sleep(min(float(headers["retry-after"]), MAX_BACK_OFF_S))


# -- the clients ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    kind: str
    path: str
    body: dict[str, Any]
    stream: bool
    check: Check
    detail: bool = False  # errors as {"detail": ...} (the /api surface)


def calls(model: str) -> list[Call]:
    chat = [{"role": "user", "content": "Name a colour."}]
    v1 = {"model": model, "max_tokens": TOKENS}
    return [
        Call("v1 chat", "/v1/chat/completions", v1 | {"messages": chat}, False,
             json_complete("choices")),
        Call("v1 chat stream", "/v1/chat/completions", v1 | {"messages": chat, "stream": True},
             True, lambda _, raw: openai_stream_complete(raw)),
        Call("v1 completions", "/v1/completions", v1 | {"prompt": "Colours:"}, False,
             json_complete("choices")),
        Call("v1 completions stream", "/v1/completions",
             v1 | {"prompt": "Colours:", "stream": True}, True,
             lambda _, raw: openai_stream_complete(raw)),
        Call("native completion", "/completion",
             {"model": model, "prompt": "Colours:", "n_predict": TOKENS}, False,
             json_complete("content")),
        Call("native completion stream", "/completion",
             {"model": model, "prompt": "Colours:", "n_predict": TOKENS, "stream": True}, True,
             lambda _, raw: native_stream_complete(raw)),
        Call("native chat", "/chat/completions", v1 | {"messages": chat}, False,
             json_complete("choices")),
        Call("native chat stream", "/chat/completions", v1 | {"messages": chat, "stream": True},
             True, lambda _, raw: openai_stream_complete(raw)),
        Call("anthropic message", "/v1/messages", v1 | {"messages": chat}, False,
             json_complete("content")),
        Call("anthropic message stream", "/v1/messages",
             v1 | {"messages": chat, "stream": True}, True, typed_stream_complete("message_stop")),
        Call("responses", "/v1/responses",
             {"model": model, "input": "Name a colour.", "max_output_tokens": TOKENS}, False,
             json_complete("output")),
        Call("responses stream", "/v1/responses",
             {"model": model, "input": "Name a colour.", "max_output_tokens": TOKENS,
              "stream": True}, True, typed_stream_complete("response.completed")),
        Call("rerank", "/v1/rerank",
             {"model": model, "query": "colour", "documents": ["red", "a chair"]}, False,
             json_complete("results")),
        Call("v2 chat", f"/api/v2/chat/{model}", {"messages": chat, "n_predict": TOKENS}, False,
             json_complete("choices")),
        Call("v2 chat stream", f"/api/v2/chat/{model}/stream",
             {"messages": chat, "n_predict": TOKENS}, True,
             lambda _, raw: openai_stream_complete(raw)),
    ]  # fmt: skip


class Load:
    """The shared budget of requests and what became of them. The clients go on until at
    least ``minimum`` requests are sent and every churn task has been through its whole cycle
    (so every step ran under load), never beyond ``cap``."""

    def __init__(self, url: str, minimum: int, cap: int) -> None:
        self.url = url
        self.tally = Tally()
        self.sessions: list[Session] = []
        self.cycles_done = 0
        self._minimum = minimum
        self._cap = cap

    def take(self) -> bool:
        sent = self.tally.sent
        if sent >= self._cap or (sent >= self._minimum and self.cycles_done >= len(MODELS)):
            return False
        self.tally.sent += 1
        return True

    def outcome(self, kind: str, what: str, detail: str = "") -> None:
        self.tally.by_kind[f"{kind}: {what}"] += 1
        if what == "ok":
            self.tally.ok += 1
        elif what == "refused":
            self.tally.refused += 1
            self.tally.refusals[detail] += 1
        elif what == "failed":
            self.tally.failed.append(f"{kind}: {detail}")
        else:
            self.tally.lost.append(f"{kind}: {detail}")

    async def http_call(self, client: httpx.AsyncClient, call: Call) -> str | None:
        """Send ``call`` and record its outcome; the body of a complete 200, else None."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                async with client.stream("POST", self.url + call.path, json=call.body) as reply:
                    raw = (await reply.aread()).decode()
        except TimeoutError:
            self.outcome(call.kind, "lost", f"no answer in {REQUEST_TIMEOUT_S:g}s")
            return None
        except httpx.HTTPError as exc:
            self.outcome(call.kind, "lost", f"transport error {exc!r}")
            return None
        if reply.status_code == 200:
            problem = call.check(reply.status_code, raw)
            if problem is None:
                self.outcome(call.kind, "ok")
                return raw
            what = "failed" if problem.startswith("error event") else "lost"
            self.outcome(call.kind, what, problem)
        elif refusal(reply.status_code, reply.headers, raw, call.detail):
            self.outcome(call.kind, "refused", f"{reply.status_code} {raw[:80]}")
            await back_off(reply.headers)
        else:
            self.outcome(call.kind, "failed", f"HTTP {reply.status_code}: {raw[:300]}")
        return None

    async def openai_call(self, client: openai.AsyncOpenAI, model: str, stream: bool) -> None:
        kind = "openai-client chat" + (" stream" if stream else "")
        messages: Any = [{"role": "user", "content": "Name a colour."}]
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if stream:
                    finished = None
                    chunks = await client.chat.completions.create(
                        model=model, messages=messages, max_tokens=TOKENS, stream=True
                    )
                    async for chunk in chunks:
                        if chunk.choices and chunk.choices[0].finish_reason:
                            finished = chunk.choices[0].finish_reason
                    # The client ends quietly on a cut stream: no finish_reason means cut.
                    if finished is None:
                        return self.outcome(kind, "lost", "stream ended without finish_reason")
                else:
                    reply = await client.chat.completions.create(
                        model=model, messages=messages, max_tokens=TOKENS
                    )
                    if not reply.choices:
                        return self.outcome(kind, "failed", "no choices")
        except TimeoutError:
            return self.outcome(kind, "lost", f"no answer in {REQUEST_TIMEOUT_S:g}s")
        except openai.APIStatusError as exc:
            raw = exc.response.text
            if refusal(exc.status_code, exc.response.headers, raw, detail=False):
                self.outcome(kind, "refused", f"{exc.status_code} {raw[:80]}")
                return await back_off(exc.response.headers)
            return self.outcome(kind, "failed", f"HTTP {exc.status_code}: {raw[:300]}")
        except openai.APIError as exc:  # an error event mid-stream, or a transport error
            what = "lost" if isinstance(exc, openai.APIConnectionError) else "failed"
            return self.outcome(kind, what, repr(exc))
        self.outcome(kind, "ok")

    async def session_call(
        self, client: httpx.AsyncClient, session: Session, model: str, stream: bool
    ) -> None:
        kind = "api chat" + (" stream" if stream else "")
        text = f"{session.name}, turn {len(session.turns) // 2}: name a colour."
        body: dict[str, Any] = {"model": model, "stream": stream, "options": {"max_tokens": TOKENS},
                                "messages": [{"role": "user", "content": text}]}  # fmt: skip
        if session.id:
            body["session_id"] = session.id
        check = api_stream_complete if stream else json_complete("session_id")
        raw = await self.http_call(client, Call(kind, "/api/chat", body, stream, check, True))
        if raw is None:
            return
        if stream:  # acknowledged: the final event came whole
            final = json.loads(sse_payloads(raw)[-1])
            reply, sid = final["full_text"], final["session_id"]
        else:
            answer = json.loads(raw)
            reply, sid = answer["message"]["content"], answer["session_id"]
        assert session.id in (None, sid), (session.id, sid)
        session.id = sid
        session.turns += [("user", text), ("assistant", reply)]


async def run_client(load: Load, number: int) -> None:
    """One client: a fixed mix of kinds and both models, back to back until the budget ends."""
    model = MODELS[number // 8 % 2]
    async with (
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client,
        openai.AsyncOpenAI(base_url=f"{load.url}/v1", api_key="x", max_retries=0,
                           timeout=REQUEST_TIMEOUT_S) as official,
    ):  # fmt: skip
        session = Session(f"client {number}")
        mix = calls(model) + calls(MODELS[(number + 1) % 2])

        async def send(turn: int) -> None:
            if number % 8 == 0:  # the official client
                await load.openai_call(official, MODELS[turn % 2], stream=turn % 2 == 0)
            elif number % 8 == 1:  # a /api client with one session, on one model
                await load.session_call(client, session, model, stream=turn % 2 == 1)
            else:
                await load.http_call(client, mix[(number + turn) % len(mix)])

        if number % 8 == 1:
            load.sessions.append(session)
        for turn in itertools.count():
            if not load.take():
                return
            began = time.monotonic()
            await send(turn)
            load.tally.seconds.append(time.monotonic() - began)


# -- the churn ------------------------------------------------------------------------------
def churn_steps(model: str) -> list[tuple[str, dict[str, str] | None]]:
    """One model's cycle of churn: hot swaps (blue-green, and from unloaded a plain load),
    unloads that drain, loads, through both admin surfaces, and a configuration reload (which
    swaps a model serving another file back to its own)."""
    return [
        (f"/api/v2/models/{model}/swap", {"path": f"{model}-v2.gguf"}),
        (f"/api/v2/models/{model}/unload", None),
        (f"/api/v2/models/{model}/load", None),
        (f"/api/v2/models/{model}/swap", {"path": f"{model}.gguf"}),
        (f"/api/models/{model}/unload", None),
        (f"/api/v2/models/{model}/swap", {"path": f"{model}-v2.gguf"}),
        ("/api/v2/reload", None),
        (f"/api/models/{model}/load", None),
    ]


async def churn(url: str, model: str, load: Load, stop: asyncio.Event, done: list[str]) -> None:
    """Swap, unload and reload ``model`` underneath the clients, cycle after cycle, until
    ``stop``; each step's answer (and, for the log only, its duration) goes to ``done``."""
    steps = churn_steps(model)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as admin:
        for number, (path, body) in enumerate(itertools.cycle(steps), start=1):
            began = time.monotonic()
            reply = await admin.post(url + path, json=body)
            took = time.monotonic() - began
            done.append(f"{path} -> {reply.status_code} ({took:.1f}s) {reply.text[:200]}")
            if number == len(steps):
                load.cycles_done += 1
            if stop.is_set():
                return
            await asyncio.sleep(CHURN_PAUSE_S)


async def run_load(url: str) -> tuple[Load, list[str], int]:
    """The clients and the churn together; returns the load, the churn steps, and how many of
    those steps were done while the clients ran."""
    load = Load(url, minimum=REQUESTS, cap=4 * REQUESTS)
    stop, done = asyncio.Event(), []
    churners = [asyncio.create_task(churn(url, m, load, stop, done)) for m in MODELS]
    await asyncio.gather(*(run_client(load, n) for n in range(CLIENTS)))
    during = len(done)
    stop.set()
    await asyncio.gather(*churners)
    return load, done, during


@pytest.fixture
def models(demo_model_dir: Path, tmp_path: Path) -> Path:
    """Two models (and a second version of each) hard-linked to the demo model."""
    directory = tmp_path / "models"
    directory.mkdir()
    for name in ("alpha", "alpha-v2", "beta", "beta-v2"):
        os.link(demo_model_dir / f"{MODEL_ID}.gguf", directory / f"{name}.gguf")
    return directory


@pytest.fixture
def gateway(llama_server_bin: Path, models: Path, tmp_path: Path) -> Iterator[RunningGateway]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    running = RunningGateway(
        llama_server_bin, models, tmp_path / "gateway.log", "--config", str(config)
    )
    yield running
    running.stop()


def stored_turns(database: Path, session: str) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT role, content FROM messages WHERE session_id = ? ORDER BY seq", (session,)
        )
        return [(role, content) for role, content in rows]


def test_64_clients_on_every_surface_lose_nothing_while_models_churn(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    load, churned, churned_during_load = asyncio.run(run_load(gateway.url))
    tally = load.tally
    print(f"\nload under churn: {tally.line()}; churn steps during the load: "
          f"{churned_during_load}")  # fmt: skip
    for kind, count in sorted(tally.by_kind.items()):
        print(f"  {kind}: {count}")
    for why, count in tally.refusals.most_common():
        print(f"  refused {count}x: {why}")
    print("  churn:\n   ", "\n    ".join(churned))
    assert tally.lost == [], tally.lost[:10]
    assert tally.failed == [], tally.failed[:10]
    assert tally.sent >= REQUESTS and tally.sent == tally.ok + tally.refused
    assert all(" -> 200 (" in step for step in churned), churned
    # Every step of both cycles happened under load.
    assert load.cycles_done >= len(MODELS)
    assert churned_during_load >= len(MODELS) * len(churn_steps("any"))
    assert tally.ok >= REQUESTS // 2  # refusals are the exception, not the answer

    # Every acknowledged turn is in its session, and nothing else is.
    sessions = [s for s in load.sessions if s.id]
    assert sessions
    for session in sessions:
        stored = httpx.get(f"{gateway.url}/api/sessions/{session.id}", timeout=30).json()
        assert [(m["role"], m["content"]) for m in stored["messages"]] == session.turns

    # Both models still serve, and no retired child is left behind.
    for model in MODELS:
        body = chat_body(model, max_tokens=2)
        reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
    assert wait_for(lambda: len(gateway.children()) <= len(MODELS), timeout=60)

    gateway.stop()
    database = tmp_path / "data" / "sessions.sqlite3"
    for session in sessions:
        assert stored_turns(database, str(session.id)) == session.turns
