"""A property-based fuzz of every route in the gateway's OpenAPI document (issue 7, item 2).

Each operation gets requests built from its own schema (path and query parameters, and bodies
drawn from the request model's JSON schema, ``from_schema`` below) mixed with hostile ones:
arbitrary text for names, JSON of every shape, bytes that are no JSON at all, any content
type. The app runs in-process with fake children that always answer well, so whatever goes
wrong is the gateway's: no input may get a 5xx (a deliberate 503 with Retry-After, such as a
model that would not fit in memory with the asked context, is a refusal, not a failure), and
every error must be in its surface's format. Derandomized and bounded, so every run tries the
same requests.

The fake children read bodies as llama-server does (``llama_reads``): JSON that its parser
refuses (``NaN``, ``1e400``, an unpaired surrogate, UTF-16) is a 500 there, so the gateway must
refuse it first (issue 21). Integer fields also get floats and booleans.
"""

from __future__ import annotations

import json
import math
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
from served import gateway_settings
from sse import DONE, event

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.relay.table import RELAYS

MODEL = "tiny.Q4_1"
EXAMPLES = 25  # per operation
# Follows a model's log until the client leaves: it never ends on its own.
UNBOUNDED = {("get", "/api/v2/models/{model_id}/logs/stream"), ("get", "/api/v2/activity/stream")}
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


def llama_reads(body: bytes) -> Any:
    """The body as llama-server's parser (nlohmann::json) reads it, or a ValueError where it
    refuses: strict JSON in UTF-8 (one leading byte order mark skipped), finite numbers, no
    unpaired surrogate (Python keeps one in the string; UTF-8 cannot encode it)."""
    value = json.loads(body.decode("utf-8-sig"), parse_constant=_refuse, parse_float=_finite)
    json.dumps(value, ensure_ascii=False).encode()
    return value


def _refuse(name: str) -> None:
    raise ValueError(f"syntax error: {name}")


def _finite(text: str) -> float:
    if math.isinf(float(text)):
        raise ValueError(f"number overflow parsing '{text}'")
    return float(text)


def well_behaved(request: Request) -> Reply | Stream:
    """llama-server's answer to any inference request: streamed when asked; a 500 for a
    body its parser refuses, as llama-server answers (a GET's, or a form's, it does not
    parse as JSON)."""
    if request.method == "GET" or request.headers.get("content-type", "").startswith("multipart/"):
        return Reply(json=CHAT)
    try:
        asked = llama_reads(request.body)
    except ValueError as exc:
        return Reply(
            500, json={"error": {"code": 500, "message": str(exc), "type": "server_error"}}
        )
    if isinstance(asked, dict) and asked.get("stream") is True:
        return Stream([event(CHUNK), DONE])
    return Reply(json=CHAT)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz")
    models = root / "models"
    _write_model(models / f"{MODEL}.gguf")
    _write_model(models / "v2" / "next.gguf")
    settings_ = gateway_settings(
        root,
        default_model=MODEL,  # requests naming no model go to it, as most deployments set
        max_body_bytes=64 * 1024,
        queue_timeout_s=5,
        drain_timeout_s=5,
    )
    with FakeChild() as child:
        for method, path in RELAYS:  # every route llama-server serves and the gateway relays
            child.answer(method, path, well_behaved)
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


# For integer fields: a fraction, booleans, integral floats (big, small, negative).
NOT_INTEGERS = [6.5, True, False, 300.0, 1e6, -1.0, 0.5, 1e300]
HOSTILE_NAMES = [
    MODEL, f"{MODEL}.gguf", "next", "../x", "..", "%2e%2e%2f", "/etc/passwd", "a\x00b",
    "..\\..\\x", "x" * 300, "", " ", "é", "\u202e", "s1",
]  # fmt: skip
# Unpaired surrogates (json.dumps escapes them, as Python clients send them) and a valid pair.
SURROGATES = ["\ud800", "\udc00", "\ud800x", "x\udfff", "\ud83d\ude00"]
json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(SURROGATES)
)  # fmt: skip
any_json = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
names = st.sampled_from(HOSTILE_NAMES) | st.text(max_size=40)
# Bodies no route can take: broken, not UTF-8, not an object, nested past json's recursion.
MALFORMED = [b"{", b"\xff\xfe", b"[]", b"null", b'"x"', b"[" * 3000, b'{"a":' * 800]
# Bodies that Python's json reads and llama-server refuses: each a request every body-reading
# route would otherwise take (unknown keys aside), with the value where it reaches the child.
_REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi",
            "input": "hi", "content": "hi", "tokens": [1]}  # fmt: skip
