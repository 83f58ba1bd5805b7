"""The integration tier: a real gateway process, real llama-server children, SmolLM2.

Without a built llama-server these tests are skipped, unless
LLAMA_SUPERVISOR_REQUIRE_INTEGRATION=1 (set by `make test` and CI), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import RunningGateway

from supervisor.children.binary import find_llama_server
from supervisor.config import default_cache_dir
from supervisor.errors import SupervisorError
from supervisor.models.demo import fetch_demo_model

REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    try:
        return find_llama_server(None, default_cache_dir())
    except SupervisorError as exc:
        _unavailable(exc.message)
        raise


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    try:
        fetch_demo_model(models, default_cache_dir(), say=lambda _: None)
    except SupervisorError as exc:
        _unavailable(exc.message)
    return models


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    running = RunningGateway(llama_server_bin, demo_model_dir, log)
    yield running
    running.stop()
