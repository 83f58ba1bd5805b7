"""The model routes go through the manager: a load with other parameters reaches every child
the model runs, and reading a model's status creates nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from fakes import FakeFactory, FakeProcess
from fastapi.testclient import TestClient

from supervisor.app import create_app
from supervisor.children.spec import Role
from supervisor.config import Settings
from supervisor.lifecycle.manager import ModelManager

MakeGGUF = Callable[..., Path]
MODEL = "tiny.Q4_1"


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def client(tmp_path: Path, make_gguf: MakeGGUF, factory: FakeFactory) -> Iterator[TestClient]:
    make_gguf(f"models/{MODEL}.gguf")
    settings = Settings(
        models_dirs=[tmp_path / "models"],
        llama_server=Path(sys.executable),
        data_dir=tmp_path / "data",
        parallel=1,
    )
    with TestClient(create_app(settings, factory=factory)) as test_client:
        yield test_client


def ctx_size(process: FakeProcess) -> str | None:
    argv = process.argv
    return argv[argv.index("--ctx-size") + 1] if "--ctx-size" in argv else None


def manager(client: TestClient) -> ModelManager:
    return cast(ModelManager, client.app.state.manager)  # type: ignore[attr-defined]


def start_embedding_child(client: TestClient) -> None:
    """As an /v1/embeddings request would (on the app's own event loop)."""
    [chat] = manager(client).models()
    portal = client.portal
    assert portal is not None
    lease = portal.call(manager(client).acquire, chat.entry, Role.EMBEDDING)
    portal.call(lease.release)


def test_a_load_with_other_parameters_moves_the_embedding_child_too(
    client: TestClient, factory: FakeFactory
) -> None:
    path = f"/api/v2/models/{MODEL}.gguf/load"
    assert client.post(path, json={"n_ctx": 512}).status_code == 200
    start_embedding_child(client)
    assert client.post(path, json={"n_ctx": 1024}).status_code == 200
    for name in (MODEL, f"{MODEL}#embedding"):  # (placement may have restarted some between)
        *old, new = [p for p in factory.made if p.name == name]
        assert (ctx_size(new), new.alive) == ("1024", True)
        assert old and not any(p.alive for p in old)


@pytest.mark.parametrize("path", ["/api/models", "/api/v2/models", "/v1/models"])
def test_listing_models_loads_nothing_and_creates_no_model(
    client: TestClient, factory: FakeFactory, path: str
) -> None:
    assert client.get(path).status_code == 200
    assert client.get(f"/api/v2/models/{MODEL}.gguf").status_code == 200
    assert manager(client).models() == []
    assert factory.made == []
