"""The passthrough routes' short way in
(supervisor/relay/asgi_shortcut.py) answers as FastAPI's routes
would: the same routes, errors in the surface's format, the same metrics labels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from error_format import assert_error_format, error_message, uses_anthropic
from fake_child import FakeChild, Reply
from fakes import FakeFactory
from served import gateway_client

from supervisor.relay.table import RELAYS

MakeGGUF = Callable[..., Path]


@pytest.fixture(params=["asgi", "lane"])
def client(
    request: pytest.FixtureRequest, tmp_path: Path, make_gguf: MakeGGUF, fake_child: FakeChild
) -> Iterator[httpx.Client]:
    """Both ways a relayed POST is served: the fast lane over ASGI, and the relay lane over a
    socket."""
    make_gguf("models/tiny.Q4_1.gguf")
    with gateway_client(
        request.param, tmp_path, FakeFactory(base_url=fake_child.url)
    ) as http_client:
        yield http_client


def test_every_relay_is_also_a_declared_route(client: httpx.Client) -> None:
    documented = client.get("/openapi.json").json()["paths"]
    assert all(method.lower() in documented[path] for method, path in RELAYS)


JSON_BODY_RELAYS = sorted(path for (method, path), r in RELAYS.items() if r.model_from == "body")


@pytest.mark.parametrize("path", JSON_BODY_RELAYS)
def test_bad_bodies_and_unknown_models_get_the_surface_errors(
    client: httpx.Client, path: str
) -> None:
    bad = client.post(path, content=b"{not json")
    assert bad.status_code == 400
    assert_error_format(path, bad.json())
    assert "not valid JSON" in error_message(path, bad.json())
    unknown = client.post(path, json={"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404
    assert_error_format(path, unknown.json())
    assert error_message(path, unknown.json()) == "Model not found: nope"
    if uses_anthropic(path):
        assert unknown.json()["error"]["type"] == "not_found_error"
    else:
        assert unknown.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("path", ["/props", "/slots", "/lora-adapters"])
def test_gets_name_their_model_in_the_query(client: httpx.Client, path: str) -> None:
    unknown = client.get(path, params={"model": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_other_methods_fall_through_to_fastapi(client: httpx.Client) -> None:
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["message"].startswith("Method GET not allowed")


def test_relayed_requests_are_labelled_with_their_route(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    fake_child.answer("POST", "/tokenize", Reply(json={"tokens": [1, 2]}))
    assert client.post("/tokenize", json={"model": "tiny.Q4_1", "content": "hi"}).json() == {
        "tokens": [1, 2]
    }
    metrics = client.get("/metrics").text
    assert (
        'llama_supervisor_requests_total{method="POST",model="tiny.Q4_1",route="/tokenize",'
        'status="200"} 1.0' in metrics
    )
