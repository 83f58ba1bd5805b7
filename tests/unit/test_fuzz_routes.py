"""A property-based fuzz of every route in the gateway's OpenAPI document (issue 7, item 2).

Each operation gets requests built from its own schema (path and query parameters, and bodies
drawn from the request model's JSON schema, ``from_schema`` below) mixed with hostile ones:
arbitrary text for names, JSON of every shape, bytes that are no JSON at all, any content
type. The app runs in-process with fake children that always answer well, so whatever goes
wrong is the gateway's: no input may get a 5xx (a deliberate 503 with Retry-After, such as a
model that would not fit in memory with the asked context, is a refusal, not a failure), and
every error must be in its surface's format. Derandomized and bounded, so every run tries the
same requests.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from error_format import assert_error_format
from fake_child import FakeChild, Reply, Request, Stream
from fakes import FakeFactory
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.app import create_app
from supervisor.config import Settings

MODEL = "tiny.Q4_1"
EXAMPLES = 25  # per operation
# Follows a model's log until the client leaves: it never ends on its own.
UNBOUNDED = {("get", "/api/v2/models/{model_id}/logs/stream")}
# Refusals that are the gateway doing its job, not failing at it (guide/API.md).
DELIBERATE_5XX = {(503, "insufficient_memory")}

CHAT = {
    "id": "c1",
    "object": "chat.completion",
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "text": "hi", "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    "content": "hi",
    "tokens": [1, 2],
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
    "embedding": [0.1, 0.2],
}  # fmt: skip
CHUNK = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}


def well_behaved(request: Request) -> Reply | Stream:
    """llama-server's answer to any inference request: streamed when asked."""
    if json.loads(request.body).get("stream") is True:
        return Stream([f"data: {json.dumps(CHUNK)}\n\n".encode(), b"data: [DONE]\n\n"])
    return Reply(json=CHAT)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz")
    models = root / "models"
    _write_model(models / f"{MODEL}.gguf")
    _write_model(models / "v2" / "next.gguf")
    settings_ = Settings(
        models_dirs=[models],
        llama_server=Path(sys.executable),
        data_dir=root / "data",
        default_model=MODEL,  # requests naming no model go to it, as most deployments set
        max_body_bytes=64 * 1024,
        queue_timeout_s=5,
        drain_timeout_s=5,
    )
    with FakeChild() as child:
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                     "/chat/completions", "/completion", "/tokenize", "/detokenize",
                     "/embedding"):  # fmt: skip
            child.answer("POST", path, well_behaved)
        app = create_app(settings_, factory=FakeFactory(base_url=child.url))
        with TestClient(app) as client:
            yield client


