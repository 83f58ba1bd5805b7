"""Two real gateways sharing their /api sessions through a real PostgreSQL (issue 20): a
session started on one continues on the other, turns sent to both at once on one session go
in order, and kill -9 of a gateway loses no turn it acknowledged."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway
from postgres_server import PASSWORD, PostgresServer
from sse import sse_data

pytestmark = pytest.mark.integration


class Pair:
    """Two gateways on one sessions database; ``stop()`` ends whichever still runs."""

    def __init__(self, binary: Path, models: Path, workdir: Path, url: str) -> None:
        self.gateways: list[RunningGateway] = []
        env = {"LLAMA_SUPERVISOR_SESSIONS_URL": url}
        try:
            for name in ("a", "b"):
                (workdir / name).mkdir()
                log = workdir / name / "gateway.log"
                self.gateways.append(RunningGateway(binary, models, log, env=env))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()

    def logs(self) -> str:
        return "".join(g.log_path.read_text(errors="replace") for g in self.gateways)


@pytest.fixture
def pair(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path, postgres: PostgresServer
) -> Iterator[Pair]:
    running = Pair(llama_server_bin, demo_model_dir, tmp_path, postgres.create_database())
    try:
        yield running
    finally:
        running.stop()
    assert PASSWORD not in running.logs()


def chat(gw: RunningGateway, text: str, session: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"model": MODEL_ID, "options": {"max_tokens": 6},
                               "messages": [{"role": "user", "content": text}]}  # fmt: skip
    if session:
        body["session_id"] = session
    reply = httpx.post(f"{gw.url}/api/chat", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    result: dict[str, object] = reply.json()
    return result


def stored(gw: RunningGateway, session: str) -> list[tuple[str, str]]:
    reply = httpx.get(f"{gw.url}/api/sessions/{session}", timeout=30)
    assert reply.status_code == 200, reply.text
    return [(m["role"], m["content"]) for m in reply.json()["messages"]]


def test_a_session_started_on_one_gateway_continues_on_the_other(pair: Pair) -> None:
    a, b = pair.gateways
    first = chat(a, "My name is Ada.")
    session = str(first["session_id"])
    second = chat(b, "What is my name?", session)
    assert second["session_id"] == session
    assert [text for role, text in stored(a, session) if role == "user"] == [
        "My name is Ada.",
        "What is my name?",
    ]
    assert stored(a, session) == stored(b, session)
    assert session in [s["id"] for s in httpx.get(f"{b.url}/api/sessions").json()["sessions"]]
    assert httpx.delete(f"{b.url}/api/sessions/{session}").status_code == 200
    assert httpx.get(f"{a.url}/api/sessions/{session}").status_code == 404


def test_concurrent_turns_on_one_session_from_both_gateways_take_turns(pair: Pair) -> None:
    a, b = pair.gateways
    session = str(chat(a, "Let us talk.")["session_id"])
    chat(b, "Warm up.", session)  # both gateways have the model loaded before the race
    finals: list[dict[str, object]] = []

    def stream(gw: RunningGateway, text: str) -> None:
        body = {"model": MODEL_ID, "session_id": session, "stream": True,
                "options": {"max_tokens": 16},
                "messages": [{"role": "user", "content": text}]}  # fmt: skip
        raw = httpx.post(f"{gw.url}/api/chat", json=body, timeout=120).text
        finals.append(json.loads(sse_data(raw, strict=True)[-1]))

    rounds = 3
    for n in range(rounds):
        threads = [threading.Thread(target=stream, args=(gw, f"q{n} via {name}"))
                   for gw, name in ((a, "a"), (b, "b"))]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert len(finals) == 2 * rounds and all(f["done"] is True for f in finals), finals
    turns = stored(b, session)
    # Whole turns, one after the other: every question is followed by its own answer, and
    # each answer is the one its stream's final event carried.
    assert [role for role, _ in turns] == ["user", "assistant"] * (2 + 2 * rounds)
    answers = {str(f["full_text"]) for f in finals}
    assert {text for role, text in turns[4:] if role == "assistant"} == answers
    # Each turn saw every earlier one: its prompt grew past the one before it.
    prompts = sorted(int(f["usage"]["prompt_tokens"]) for f in finals)  # type: ignore[index]
    assert all(later > earlier + 4 for earlier, later in itertools.pairwise(prompts))


def test_kill_9_of_a_gateway_loses_no_acknowledged_turn(pair: Pair) -> None:
    a, b = pair.gateways
    session = str(chat(a, "turn 0")["session_id"])
    for turn in range(1, 6):
        chat(a if turn % 2 else b, f"turn {turn}", session)
    chat(a, "turn 6", session)
    os.kill(a.proc.pid, signal.SIGKILL)  # right after its last acknowledgement
    a.proc.wait(30)
    users = [text for role, text in stored(b, session) if role == "user"]
    assert users == [f"turn {n}" for n in range(7)]
    # The killed gateway held no lock that outlived it: the session goes on at once.
    chat(b, "turn 7", session)
    assert len(stored(b, session)) == 16
