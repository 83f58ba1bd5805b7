"""Security review (issue 7): children on loopback only, every admin route closed to inference
keys, no host paths in error bodies, no CORS unless configured, limits on prompt length,
max_tokens and stop lists. See docs/security.md."""

from __future__ import annotations

import dataclasses
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from error_format import error_message, uses_anthropic
from fake_child import FakeChild, Reply, Stream
from fakes import FakeFactory, Script, make_entry
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from served import MakeSettings, client_of

from supervisor.app import create_app
from supervisor.children.argv import build_argv, launch_spec
from supervisor.children.key import child_key_file
from supervisor.children.spec import Role
from supervisor.config import ModelSettings, Settings
from supervisor.errors import ModelLoadError
from supervisor.http.auth import Access, required_access
from supervisor.redact import redact_paths
from supervisor.relay.limits import RequestLimits
from supervisor.relay.table import RELAYS

MakeGGUF = Callable[..., Path]
INFERENCE, ADMIN = "sk-inference-0123", "sk-admin-4567"
HOST_PATH = re.compile(r"/(?:srv|opt|home|root|tmp|usr|etc|var)/")

# Every route of the app and the key it needs. A route added to the app and not here fails
# test_every_route_of_the_app_is_classed: whoever adds it has to decide who may call it.
ROUTE_ACCESS: dict[tuple[str, str], Access] = {
    ("GET", "/openapi.json"): Access.PUBLIC,
    ("GET", "/docs"): Access.PUBLIC,
    ("GET", "/docs/oauth2-redirect"): Access.PUBLIC,
    ("GET", "/redoc"): Access.PUBLIC,
    ("GET", "/health"): Access.PUBLIC,
    ("GET", "/api/v2/health"): Access.PUBLIC,
    ("GET", "/v1/health"): Access.PUBLIC,
    ("GET", "/ui"): Access.PUBLIC,  # the web console's files: the page asks for a key itself
    ("GET", "/ui/"): Access.PUBLIC,
    ("GET", "/ui/{name:path}"): Access.PUBLIC,
    ("GET", "/"): Access.INFERENCE,
    ("GET", "/metrics"): Access.INFERENCE,
    ("GET", "/v1/models"): Access.INFERENCE,
    ("GET", "/models"): Access.INFERENCE,
    ("GET", "/v1/models/{model_id}"): Access.INFERENCE,
    ("GET", "/v1/stats"): Access.ADMIN,
    ("GET", "/v1/peers"): Access.ADMIN,
    ("POST", "/v1/chat/completions"): Access.INFERENCE,
    ("POST", "/v1/completions"): Access.INFERENCE,
    ("POST", "/v1/embeddings"): Access.INFERENCE,
    ("GET", "/api/v2/models"): Access.INFERENCE,
    ("GET", "/api/v2/models/{model_id}"): Access.INFERENCE,
    ("POST", "/api/v2/models/{model_id}/load"): Access.ADMIN,
    ("POST", "/api/v2/models/{model_id}/unload"): Access.ADMIN,
    ("POST", "/api/v2/models/{model_id}/swap"): Access.ADMIN,
    ("POST", "/api/v2/chat/{model_id}"): Access.INFERENCE,
    ("POST", "/api/v2/chat/{model_id}/stream"): Access.INFERENCE,
    ("GET", "/api/v2/metrics"): Access.ADMIN,
    ("POST", "/api/v2/reload"): Access.ADMIN,
    ("GET", "/api/v2/models/{model_id}/logs"): Access.ADMIN,
    ("GET", "/api/v2/models/{model_id}/logs/stream"): Access.ADMIN,
    ("GET", "/api/v2/activity"): Access.ADMIN,
    ("GET", "/api/v2/activity/stream"): Access.ADMIN,
    ("GET", "/api/v2/metrics/history"): Access.ADMIN,
    ("POST", "/api/v2/models/pull"): Access.ADMIN,
    **{
        (method, "/api/v2/models/pull"): Access.ADMIN
        for method in ("GET", "PUT", "PATCH", "DELETE")
    },
    ("GET", "/api/v2/models/pulls"): Access.ADMIN,
    ("DELETE", "/api/v2/models/pulls/{pull_id}"): Access.ADMIN,
    ("POST", "/v1/import"): Access.ADMIN,
    ("GET", "/api/models"): Access.INFERENCE,
    ("GET", "/api/models/{model_name}"): Access.INFERENCE,
    ("POST", "/api/models/{model_name}/load"): Access.ADMIN,
    ("POST", "/api/models/{model_name}/unload"): Access.ADMIN,
    ("POST", "/api/chat"): Access.INFERENCE,
    ("POST", "/api/generate"): Access.INFERENCE,
    ("POST", "/api/embeddings"): Access.INFERENCE,
    ("GET", "/api/sessions"): Access.INFERENCE,
    ("GET", "/api/sessions/{session_id}"): Access.INFERENCE,
    ("DELETE", "/api/sessions/{session_id}"): Access.INFERENCE,
    ("POST", "/chat/completions"): Access.INFERENCE,
    ("POST", "/completion"): Access.INFERENCE,
    ("POST", "/tokenize"): Access.INFERENCE,
    ("POST", "/detokenize"): Access.INFERENCE,
    ("POST", "/embedding"): Access.INFERENCE,
    ("POST", "/completions"): Access.INFERENCE,
    ("POST", "/infill"): Access.INFERENCE,
    ("POST", "/v1/responses"): Access.INFERENCE,
    ("POST", "/responses"): Access.INFERENCE,
    ("POST", "/v1/messages"): Access.INFERENCE,
    ("POST", "/v1/messages/count_tokens"): Access.INFERENCE,
    ("POST", "/v1/chat/completions/input_tokens"): Access.INFERENCE,
    ("POST", "/chat/completions/input_tokens"): Access.INFERENCE,
    ("POST", "/v1/responses/input_tokens"): Access.INFERENCE,
    ("POST", "/responses/input_tokens"): Access.INFERENCE,
    ("POST", "/v1/chat/completions/control"): Access.INFERENCE,
    ("POST", "/apply-template"): Access.INFERENCE,
    ("POST", "/embeddings"): Access.INFERENCE,
    ("POST", "/v1/rerank"): Access.INFERENCE,
    ("POST", "/rerank"): Access.INFERENCE,
    ("POST", "/v1/reranking"): Access.INFERENCE,
    ("POST", "/reranking"): Access.INFERENCE,
    ("POST", "/v1/audio/transcriptions"): Access.INFERENCE,
    ("POST", "/audio/transcriptions"): Access.INFERENCE,
    ("GET", "/props"): Access.INFERENCE,
    # A child's slots show other clients' prompts; its LoRA scales change every answer.
    ("GET", "/slots"): Access.ADMIN,
    ("GET", "/lora-adapters"): Access.ADMIN,
    ("POST", "/lora-adapters"): Access.ADMIN,
}


