"""The relay table (supervisor/relay/table.py): what it declares, checked against llama-server's
own route list; then, over both ways a request is served (the fast lane over ASGI, the relay
lane over a socket), that each relay reaches the child's same path with its body untouched,
GETs with their query, answers without host paths, the admin relays behind an admin key, a
transcription's model read from its form, and LoRA scales set with ``?model=``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from error_format import assert_error_format, error_message
from fake_child import FakeChild, Reply
from fakes import FakeFactory
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr
from served import Serve

from supervisor.app import create_app
from supervisor.children.spec import Role
from supervisor.config import Settings
from supervisor.relay import table as relays
from supervisor.relay.table import NOT_RELAYED, RELAYS, ModelFrom

MODEL = "tiny.Q4_1"
HEARING = "hear-Q4"  # a model with an audio projector
INFERENCE, ADMIN = "sk-inference-0123", "sk-admin-4567"
MakeGGUF = Callable[..., Path]

# llama-server's routes, as tools/server/server.cpp (llama.cpp of llama-cpp-python 0.3.36)
# registers them.
LLAMA_SERVER_ROUTES = {
    ("GET", "/health"), ("GET", "/v1/health"), ("GET", "/metrics"),
    ("GET", "/props"), ("POST", "/props"), ("GET", "/models"), ("GET", "/v1/models"),
    ("POST", "/completion"), ("POST", "/completions"), ("POST", "/v1/completions"),
    ("POST", "/chat/completions"), ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions/control"),
    ("POST", "/v1/responses"), ("POST", "/responses"),
    ("POST", "/v1/audio/transcriptions"), ("POST", "/audio/transcriptions"),
    ("POST", "/v1/messages"), ("POST", "/infill"),
    ("POST", "/embedding"), ("POST", "/embeddings"), ("POST", "/v1/embeddings"),
    ("POST", "/rerank"), ("POST", "/reranking"), ("POST", "/v1/rerank"), ("POST", "/v1/reranking"),
    ("POST", "/tokenize"), ("POST", "/detokenize"), ("POST", "/apply-template"),
    ("POST", "/chat/completions/input_tokens"), ("POST", "/v1/chat/completions/input_tokens"),
    ("POST", "/responses/input_tokens"), ("POST", "/v1/responses/input_tokens"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/lora-adapters"), ("POST", "/lora-adapters"),
    ("GET", "/slots"), ("POST", "/slots/:id_slot"),
    ("GET", "/v1/stream"), ("POST", "/v1/streams/lookup"), ("DELETE", "/v1/stream"),
    # router mode only
    ("POST", "/models"), ("POST", "/models/load"), ("POST", "/models/unload"),
    ("GET", "/models/sse"), ("DELETE", "/models"),
    # the web UI's, answered 403 unless turned on
    ("GET", "/cors-proxy"), ("POST", "/cors-proxy"), ("GET", "/tools"), ("POST", "/tools"),
}  # fmt: skip
# Of those, what the gateway answers itself (and says so in NOT_RELAYED).
ANSWERED_BY_THE_GATEWAY = {
    ("GET", "/health"), ("GET", "/v1/health"), ("GET", "/metrics"),
    ("GET", "/models"), ("GET", "/v1/models"),
}  # fmt: skip
JSON_POSTS = sorted(
    path for (method, path), r in RELAYS.items() if method == "POST" and r.model_from == "body"
)


def _named_in_not_relayed() -> set[tuple[str, str]]:
    """The (method, path) pairs NOT_RELAYED's keys name: "GET /a, /b, POST /c", "GET/POST /d";
    a path's parameter (``{id}``, ``:id``) read as ``{}``."""
    named = set()
    for key in NOT_RELAYED:
        methods: list[str] = []
        for token in re.split(r",?\s+", key):
            if re.fullmatch(r"[A-Z]+(?:/[A-Z]+)*", token):
                methods = token.split("/")
            elif token.startswith("/"):
                named |= {(method, _template(token)) for method in methods}
    return named


def _template(path: str) -> str:
    return re.sub(r"\{\w+\}|:\w+", "{}", path)


# -- the table -------------------------------------------------------------------------------


def test_each_method_and_path_is_declared_once() -> None:
    declared = [(relay.method, relay.path) for relay in relays._ROUTES]
    assert len(declared) == len(set(declared)) == len(RELAYS)