def _write_model(path: Path) -> None:
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_tensor("weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def operations() -> list[tuple[str, str]]:
    """(method, path template) of every operation in the OpenAPI document."""
    app = create_app(Settings(models_dirs=[], llama_server=Path(sys.executable)))
    found = [
        (method, path)
        for path, ops in app.openapi()["paths"].items()
        for method in ops
        if (method, path) not in UNBOUNDED
    ]
    assert len(found) > 30  # the document lists every surface
    return found


HOSTILE_NAMES = [
    MODEL, f"{MODEL}.gguf", "next", "../x", "..", "%2e%2e%2f", "/etc/passwd", "a\x00b",
    "..\\..\\x", "x" * 300, "", " ", "é", "\u202e", "s1",
]  # fmt: skip
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
any_json = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
names = st.sampled_from(HOSTILE_NAMES) | st.text(max_size=40)
# Bodies no route can take: broken, not UTF-8, not an object, nested past json's recursion.
MALFORMED = [b"{", b"\xff\xfe", b"[]", b"null", b'"x"', b"[" * 3000, b'{"a":' * 800]
content_types = st.sampled_from(
    [None, "application/json", "text/plain", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/json; charset=latin-1"]
)  # fmt: skip


def from_schema(schema: dict[str, Any], spec: Any) -> st.SearchStrategy[Any]:
    """Values of the JSON-schema subset pydantic writes for the request models: ``$ref``,
    ``anyOf``, and typed objects, arrays, strings and numbers with their bounds. A ``model``
    field draws from the hostile names, so valid bodies also name real and unreal models."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(spec["components"]["schemas"][name], spec))
    if "anyOf" in schema:
        return st.one_of([from_schema(option, spec) for option in schema["anyOf"]])
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=30)
    if kind == "integer":
        return st.integers(low, high)
    if kind == "number":
        return st.floats(low, high, allow_nan=False) | st.integers(low, high)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), spec)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=3)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        fields = {
            key: names if key == "model" else from_schema(value, spec)
            for key, value in properties.items()
        }
        required = {key: fields[key] for key in schema.get("required", ())}
        optional = {key: value for key, value in fields.items() if key not in required}
        return st.fixed_dictionaries(required, optional=optional)
    return any_json


def _body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema: dict[str, Any] | None = content.get("application/json", {}).get("schema")
    return schema


def bodies(spec: Any, operation: dict[str, Any]) -> st.SearchStrategy[bytes | None]:
    """The body's schema where there is one, any JSON, and bytes that are not JSON."""
    encoded = any_json.map(lambda value: json.dumps(value).encode())
    junk = st.binary(max_size=64) | st.sampled_from(MALFORMED)
    choices: list[st.SearchStrategy[bytes | None]] = [st.none(), encoded, junk]
    schema = _body_schema(operation)
    if schema is not None:
        valid = from_schema(schema, spec).map(lambda value: json.dumps(value).encode())
        choices = [valid, valid, *choices]  # twice: most requests should get past parsing
    return st.one_of(choices)


def query(spec: Any, operation: dict[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    params = [p for p in operation.get("parameters", []) if p["in"] == "query"]
    if not params:
        return st.just({})
    values = {
        p["name"]: st.one_of(from_schema(p["schema"], spec).map(str), st.text(max_size=10))
        for p in params
    }
    return st.fixed_dictionaries({}, optional=values)


@pytest.mark.parametrize(("method", "template"), operations())
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_input_gets_a_5xx_and_every_error_is_in_its_surface_format(
    client: TestClient, method: str, template: str, data: st.DataObject
) -> None:
    spec = client.app.openapi()  # type: ignore[attr-defined]
    operation = spec["paths"][template][method]
    path = template
    for param in (p["name"] for p in operation.get("parameters", []) if p["in"] == "path"):
        path = path.replace(f"{{{param}}}", quote(data.draw(names, label=param), safe=""))
    params = data.draw(query(spec, operation), label="query")
    body = data.draw(bodies(spec, operation), label="body")
    content_type = data.draw(content_types, label="content-type")
    headers = {"Content-Type": content_type} if content_type and body is not None else {}
    reply = client.request(method.upper(), path, params=params, content=body, headers=headers)
    answered_path = reply.request.url.path  # the client drops "." and ".." segments
    if reply.status_code >= 500:
        code = reply.json().get("error", {}).get("code") if "error" in reply.json() else None
        assert (reply.status_code, code) in DELIBERATE_5XX, reply.text
        assert "retry-after" in reply.headers
    if reply.status_code >= 400:
        assert_error_format(answered_path, reply.json())


@pytest.mark.parametrize(("method", "template"), operations())
def test_every_operation_survives_every_malformed_body(
    client: TestClient, method: str, template: str
) -> None:
    """The malformed bodies on every operation, each once (the fuzz above draws them only
    now and then): a 4xx where the route reads its body, never a 5xx."""
    path = template.replace("{model_id}", MODEL).replace("{model_name}", MODEL)
    path = path.replace("{session_id}", "no-such-session")
    for body in MALFORMED:
        reply = client.request(method.upper(), path, content=body)
        assert reply.status_code < 500, f"{body[:10]!r}: {reply.status_code} {reply.text}"
        if reply.status_code >= 400:
            assert_error_format(path, reply.json())