def _concrete(template: str) -> str:
    return re.sub(r"\{model_\w+\}", "tiny.Q4_1", template).replace("{session_id}", "s1")


def _app_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    found = set()
    for route in iter_route_contexts(app.routes):
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.add((method, str(route.path)))
    return found


# -- children listen on loopback only ---------------------------------------------------------


def _last_value(argv: list[str], flag: str) -> str:
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]


@pytest.mark.parametrize("role", list(Role))
def test_children_listen_on_loopback_whatever_the_config_says(role: Role) -> None:
    settings = Settings(host="0.0.0.0", parallel=2, max_tokens_limit=64)
    spec = launch_spec(settings, make_entry(), Path("/opt/llama-server"), role, 41234)
    # Even flags slipped past the config's check cannot move the child: llama.cpp keeps an
    # option's last value, and the gateway's come last.
    sneaky = dataclasses.replace(spec, extra_args=("--host", "0.0.0.0", "--port", "80"))
    for argv in (build_argv(spec), build_argv(sneaky)):
        assert _last_value(argv, "--host") == "127.0.0.1"
        assert _last_value(argv, "--port") == "41234"
        assert argv[-4:] == ["--host", "127.0.0.1", "--port", "41234"]


@pytest.mark.parametrize(
    "extra", [["--host", "0.0.0.0"], ["--port", "80"], ["--port=80"], ["--reuse-port"]]
)
def test_config_refuses_listen_flags_in_extra_args(extra: list[str]) -> None:
    with pytest.raises(ValidationError, match="extra_args may not set"):
        ModelSettings(file="tiny.gguf", extra_args=extra)