def test_every_llama_server_route_is_relayed_or_said_why_not() -> None:
    not_relayed = _named_in_not_relayed()
    assert set(RELAYS) <= LLAMA_SERVER_ROUTES  # no route llama-server does not have
    for method, path in sorted(LLAMA_SERVER_ROUTES - set(RELAYS)):
        assert (method, _template(path)) in not_relayed, (method, path)
    assert not_relayed >= ANSWERED_BY_THE_GATEWAY
    assert not (set(RELAYS) & not_relayed)  # a relayed route is never said not to be


def test_the_gateways_own_answers_are_routes_of_the_app(tmp_path: Path) -> None:
    app = create_app(Settings(models_dirs=[tmp_path], data_dir=tmp_path / "data"))
    routes = {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        for method in getattr(route, "methods", None) or ()
    }
    assert routes >= ANSWERED_BY_THE_GATEWAY


def test_gets_name_their_model_in_the_query_and_forms_in_the_form() -> None:
    for (method, path), relay in RELAYS.items():
        if method == "GET":
            assert relay.model_from is ModelFrom.QUERY, path
        if path.endswith("/transcriptions"):
            assert relay.model_from is ModelFrom.FORM and relay.needs == "audio", path
    assert RELAYS[("POST", "/lora-adapters")].model_from is ModelFrom.QUERY


def test_each_route_goes_to_its_kind_of_child() -> None:
    for (_, path), relay in RELAYS.items():
        if "rerank" in path:
            assert relay.role is Role.RERANK, path
        elif "embedding" in path:
            assert relay.role is Role.EMBEDDING, path
        else:
            assert relay.role is Role.CHAT, path
    assert {p for (_, p), r in RELAYS.items() if r.role is Role.EMBEDDING} == {
        "/v1/embeddings", "/embedding", "/embeddings",
    }  # fmt: skip
    assert len([r for r in RELAYS.values() if r.role is Role.RERANK]) == 4


# -- over both ways ------------------------------------------------------------------------


def write_projector(path: Path, *, audio: bool) -> None:
    """A tiny multimodal projector; the encoders it declares are what the registry reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_vision_encoder", not audio)
    writer.add_bool("clip.has_audio_encoder", audio)
    writer.add_string("clip.projector_type", "ultravox" if audio else "mlp")
    writer.add_tensor("mm.0.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def serve(serve: Serve, tmp_path: Path, make_gguf: MakeGGUF) -> Serve:
    """conftest's ``serve`` (and so its ``client``), with this file's models in place."""
    make_gguf(f"models/{MODEL}.gguf")
    make_gguf(f"models/hear/{HEARING}.gguf")
    write_projector(tmp_path / "models/hear/mmproj-hear-f16.gguf", audio=True)
    return serve


def test_each_post_reaches_the_childs_same_path_with_its_body_untouched(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    # Spacing, key order, escapes and number forms a re-encoding would change.
    body = b'{ "input":"\\u00e9t\\u00e9", "model" : "tiny.Q4_1",  "x": [1.50, 1e2] }'
    for path in JSON_POSTS:
        fake_child.answer("POST", path, Reply(json={"ok": 1}))
        reply = client.post(path, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 200 and reply.json() == {"ok": 1}, path
        [seen] = fake_child.received("POST", path)
        assert seen.body == body and seen.query == "", path
        assert seen.headers["content-type"] == "application/json", path


def test_props_keeps_its_query_and_loses_its_host_paths(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    props = {
        "model_path": "/srv/models/secret/tiny.Q4_1.gguf",
        "model_alias": MODEL,
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "total_slots": 1,
    }
    fake_child.answer("GET", "/props", Reply(json=props))
    reply = client.get("/props", params={"model": MODEL, "autoload": "false"})
    assert reply.status_code == 200
    assert reply.json() == {**props, "model_path": "tiny.Q4_1.gguf"}
    assert "/srv/" not in reply.text
    [seen] = fake_child.received("GET", "/props")
    assert seen.query == f"model={MODEL}&autoload=false"


def test_slots_need_an_admin_key(serve: Serve, fake_child: FakeChild) -> None:
    fake_child.answer("GET", "/slots", Reply(json=[{"id": 0, "is_processing": False}]))
    with serve(api_keys=[SecretStr(INFERENCE)], admin_keys=[SecretStr(ADMIN)]) as client:
        missing = client.get("/slots", params={"model": MODEL})
        inference = client.get("/slots", params={"model": MODEL}, headers={"x-api-key": INFERENCE})
        assert fake_child.received("GET", "/slots") == []
        admin = client.get("/slots", params={"model": MODEL}, headers={"x-api-key": ADMIN})
    assert missing.status_code == 401
    assert inference.status_code == 403
    assert_error_format("/slots", inference.json())
    assert inference.json()["error"]["code"] == "admin_key_required"
    assert admin.status_code == 200 and admin.json() == [{"id": 0, "is_processing": False}]
    assert len(fake_child.received("GET", "/slots")) == 1


BOUNDARY = "----gateway-test-boundary"
FORM = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def transcription(model: str) -> bytes:
    """A transcription's form: the audio file first, then its model and language."""
    parts = [
        ('name="file"; filename="a.wav"\r\nContent-Type: audio/wav', b"RIFF\x00\xff"),
        ('name="model"', model.encode()),
        ('name="language"', b"en"),
    ]
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
        + value
        + b"\r\n"
        for disposition, value in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/audio/transcriptions"])
