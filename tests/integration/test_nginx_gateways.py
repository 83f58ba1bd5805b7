"""Two real gateways sharing PostgreSQL behind one real nginx, with the shipped site for
several gateways (deploy/nginx/llama-supervisor-gateways.conf, only its addresses changed): a
session's turns are spread over both gateways and kept whole, streams pass, and when one
gateway is killed nginx passes over it and the session goes on."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import MODEL_ID, RunningGateway
from nginx_site import REPO, RunningNginx, write_nginx_conf
from postgres_server import PostgresServer
from sse import sse_data

from bench.nginx import find_nginx
from supervisor.children.process import free_port

pytestmark = pytest.mark.integration

SITE = REPO / "deploy" / "nginx" / "llama-supervisor-gateways.conf"


def site_for_gateways(ports: list[int], listen_port: int) -> str:
    """The shipped site, its upstream's servers replaced by ``127.0.0.1:<port>`` each (their
    options kept), listening on ``127.0.0.1:listen_port``."""
    text = SITE.read_text()
    servers = re.findall(r"^\s*server \S+:\d+( [^;]*)?;\n", text, flags=re.MULTILINE)
    assert len(servers) >= 2, "the site should name several gateways"
    options = servers[0]
    text = re.sub(r"^\s*server \S+:\d+( [^;]*)?;\n", "", text, flags=re.MULTILINE)
    ours = "".join(f"    server 127.0.0.1:{port}{options};\n" for port in ports)
    text = text.replace("upstream llama_supervisor {\n", "upstream llama_supervisor {\n" + ours)
    text, count = re.subn(r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{listen_port};", text,
                          flags=re.MULTILINE)  # fmt: skip
    assert count == 1
    return re.sub(r"^\s*listen \[::\]:80;\n", "", text, flags=re.MULTILINE)


@pytest.fixture
def nginx_bin() -> str:
    found = find_nginx()
    if found is None:
        reason = "nginx is not installed: make system-deps (apt-get install nginx)"
        if os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
def behind_nginx(
    nginx_bin: str,
    llama_server_bin: Path,
    demo_model_dir: Path,
    tmp_path: Path,
    postgres: PostgresServer,
) -> Iterator[tuple[RunningNginx, list[RunningGateway]]]:
    env = {"LLAMA_SUPERVISOR_SESSIONS_URL": postgres.create_database()}
    gateways: list[RunningGateway] = []
    nginx: RunningNginx | None = None
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            log = tmp_path / name / "gateway.log"
            gateways.append(RunningGateway(llama_server_bin, demo_model_dir, log, env=env))
        port = free_port()
        (tmp_path / "nginx").mkdir()
        conf = write_nginx_conf(
            tmp_path / "nginx", site_for_gateways([g.port for g in gateways], port)
        )
        nginx = RunningNginx(nginx_bin, conf, port)
        yield nginx, gateways
    finally:
        if nginx is not None:
            nginx.stop()
        for gateway in gateways:
            gateway.stop()


def chats_served(gateway: RunningGateway) -> int:
    listed = httpx.get(f"{gateway.url}/api/v2/activity", timeout=10).json()["data"]
    return sum(1 for entry in listed if "/api/chat" in json.dumps(entry))


def turn(url: str, text: str, session: str | None, stream: bool = False) -> str:
    body: dict[str, object] = {"model": MODEL_ID, "stream": stream,
                               "options": {"max_tokens": 6},
                               "messages": [{"role": "user", "content": text}]}  # fmt: skip
    if session:
        body["session_id"] = session
    reply = httpx.post(f"{url}/api/chat", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    if stream:
        final = json.loads(sse_data(reply.text, strict=True)[-1])
        assert final["done"] is True and "error" not in final, final
        return str(final["session_id"])
    return str(reply.json()["session_id"])


def test_one_session_spread_over_two_gateways_behind_nginx_survives_losing_one(
    behind_nginx: tuple[RunningNginx, list[RunningGateway]],
) -> None:
    nginx, (a, b) = behind_nginx
    session = turn(nginx.url, "turn 0", None)
    for n in range(1, 6):
        assert turn(nginx.url, f"turn {n}", session, stream=n % 2 == 0) == session
    # nginx spread them: each gateway answered some of the session's turns.
    assert chats_served(a) >= 1 and chats_served(b) >= 1, (chats_served(a), chats_served(b))

    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(30)
    for n in range(6, 10):  # nginx passes over the dead gateway; nothing is refused
        assert turn(nginx.url, f"turn {n}", session, stream=n % 2 == 0) == session
    stored = httpx.get(f"{nginx.url}/api/sessions/{session}", timeout=30).json()["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == [f"turn {n}" for n in range(10)]
    assert [m["role"] for m in stored] == ["user", "assistant"] * 10
