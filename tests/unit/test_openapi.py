"""The generated OpenAPI document: every surface tagged, bodies and replies documented, every
reference resolvable; example requests (from shared/seeds) fit the request models, and live
replies the reply models."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeFactory
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from served import MakeSettings

from supervisor.app import create_app
from supervisor.surfaces import schemas

MakeGGUF = Callable[..., Path]
TAGS = {"shared", "openai", "native", "anthropic", "api/v2", "api"}
METHODS = {"get", "post", "put", "patch", "delete"}
# POST routes that take no body: the model or session is in the path.
BODILESS = {
    "/api/v2/models/{model_id}/unload",
    "/api/v2/reload",
    "/api/models/{model_name}/load",
    "/api/models/{model_name}/unload",
}
# Forms, not JSON: the audio goes to the child as the client sent it.
MULTIPART = {"/v1/audio/transcriptions", "/audio/transcriptions"}
# POST routes whose JSON body is a list: llama-server's LoRA scales, [{"id", "scale"}].
LIST_BODIES = {"/lora-adapters"}
# llama-server's answer to a control action is its task's result, of no fixed shape.
NO_REPLY_MODEL = {"/v1/chat/completions/control"}
STREAM_ONLY = {
    "/api/v2/chat/{model_id}/stream",
    "/api/v2/models/{model_id}/logs/stream",
    "/api/v2/activity/stream",
    "/api/v2/models/pull",
}
TEXT_ONLY = {"/metrics"}


@pytest.fixture
def document(make_settings: MakeSettings) -> dict[str, Any]:
    return create_app(make_settings(), factory=FakeFactory()).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_document_is_cached_and_tags_are_described(make_settings: MakeSettings) -> None:
    app = create_app(make_settings(), factory=FakeFactory())
    document = app.openapi()
    assert app.openapi() is document
    assert {tag["name"] for tag in document["tags"]} == TAGS


def test_each_tag_names_a_url_of_its_surface(document: dict[str, Any]) -> None:
    paths: dict[str, list[str]] = {}
    for path, _, operation in operations(document):
        paths.setdefault(operation["tags"][0], []).append(path)
    for tag in document["tags"]:
        # `GET /health`, `/v1`: a backticked URL, the route itself or a prefix of it.
        urls = [span.split()[-1] for span in re.findall(r"`([^`]+)`", tag["description"])]
        named = [p for p in paths[tag["name"]] for u in urls if p == u or p.startswith(u + "/")]
        assert named, tag


def test_every_operation_has_exactly_one_surface_tag(document: dict[str, Any]) -> None:
    found = list(operations(document))
    assert len(found) >= 30
    for path, method, operation in found:
        tags = operation.get("tags", [])
        assert len(tags) == 1 and tags[0] in TAGS, (method, path, tags)
        assert (tags[0] == "anthropic") == path.startswith("/v1/messages"), (method, path)
    assert {op["tags"][0] for _, _, op in found} == TAGS


def test_post_bodies_are_documented_and_resolve(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        if method != "post" or path in BODILESS:
            assert "requestBody" not in operation, (method, path)
            continue
        body = operation.get("requestBody")
        assert body is not None, (method, path)
        media = "multipart/form-data" if path in MULTIPART else "application/json"
        assert set(body["content"]) == {media}, (method, path)
        target = resolve(document, body["content"][media]["schema"]["$ref"])
        if path in LIST_BODIES:
            assert target["type"] == "array", path
            target = resolve(document, target["items"]["$ref"])
        assert target["type"] == "object" and target["properties"], path
        if path in MULTIPART:
            assert {"file", "model"} <= set(target["properties"]), path


def test_every_200_reply_has_a_schema(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        content = operation["responses"]["200"]["content"]
        if path in STREAM_ONLY:
            assert set(content) == {"text/event-stream"}
            continue
        if path in TEXT_ONLY:
            assert set(content) == {"text/plain"}
            continue
        if path in NO_REPLY_MODEL:
            assert content["application/json"]["schema"] == {}, path
            continue
        schema = content["application/json"]["schema"]
        assert "$ref" in schema or schema.get("items", {}).get("$ref"), (method, path)
        assert "422" not in operation["responses"], (method, path)


def test_error_replies_use_each_surface_error_model(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        tag = operation["tags"][0]
        expected = {"api": "DetailError", "anthropic": "AnthropicError"}.get(tag, "OpenAIError")
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == f"{schemas.REF}{expected}", (method, path, code)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert len(found) > 100
    for ref in found:
        resolve(document, ref)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


EXAMPLE_REQUESTS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (  # /api/v2: load
        schemas.LoadParams,
        {
            "n_gpu_layers": 32,
            "n_ctx": 2048,
            "n_batch": 512,
            "threads": 4,
            "use_mlock": True,
            "f16_kv": True,
        },
    ),
    (  # /api/v2: chat
        schemas.V2ChatRequest,
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "temperature": 0.7,
            "top_p": 0.95,
            "n_predict": 100,
        },
    ),
    (  # /api: chat
        schemas.ApiChatRequest,
        {
            "model": "llama-3-8b",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
            "session_id": "optional-session-id",
            "stream": True,
            "options": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512},
        },
    ),
    (  # /api: generate
        schemas.ApiGenerateRequest,
        {
            "model": "llama-3-8b",
            "prompt": "Once upon a time",
            "stream": False,
            "options": {"temperature": 0.8, "max_tokens": 100},
        },
    ),
    (schemas.ApiEmbeddingsRequest, {"model": "llama-3-8b", "input": "Hello world"}),
    (  # OpenAI (/v1): chat
        schemas.ChatCompletionRequest,
        {
            "model": "llama-2-7b.Q4_K_M",
            "messages": [{"role": "user", "content": "What is machine learning?"}],
            "temperature": 0.7,
            "max_tokens": 150,
            "top_p": 0.95,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
        },
    ),
    (
        schemas.CompletionRequest,
        {
            "model": "llama-2-7b.Q4_K_M",
            "prompt": "Once upon a time",
            "temperature": 0.7,
            "max_tokens": 100,
        },
    ),
    (  # llama.cpp native: completion, and chat without a model
        schemas.NativeCompletionRequest,
        {
            "prompt": "The capital of France is",
            "n_predict": 50,
            "temperature": 0.7,
            "top_k": 40,
            "top_p": 0.95,
        },
    ),
    (
        schemas.ChatCompletionRequest,
        {"messages": [{"role": "user", "content": "Count to 5"}], "stream": True},
    ),
]


@pytest.mark.parametrize(("model", "body"), EXAMPLE_REQUESTS)
def test_example_requests_fit_their_models(model: type[BaseModel], body: dict[str, Any]) -> None:
    model.model_validate(body)


def test_request_models_say_what_the_routes_reject() -> None:
    with pytest.raises(ValidationError):
        schemas.LoadParams.model_validate({"n_gpu_layer": 3})  # unknown keys are a 400
    with pytest.raises(ValidationError):
        schemas.ApiChatRequest.model_validate(
            {"messages": [{"role": "user", "content": "Hi"}], "options": {"top_p": 2}}
        )
    extra = schemas.ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "Hi"}], "mirostat": 2}
    )
    assert extra.model_extra == {"mirostat": 2}  # passes through to llama-server


@pytest.fixture
def client(make_gguf: MakeGGUF, make_settings: MakeSettings) -> Iterator[TestClient]:
    make_gguf("models/tiny.Q4_1.gguf")
    with TestClient(create_app(make_settings(), factory=FakeFactory())) as test_client:
        yield test_client


def test_live_replies_fit_the_documented_models(client: TestClient) -> None:
    load = client.post("/api/v2/models/tiny.Q4_1.gguf/load", json={"n_ctx": 512})
    schemas.LoadResponse.model_validate(load.json())
    checks: list[tuple[str, type[BaseModel]]] = [
        ("/", schemas.RootInfo),
        ("/health", schemas.Health),
        ("/v1/models", schemas.ModelList),
        ("/v1/models/tiny.Q4_1", schemas.ModelObject),
        ("/v1/stats", schemas.Stats),
        ("/api/v2/models", schemas.V2ModelsList),
        ("/api/v2/models/tiny.Q4_1.gguf", schemas.V2ModelInfo),
        ("/api/v2/metrics", schemas.Metrics),
        ("/api/v2/health", schemas.V2Health),
        ("/api/models", schemas.ApiModelList),
        ("/api/models/tiny.Q4_1", schemas.ApiModel),
        ("/api/sessions", schemas.SessionList),
    ]
    for path, model in checks:
        reply = client.get(path)
        assert reply.status_code == 200, path
        model.model_validate(reply.json())
    unload = client.post("/api/v2/models/tiny.Q4_1.gguf/unload")
    schemas.UnloadResponse.model_validate(unload.json())
    schemas.ApiLoadResponse.model_validate(client.post("/api/models/tiny.Q4_1/load").json())
    schemas.OpenAIError.model_validate(client.get("/v1/models/nope").json())
    schemas.DetailError.model_validate(client.get("/api/models/nope").json())
    served = client.get("/openapi.json").json()
    assert "ChatCompletionRequest" in served["components"]["schemas"]