def test_a_transcription_uses_the_model_its_form_names(
    client: httpx.Client, fake_child: FakeChild, factory: FakeFactory, path: str
) -> None:
    fake_child.answer("POST", path, Reply(json={"text": "hello"}))
    form = transcription(HEARING)
    reply = client.post(path, content=form, headers=FORM)
    assert reply.status_code == 200 and reply.json() == {"text": "hello"}
    [child] = factory.made
    assert "--mmproj" in child.argv and f"{HEARING}.gguf" in " ".join(child.argv)
    [seen] = fake_child.received("POST", path)
    assert seen.headers["content-type"] == FORM["content-type"]  # with its boundary
    assert seen.body == form  # the form untouched


def test_a_transcription_for_a_model_without_audio_is_a_400_naming_it(
    client: httpx.Client, fake_child: FakeChild, factory: FakeFactory
) -> None:
    path = "/v1/audio/transcriptions"
    reply = client.post(path, content=transcription(MODEL), headers=FORM)
    assert reply.status_code == 400
    message = error_message(path, reply.json())
    assert MODEL in message and "audio" in message
    assert reply.json()["error"]["param"] == "model"
    not_a_form = client.post(path, json={"model": HEARING})
    assert not_a_form.status_code == 400
    assert "multipart/form-data" in error_message(path, not_a_form.json())
    assert factory.made == [] and fake_child.requests == []


def test_lora_scales_are_set_with_the_model_in_the_query(
    serve: Serve, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", "/lora-adapters", Reply(json={"success": True}))
    admin = {"x-api-key": ADMIN, "content-type": "application/json"}
    scales = b'[{"id": 0, "scale": 0.5}]'
    with serve(admin_keys=[SecretStr(ADMIN)]) as client:
        reply = client.post(
            "/lora-adapters", params={"model": MODEL}, content=scales, headers=admin
        )
        bad = client.post("/lora-adapters", params={"model": MODEL}, content=b"[{", headers=admin)
    assert reply.status_code == 200 and reply.json() == {"success": True}
    [seen] = fake_child.received("POST", "/lora-adapters")
    assert seen.body == scales and seen.query == f"model={MODEL}"
    assert bad.status_code == 400
    assert "not valid JSON" in error_message("/lora-adapters", bad.json())


def test_a_rerank_answer_keeps_the_clients_own_texts(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    """A TEI-style /rerank with ``return_text`` answers the client's own documents: however
    path-like, they are not the host's paths and must come back as sent."""
    texts = ["/src/app/main.py", "/r/python/ is a forum"]
    ranked = [{"index": i, "score": 0.5, "text": text} for i, text in enumerate(texts)]
    fake_child.answer("POST", "/rerank", Reply(json=ranked))
    ask = {"model": MODEL, "query": "entry point", "texts": texts, "return_text": True}
    reply = client.post("/rerank", json=ask)
    assert reply.status_code == 200
    assert json.loads(reply.content) == ranked