# -- admin routes ------------------------------------------------------------------------------


def test_every_route_of_the_app_is_classed(tmp_path: Path) -> None:
    routes = _app_routes(Settings(models_dirs=[tmp_path], data_dir=tmp_path / "data"))
    assert routes == set(ROUTE_ACCESS), "classify new routes in ROUTE_ACCESS (and http/auth.py)"
    for (method, template), access in ROUTE_ACCESS.items():
        for path in (_concrete(template), _concrete(template) + "/"):
            assert required_access(method, path) is access, (method, path)


@pytest.fixture
def keyed(make_gguf: MakeGGUF, make_settings: MakeSettings) -> Iterator[TestClient]:
    make_gguf("models/tiny.Q4_1.gguf")
    settings = make_settings(api_keys=[SecretStr(INFERENCE)], admin_keys=[SecretStr(ADMIN)])
    with TestClient(create_app(settings, factory=FakeFactory())) as client:
        yield client


def _assert_error(reply: Any, path: str, status: int, code: str) -> None:
    assert reply.status_code == status, path
    body = reply.json()
    if path.startswith("/api/") and not path.startswith("/api/v2/"):
        assert set(body) == {"detail"} and isinstance(body["detail"], str), path
    else:
        assert set(body) == {"error"} and body["error"]["code"] == code, path


def test_admin_routes_refuse_inference_keys_and_no_keys(keyed: TestClient) -> None:
    admin = [(m, _concrete(t)) for (m, t), a in ROUTE_ACCESS.items() if a is Access.ADMIN]
    assert len(admin) == 25  # the 405 answers of /api/v2/models/pull included
    for method, path in admin:
        _assert_error(keyed.request(method, path), path, 401, "invalid_api_key")
        as_client = keyed.request(method, path, headers={"authorization": f"Bearer {INFERENCE}"})
        _assert_error(as_client, path, 403, "admin_key_required")
    # Nothing was loaded or reloaded by the refused calls.
    assert keyed.get("/api/v2/models/tiny.Q4_1", headers={"x-api-key": ADMIN}).json()["status"] in (
        "unloaded",
        "not_loaded",
    )
    assert keyed.get("/v1/stats", headers={"x-api-key": ADMIN}).status_code == 200


# -- no host paths in what clients read --------------------------------------------------------


def test_redaction_keeps_routes_and_urls_but_not_host_paths() -> None:
    assert redact_paths("error loading model: /srv/models/m.gguf") == (
        "error loading model: …/m.gguf"
    )
    assert redact_paths("[Errno 2] No such file: '/opt/llama/bin/llama-server'") == (
        "[Errno 2] No such file: '…/llama-server'"
    )
    kept = "GET /health from http://127.0.0.1:8080/v1/models"
    assert redact_paths(kept) == kept


def test_a_failed_load_tells_clients_no_host_paths_and_the_log_everything() -> None:
    tail = ["llama_model_load: error loading model: /srv/models/secret/m.gguf: bad magic"]
    error = ModelLoadError("m", "cannot start llama-server: /home/op/bin/llama-server", tail)
    assert not HOST_PATH.search(error.message)
    assert "…/m.gguf: bad magic" in error.message
    assert "/srv/models/secret/m.gguf" in str(error)  # the gateway's log keeps it


