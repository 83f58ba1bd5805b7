"""A flood of silent connections against a real gateway whose open-files limit is 256 (issue 21,
item 5). Before the intake's bounds, 300 such sockets took every file descriptor: new clients
were reset and a model load failed with "Too many open files". Now the gateway holds at most
its connection cap, answers the rest 503 at once, and still loads a model and answers it."""

from __future__ import annotations

import select
import socket
from pathlib import Path

import httpx
from harness import MODEL_ID, RunningGateway

from supervisor.http.intake import FD_RESERVE

OPEN_FILES = 256
CAP = (OPEN_FILES - FD_RESERVE) // 2
FLOOD = 300


def refused_at_once(socks: list[socket.socket]) -> set[socket.socket]:
    """The sockets the gateway answered and closed: readable (an answer, then EOF) before
    a second passes with none newly so."""
    refused: set[socket.socket] = set()
    while True:
        waiting = [s for s in socks if s not in refused]
        readable, _, _ = select.select(waiting, [], [], 1.0)
        if not readable:
            return refused
        for sock in readable:
            answer = b""
            while data := sock.recv(65536):
                answer += data
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
            refused.add(sock)


def test_silent_connections_past_the_cap_leave_room_to_load_and_answer(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    gateway = RunningGateway(
        llama_server_bin,
        demo_model_dir,
        tmp_path / "gateway.log",
        env={"LLAMA_SUPERVISOR_HEAD_TIMEOUT_S": "120", "LLAMA_SUPERVISOR_AUTOLOAD": "false"},
        open_files=OPEN_FILES,
    )
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(FLOOD)]
        refused = refused_at_once(socks)
        held = [s for s in socks if s not in refused]
        assert len(held) == CAP
        for sock in held[:4]:  # a few go: room for the operator and a client
            sock.close()
        url = gateway.url
        load = httpx.post(f"{url}/api/v2/models/{MODEL_ID}/load", timeout=120)
        assert load.status_code == 200, load.text
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": MODEL_ID,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
            },
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] is not None
    finally:
        for sock in socks:
            sock.close()
        gateway.stop()
    assert "Too many open files" not in gateway.log_path.read_text()
