"""Issue 17: placement with real llama-server children. Two busy models split the cores
(each child's threads and the affinity of every one of its threads, read from /proc), the
first model is re-placed beside itself while requests stream on both, nothing is lost, and
the last busy model gets every core back."""

from __future__ import annotations

import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from harness import RunningGateway, wait_for
from sse import chat_body

from supervisor.models.demo import MODEL_FILE
from supervisor.placement.cores import CoreReader
from supervisor.placement.plan import ChildDemand, CpuShare, share_cores

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]
MODELS = ("alpha", "beta")
CONFIG = "parallel = 2\nctx_size = 1024\n"
SETTLE_S = 30.0


@pytest.fixture
def two_models(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> tuple[RunningGateway, Path]:
    models = tmp_path / "models"
    models.mkdir()
    for name in MODELS:
        (models / f"{name}.gguf").hardlink_to(demo_model_dir / MODEL_FILE)
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    gateway = RunningGateway(
        llama_server_bin, models, tmp_path / "gateway.log", "--config", str(config)
    )
    return gateway, models


def child_of(gateway: RunningGateway, model: str) -> dict[str, Any]:
    info = httpx.get(f"{gateway.url}/api/v2/models/{model}", timeout=30).json()
    children = info["state"]["children"]
    return next((c for c in children if c["role"] == "chat"), {})


def placed_as(gateway: RunningGateway, model: str, share: CpuShare) -> bool:
    child = child_of(gateway, model)
    return child.get("threads") == share.threads and child.get("cpus") == list(share.cpus)


def thread_cpus(pid: int) -> set[tuple[int, ...]]:
    """The CPU affinity of every thread of ``pid``, as the kernel reports it."""
    process = psutil.Process(pid)
    return {tuple(sorted(psutil.Process(t.id).cpu_affinity())) for t in process.threads()}


def chat(url: str, model: str, stream: bool = False) -> int:
    body = chat_body(model, max_tokens=8)
    if not stream:
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).status_code
    body["stream"] = True
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as reply:
        text = "".join(reply.iter_text())
    return reply.status_code if text.rstrip().endswith("data: [DONE]") else -1


def test_two_busy_models_split_the_cores_and_nothing_is_lost(
    two_models: tuple[RunningGateway, Path],
) -> None:
    gateway, _ = two_models
    cores = CoreReader().host_cores().cpus
    alone = share_cores(cores, [ChildDemand("alpha")])["alpha"]
    split = share_cores(cores, [ChildDemand(m) for m in MODELS])
    try:
        assert chat(gateway.url, "alpha") == 200
        first = child_of(gateway, "alpha")
        assert (first["threads"], tuple(first["cpus"])) == (alone.threads, alone.cpus)
        assert thread_cpus(int(first["pid"])) == {alone.cpus}

        statuses: list[int] = []
        stop = threading.Event()

        def client(model: str) -> None:
            while not stop.is_set():
                statuses.append(chat(gateway.url, model, stream=True))

        clients = [threading.Thread(target=client, args=(m,)) for m in MODELS * 2]
        for thread in clients:
            thread.start()
        try:
            for model in MODELS:
                want = split[model]
                settled = wait_for(partial(placed_as, gateway, model, want), SETTLE_S, 0.2)
                assert settled, child_of(gateway, model)
                child = child_of(gateway, model)
                assert thread_cpus(int(child["pid"])) == {want.cpus}
                argv = psutil.Process(int(child["pid"])).cmdline()
                assert argv[argv.index("--threads") + 1] == str(want.threads)
                assert argv[argv.index("--threads-batch") + 1] == str(want.threads)
            if split["alpha"].threads != alone.threads:
                assert child_of(gateway, "alpha")["pid"] != first["pid"]  # re-placed
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=120)
        assert statuses and set(statuses) == {200}, statuses  # every stream whole

        # beta goes: alpha, busy again, gets every core back
        reply = httpx.post(f"{gateway.url}/api/v2/models/beta/unload", timeout=60)
        assert reply.status_code == 200
        assert chat(gateway.url, "alpha") == 200

        settled = wait_for(lambda: placed_as(gateway, "alpha", alone), SETTLE_S, 0.2)
        assert settled, child_of(gateway, "alpha")
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=30).text
        assert f'llama_supervisor_child_threads{{model="alpha",role="chat"}} {alone.threads}' in (
            metrics.replace(".0\n", "\n")
        )
    finally:
        gateway.stop()