def test_load_failures_reach_every_surface_without_host_paths(
    tmp_path: Path, make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    models = tmp_path / "models"
    tail = [f"llama_model_load: error loading model: {models}/tiny.Q4_1.gguf: tensor error"]
    factory = FakeFactory(scripts=[Script(fail_with=tail) for _ in range(4)])
    with TestClient(create_app(make_settings(), factory=factory)) as client:
        replies = [
            client.post("/v1/chat/completions", json={"model": "tiny.Q4_1", "messages": []}),
            client.post("/api/generate", json={"model": "tiny.Q4_1", "prompt": "hi"}),
            client.post("/api/v2/models/tiny.Q4_1/load"),
            client.get("/api/v2/models/tiny.Q4_1"),
            client.get("/api/v2/models"),
        ]
    assert [r.status_code for r in replies] == [503, 503, 503, 200, 200]
    assert "tensor error" in replies[0].json()["error"]["message"]
    assert "tensor error" in replies[3].json()["state"]["last_error"]
    assert replies[3].json()["state"]["path"] == "tiny.Q4_1.gguf"
    for reply in replies:
        assert str(tmp_path) not in reply.text, reply.request.url


# -- CORS -------------------------------------------------------------------------------------


def _cors_client(
    make_settings: MakeSettings, make_gguf: MakeGGUF, fake_child: FakeChild, origins: list[str]
) -> TestClient:
    make_gguf("models/tiny.Q4_1.gguf")
    settings = make_settings(cors_origins=origins, default_model="tiny.Q4_1")
    # llama-server's own answers allow every origin: the relay must not pass that on.
    allow_all = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
    fake_child.answer("POST", "/v1/chat/completions", Reply(json={"ok": 1}, headers=allow_all))
    stream_headers = {"Content-Type": "text/event-stream", **allow_all}
    fake_child.answer(
        "POST", "/completion", Stream([b'data: {"content":"x"}\n\n'], headers=stream_headers)
    )
    return TestClient(create_app(settings, factory=FakeFactory(base_url=fake_child.url)))


def _cors_headers(reply: Any) -> dict[str, str]:
    return {k: v for k, v in reply.headers.items() if k.lower().startswith("access-control-")}


def test_no_cors_headers_unless_configured(
    make_settings: MakeSettings, make_gguf: MakeGGUF, fake_child: FakeChild
) -> None:
    origin = {"origin": "https://evil.example"}
    with _cors_client(make_settings, make_gguf, fake_child, []) as client:
        relayed = client.post("/v1/chat/completions", json={"messages": []}, headers=origin)
        streamed = client.post("/completion", json={"stream": True}, headers=origin)
        routed = client.get("/v1/models", headers=origin)
        preflight = client.options(
            "/v1/chat/completions",
            headers={**origin, "access-control-request-method": "POST"},
        )
    assert relayed.status_code == 200 and relayed.json() == {"ok": 1}
    assert streamed.status_code == 200 and b'"content":"x"' in streamed.content
    for reply in (relayed, streamed, routed, preflight):
        assert _cors_headers(reply) == {}, reply.request.url
    assert preflight.status_code == 405


def test_configured_cors_covers_fast_lane_and_routes(
    make_settings: MakeSettings, make_gguf: MakeGGUF, fake_child: FakeChild
) -> None:
    allowed, other = "https://app.example", "https://evil.example"
    with _cors_client(make_settings, make_gguf, fake_child, [allowed]) as client:
        relayed = client.post("/v1/chat/completions", json={}, headers={"origin": allowed})
        routed = client.get("/v1/models", headers={"origin": allowed})
        foreign = client.post("/v1/chat/completions", json={}, headers={"origin": other})
        preflight = client.options(
            "/v1/chat/completions",
            headers={"origin": allowed, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization, content-type"},
        )  # fmt: skip
    for reply in (relayed, routed):
        assert reply.headers["access-control-allow-origin"] == allowed
        assert "access-control-allow-credentials" not in reply.headers
    assert _cors_headers(foreign) == {}
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed


# -- limits on prompt length, max_tokens and stop ---------------------------------------------


def test_limits_are_checked_on_every_prompt_and_token_field() -> None:
    limits = RequestLimits(max_tokens=100, max_prompt_chars=10, max_stop=4)
    limits.check({"max_tokens": 100, "n_predict": -1, "prompt": "0123456789", "stop": ["a"] * 4})
    limits.check({"messages": [{"role": "user", "content": [{"type": "text", "text": "abc"}]}]})
    refused = [
        ({"max_tokens": 101}, "max_tokens"),
        ({"max_completion_tokens": 500}, "max_completion_tokens"),
        ({"n_predict": 101}, "n_predict"),
        ({"prompt": "x" * 11}, "prompt"),
        ({"prompt": ["x" * 6, "y" * 5]}, "prompt"),
        ({"prompt": list(range(11))}, "prompt"),
        ({"messages": [{"role": "user", "content": "x" * 6}] * 2}, "messages"),
        ({"input": ["x" * 11]}, "input"),
        ({"content": "x" * 11}, "content"),
        ({"stop": ["a"] * 5}, "stop"),
    ]
    for data, param in refused:
        with pytest.raises(Exception) as caught:
            limits.check(data)
        assert getattr(caught.value, "status_code", None) == 400, data
        assert getattr(caught.value, "param", None) == param, data
    RequestLimits().check({"max_tokens": 10**9, "prompt": "x" * 10**5, "stop": ["a"] * 9})


@pytest.mark.parametrize("way", ["asgi", "lane"])
def test_limits_refuse_on_every_generation_route_in_its_format(
    make_settings: MakeSettings, make_gguf: MakeGGUF, fake_child: FakeChild, way: str
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    settings = make_settings(max_tokens_limit=16, max_prompt_chars=50)
    long, many = "x" * 51, 17
    chat = [{"role": "user", "content": long}]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"messages": chat}),
        ("/v1/chat/completions", {"messages": [], "max_tokens": many}),
        ("/v1/chat/completions", {"messages": [], "stop": list("abcde")}),
        ("/v1/completions", {"prompt": long}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": many}),
        ("/v1/embeddings", {"input": [long]}),
        ("/chat/completions", {"messages": chat}),
        ("/completion", {"prompt": "hi", "n_predict": many}),
        ("/completions", {"prompt": long}),
        ("/completions", {"prompt": "hi", "n_predict": many}),
        ("/infill", {"input_prefix": long, "input_suffix": ""}),
        ("/infill", {"input_prefix": "def f(", "input_suffix": long}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": many}),
        ("/v1/responses", {"input": "hi", "instructions": long}),
        ("/responses", {"input": long}),
        ("/v1/messages", {"messages": [], "max_tokens": many}),
        ("/v1/messages", {"messages": chat, "max_tokens": 1}),
        ("/v1/messages", {"messages": [], "system": long, "max_tokens": 1}),
        ("/v1/messages/count_tokens", {"messages": chat}),
        ("/v1/chat/completions/input_tokens", {"messages": chat}),
        ("/chat/completions/input_tokens", {"messages": chat}),
        ("/v1/responses/input_tokens", {"input": long}),
        ("/responses/input_tokens", {"input": [{"role": "user", "content": long}]}),
        ("/apply-template", {"messages": chat}),
        ("/tokenize", {"content": long}),
        ("/embedding", {"content": long}),
        ("/embeddings", {"content": long}),
        ("/v1/rerank", {"query": long, "documents": ["a"]}),
        ("/rerank", {"query": "q", "documents": [long]}),
        ("/v1/reranking", {"query": long, "documents": []}),
        ("/reranking", {"query": long, "documents": []}),
        ("/api/v2/chat/tiny.Q4_1", {"messages": chat}),
        ("/api/v2/chat/tiny.Q4_1/stream", {"messages": [{"role": "user", "content": "hi"}],
                                           "n_predict": many}),
        ("/api/chat", {"messages": chat}),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}],
                       "options": {"max_tokens": many}}),
        ("/api/generate", {"prompt": long}),
        ("/api/embeddings", {"input": long}),
    ]  # fmt: skip
    checked = {path for (_, path), relay in RELAYS.items() if relay.checked}
    # /detokenize's token ids are no prompt: nothing of it is limited.
    assert {path for path, _ in cases} >= checked - {"/detokenize"}
    factory = FakeFactory(base_url=fake_child.url)
    with client_of(create_app(settings, factory=factory), settings, way) as client:
        for path, body in cases:
            reply = client.post(path, json={"model": "tiny.Q4_1", **body})
            assert reply.status_code == 400, (path, body, reply.text)
            assert "at most" in error_message(path, reply.json()), (path, body)
            if uses_anthropic(path):
                assert reply.json()["error"]["type"] == "invalid_request_error", path
    assert fake_child.requests == []  # nothing refused reached a child
    # Requests that name no limit are capped by the child: its default is the gateway's limit.
    assert factory.made == [] or all("--n-predict" in p.argv for p in factory.made)
    spec = launch_spec(settings, make_entry(), Path("/opt/llama-server"), Role.CHAT, 1)
    assert _last_value(build_argv(spec), "--n-predict") == "16"


