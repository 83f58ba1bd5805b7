"""Security review with a real llama-server (issues 7 and 21): the child listens on loopback
only, its own CORS header stops at the gateway, token limits hold on its answers (floats and
booleans included), JSON it would refuse with a 500 is the gateway's 400, and a model that
fails to load tells clients no host paths."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from harness import MODEL_ID, RunningGateway

from supervisor.models.demo import MODEL_FILE

CONFIG = "ctx_size = 512\nparallel = 1\nthreads = 1\nmax_tokens_limit = 6\ncors_origins = []\n"
BROKEN = "broken-copy"  # the demo model with a LoRA adapter that is not there: it cannot load


@pytest.fixture(scope="module")
def secured(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningGateway, Path]]:
    base = tmp_path_factory.mktemp("security")
    broken_dir = base / "broken"
    broken_dir.mkdir()
    shutil.copyfile(demo_model_dir / MODEL_FILE, broken_dir / f"{BROKEN}.gguf")
    config = base / "config.toml"
    lora = base / "missing-lora.gguf"  # llama-server's error names it, and the model's path
    config.write_text(
        f'{CONFIG}[[models]]\nfile = "{BROKEN}.gguf"\nextra_args = ["--lora", "{lora}"]\n'
    )
    running = RunningGateway(
        llama_server_bin, demo_model_dir, base / "gateway.log",
        "--models-dir", str(broken_dir), "--config", str(config),
    )  # fmt: skip
    try:
        yield running, base
    finally:
        running.stop()


def test_child_listens_on_loopback_only_and_its_cors_header_stays_behind(
    secured: tuple[RunningGateway, Path],
) -> None:
    gateway, _ = secured
    origin = {"Origin": "https://evil.example"}
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=origin, timeout=60)
    assert reply.status_code == 200, reply.text
    [child] = gateway.children()
    listening = [c for c in child.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "the child listens somewhere"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert child.cmdline()[-4:] == ["--host", "127.0.0.1", "--port", str(gateway.child_port())]
    # llama-server itself allows every origin; the gateway passes none of that on.
    direct = httpx.get(f"http://127.0.0.1:{gateway.child_port()}/v1/models", headers=origin)
    assert direct.headers.get("access-control-allow-origin") in ("*", origin["Origin"])
    # A local user who finds the child's port cannot use it: the child wants its own key.
    assert direct.status_code == 401
    sneak = {"prompt": "Hi", "n_predict": 1}
    bypass = httpx.post(f"http://127.0.0.1:{gateway.child_port()}/completion", json=sneak)
    assert bypass.status_code == 401
    assert httpx.get(f"http://127.0.0.1:{gateway.child_port()}/health").status_code == 200
    streamed = httpx.post(
        f"{gateway.url}/completion", headers=origin, timeout=60,
        json={"model": MODEL_ID, "prompt": "Hi", "n_predict": 2, "stream": True},
    )  # fmt: skip
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    for answer in (reply, streamed):
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


def test_token_limit_holds_on_real_answers(secured: tuple[RunningGateway, Path]) -> None:
    gateway, _ = secured
    url = f"{gateway.url}/v1/completions"
    prompt = {"model": MODEL_ID, "prompt": "Write a long essay about the sea.", "ignore_eos": True}
    refused = httpx.post(url, json={**prompt, "max_tokens": 7}, timeout=60)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "max_tokens"
    capped = httpx.post(url, json=prompt, timeout=60)  # asks no limit: the child caps it
    assert capped.status_code == 200, capped.text
    assert capped.json()["usage"]["completion_tokens"] == 6


def test_token_counts_as_floats_or_booleans_do_not_pass_the_limit(
    secured: tuple[RunningGateway, Path],
) -> None:
    """Issue 21, item 1: llama-server reads 1e6 as an integer, and its --n-predict is no cap
    on a request that asks more: 1e6 gave 2,047 tokens past a limit of 6."""
    gateway, _ = secured
    prompt = {"model": MODEL_ID, "prompt": "Hi", "ignore_eos": True}
    cases = [
        ("/v1/completions", "max_tokens", 1e6),
        ("/v1/completions", "max_tokens", 300.0),
        ("/v1/completions", "max_tokens", 6.5),
        ("/v1/completions", "max_tokens", True),
        ("/v1/chat/completions", "max_completion_tokens", 1e6),
        ("/completion", "n_predict", 1e6),
    ]
    for path, field, value in cases:
        body = {**prompt, field: value}
        if path == "/v1/chat/completions":
            body = {
                "model": MODEL_ID,
                "messages": [{"role": "user", "content": "Hi"}],
                field: value,
            }
        refused = httpx.post(f"{gateway.url}{path}", json=body, timeout=60)
        assert refused.status_code == 400, (path, field, value, refused.text)
        assert refused.json()["error"]["param"] == field
    within = httpx.post(f"{gateway.url}/v1/completions", json={**prompt, "max_tokens": 5.0})
    assert within.status_code == 200, within.text
    assert within.json()["usage"]["completion_tokens"] == 5


NOT_JSON_TO_THE_CHILD = [
    ('{"model": "%s", "prompt": "Hi", "temperature": NaN}', "utf-8"),
    ('{"model": "%s", "prompt": "Hi", "temperature": -Infinity}', "utf-8"),
    ('{"model": "%s", "prompt": "Hi", "temperature": 1e400}', "utf-8"),
    ('{"model": "%s", "prompt": "\\ud800 Hi"}', "utf-8"),
    ('{"model": "%s", "prompt": "Hi"}', "utf-16"),
]


@pytest.mark.parametrize(("template", "encoding"), NOT_JSON_TO_THE_CHILD)
def test_json_the_child_would_refuse_is_a_400_not_its_500(
    secured: tuple[RunningGateway, Path], template: str, encoding: str
) -> None:
    """Issue 21, item 3: Python's json accepts these; llama-server answers them 500."""
    gateway, _ = secured
    body = (template % MODEL_ID).encode(encoding)
    for path in ("/v1/completions", "/completion"):
        answer = httpx.post(f"{gateway.url}{path}", content=body, timeout=60)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert "not valid JSON" in answer.json()["error"]["message"]


def test_a_failed_load_shows_clients_no_host_paths(secured: tuple[RunningGateway, Path]) -> None:
    gateway, base = secured
    body = {"model": BROKEN, "messages": [{"role": "user", "content": "Hi"}]}
    replies = [
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60),
        httpx.post(f"{gateway.url}/api/chat", json=body, timeout=60),
        httpx.get(f"{gateway.url}/api/v2/models/{BROKEN}.gguf", timeout=60),
    ]
    assert [r.status_code for r in replies] == [503, 503, 200]
    assert replies[0].json()["error"]["code"] == "model_load_failed"
    assert replies[2].json()["state"]["state"] == "failed"
    for reply in replies:
        assert str(base) not in reply.text and "/tmp/" not in reply.text, reply.text
    assert f"{base}/broken/{BROKEN}.gguf" in gateway.log_path.read_text()  # the log keeps it
    assert "…/" in replies[0].json()["error"]["message"]