_VALID = json.dumps(_REQUEST).encode()
NON_STANDARD = [
    *(_VALID[:-1] + b', "x": ' + value + b"}" for value in
      (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"[1.5e999]")),
    *(_VALID.replace(b'"hi"', value) for value in
      (b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\u0041"', b'"\\uDBFF\\uD800"', b'"a\\udfff"')),
    _VALID.replace(b'"prompt"', b'"\\ud800"'),  # in a key
    *(_VALID.decode().encode(codec) for codec in
      ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")),
]  # fmt: skip
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
    if kind == "integer":  # and floats and booleans, which llama-server reads as integers
        return st.integers(low, high) | st.integers(low, high) | st.sampled_from(NOT_INTEGERS)
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
    junk = st.binary(max_size=64) | st.sampled_from(MALFORMED) | st.sampled_from(NON_STANDARD)
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


@pytest.mark.parametrize(("method", "template"), operations())
def test_every_operation_refuses_json_that_llama_server_refuses(
    client: TestClient, method: str, template: str
) -> None:
    """Issue 21: Python's json reads ``NaN``, ``1e400``, unpaired surrogates and UTF-16;
    llama-server answers them with a 500. A route that reads its body refuses them first, with
    a 400 in its format; no route answers a 5xx."""
    path = template.replace("{model_id}", MODEL).replace("{model_name}", MODEL)
    path = path.replace("{session_id}", "no-such-session")
    spec = client.app.openapi()  # type: ignore[attr-defined]
    reads_body = _body_schema(spec["paths"][template][method]) is not None
    for body in NON_STANDARD:
        reply = client.request(method.upper(), path, content=body)
        where = f"{method} {path} {body[:40]!r}: {reply.status_code} {reply.text}"
        assert reply.status_code < 500, where
        if reply.status_code >= 400:
            assert_error_format(path, reply.json())
        if reads_body:
            assert reply.status_code == 400 and "not valid JSON" in reply.text, where


# Integer fields the child judges: a seed or a top_k of 6.5 costs nothing, unlike a token count.
LEFT_TO_THE_CHILD = {"seed", "top_k", "top_n"}
# Bodies that name nothing else (the load parameters take no other keys).
BASES: dict[str, dict[str, Any]] = {
    "/api/v2/models/{model_id}/load": {},
    "/api/v2/models/{model_id}/swap": {"path": f"{MODEL}.gguf"},
}


def integer_fields(spec: Any, schema: dict[str, Any]) -> list[str]:
    """The body's fields (and its ``options``' fields, as ``options.x``) that take an integer."""
    found = []
    for key, value in _resolve(spec, schema).get("properties", {}).items():
        if key == "options":
            found += [f"options.{name}" for name in integer_fields(spec, value)]
        elif any(option.get("type") == "integer" for option in _options(value)):
            found.append(key)
    return found


def _resolve(spec: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` itself, or what its ``$ref`` (or the first ``$ref`` in its ``anyOf``) names."""
    ref = next((option["$ref"] for option in _options(schema) if "$ref" in option), None)
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def _options(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [schema, *schema.get("anyOf", [])]


def _with_field(base: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    if field.startswith("options."):
        return {**base, "options": {field.removeprefix("options."): value}}
    return {**base, field: value}


@pytest.mark.parametrize(("method", "template"), operations())
def test_every_integer_field_takes_floats_and_booleans_without_a_5xx(
    client: TestClient, method: str, template: str
) -> None:
    """Issue 21: llama-server reads 6.5 as 6 and ``true`` as 1, so a token count the gateway
    judges (``max_tokens``, ``n_predict``, the load parameters, ``/api``'s options) must not
    take them: a 400 naming the field. Every float and boolean: no 5xx."""
    spec = client.app.openapi()  # type: ignore[attr-defined]
    schema = _body_schema(spec["paths"][template][method])
    if schema is None:
        return
    path = template.replace("{model_id}", MODEL)
    base = BASES.get(template, _REQUEST)
    for field in integer_fields(spec, schema):
        for value in NOT_INTEGERS:
            reply = client.request(method.upper(), path, json=_with_field(base, field, value))
            where = f"{path} {field}={value!r}: {reply.status_code} {reply.text}"
            assert reply.status_code < 500, where
            if reply.status_code >= 400:
                assert_error_format(path, reply.json())
            not_a_count = isinstance(value, bool) or not float(value).is_integer()
            if not_a_count and field not in LEFT_TO_THE_CHILD:
                assert reply.status_code == 400 and field in reply.text, where