# -- a bug answers a bare 500, in the surface's format ----------------------------------------


def test_a_bug_answers_a_bare_500_in_each_surfaces_format(
    tmp_path: Path,
    make_gguf: MakeGGUF,
    make_settings: MakeSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    settings = make_settings()
    secret = f"boom in {tmp_path}/secret.py"

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(secret)

    app = create_app(settings, factory=FakeFactory())
    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(app.state.catalog, "pick", broken)
        replies = {
            "/v1/chat/completions": client.post("/v1/chat/completions", json={"model": "x"}),
            "/completion": client.post("/completion", json={"prompt": "x"}),
            "/api/v2/models/x": client.get("/api/v2/models/x"),
            "/api/generate": client.post("/api/generate", json={"model": "x", "prompt": "x"}),
            "/api/models/x": client.get("/api/models/x"),
        }
    for path, reply in replies.items():
        assert reply.status_code == 500, path
        assert "boom" not in reply.text and "Traceback" not in reply.text, path
        body = reply.json()
        if path.startswith("/api/") and not path.startswith("/api/v2/"):
            assert body == {"detail": "Internal error in the gateway"}, path
        else:
            assert body["error"]["code"] == "internal_error", path


# -- a key per child, so that local users cannot use a child's loopback port -------------------


def test_child_key_file_is_private_and_gone_after_use() -> None:
    with child_key_file() as (key, path):
        assert path.read_text() == key + "\n" and len(key) >= 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


def test_relayed_requests_carry_the_childs_own_key(
    make_gguf: MakeGGUF, make_settings: MakeSettings, fake_child: FakeChild
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    settings = make_settings(api_keys=[SecretStr(INFERENCE)])
    fake_child.answer("POST", "/v1/chat/completions", Reply(json={"ok": 1}))
    factory = FakeFactory(base_url=fake_child.url)
    with TestClient(create_app(settings, factory=factory)) as client:
        body = {"model": "tiny.Q4_1", "messages": []}
        reply = client.post("/v1/chat/completions", json=body, headers={"x-api-key": INFERENCE})
        assert reply.status_code == 200
        [child] = factory.made
        key_file = Path(_last_value(child.argv, "--api-key-file"))
        assert not key_file.exists()  # read by the child at start, then removed
        state = client.app.state
        backend = state.manager.model(state.catalog.resolve("tiny.Q4_1")).backend
    [seen] = fake_child.received("POST", "/v1/chat/completions")
    assert backend.api_key and seen.headers["authorization"] == f"Bearer {backend.api_key}"
    assert INFERENCE not in str(seen.headers)  # the client's own key stays at the gateway
