"""Sessions survive gateway restarts, SIGTERM and kill -9: what was acknowledged is kept."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway
from sse import sse_data

pytestmark = pytest.mark.integration


def chat(gw: RunningGateway, text: str, session: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"model": MODEL_ID, "options": {"max_tokens": 6},
                               "messages": [{"role": "user", "content": text}]}  # fmt: skip
    if session:
        body["session_id"] = session
    reply = httpx.post(f"{gw.url}/api/chat", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    result: dict[str, object] = reply.json()
    return result


def messages(gw: RunningGateway, session: str) -> list[str]:
    stored = httpx.get(f"{gw.url}/api/sessions/{session}", timeout=30).json()
    return [m["content"] for m in stored["messages"] if m["role"] == "user"]


def test_a_session_continues_after_a_restart(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    first = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "first.log")
    try:
        session = str(chat(first, "My name is Ada.")["session_id"])
    finally:
        first.stop()
    second = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "second.log")
    try:
        chat(second, "What is my name?", session)
        assert messages(second, session) == ["My name is Ada.", "What is my name?"]
    finally:
        second.stop()


def test_kill_9_loses_nothing_acknowledged(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    first = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "first.log")
    try:
        session = str(chat(first, "turn 0")["session_id"])
        for turn in range(1, 5):
            chat(first, f"turn {turn}", session)
        os.kill(first.proc.pid, signal.SIGKILL)  # right after the last acknowledgement
        first.proc.wait()
    finally:
        first.stop()
    second = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "second.log")
    try:
        assert messages(second, session) == [f"turn {n}" for n in range(5)]
    finally:
        second.stop()


def test_concurrent_streams_on_one_session_take_turns(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    gateway = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "gateway.log")
    try:
        session = str(chat(gateway, "Let us talk.")["session_id"])
        finals: list[dict[str, object]] = []

        def stream(text: str) -> None:
            body = {"model": MODEL_ID, "session_id": session, "stream": True,
                    "options": {"max_tokens": 12},
                    "messages": [{"role": "user", "content": text}]}  # fmt: skip
            raw = httpx.post(f"{gateway.url}/api/chat", json=body, timeout=120).text
            events = sse_data(raw, strict=True)
            finals.append(json.loads(events[-1]))

        threads = [threading.Thread(target=stream, args=(f"question {n}",)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert all(f["done"] is True and "usage" in f for f in finals), finals
        first, second = sorted(finals, key=lambda f: f["usage"]["prompt_tokens"])  # type: ignore[index]
        # The second saw the first one's question and answer in its history.
        assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + 4  # type: ignore[index]
        roles = [
            m["role"] for m in httpx.get(f"{gateway.url}/api/sessions/{session}").json()["messages"]
        ]
        assert roles == ["user", "assistant"] * 3
    finally:
        gateway.stop()
