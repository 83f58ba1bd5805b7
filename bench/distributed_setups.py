"""The processes of the beyond-one-machine phase (issue 20), all on loopback:

- the peer hop: ``peer-back``, a gateway serving the model (its child without a key, so that
  the load generator can reach the child too), and ``peer-front``, a gateway with no model of
  its own and ``peer-back`` as its peer ``box2``, which serves the model as ``box2/<id>``;
- the RPC split: ``ggml-rpc-server`` (``rpc-server`` in older llama.cpp) on a free loopback
  port, ``rpc-split``, a gateway whose model has ``rpc = ["127.0.0.1:PORT"]`` and
  ``n_gpu_layers = 99`` (so its layers go to the worker's device), and ``rpc-local``, a
  gateway with the same model and settings and no worker.

The TOML each gateway gets is built by pure functions (tested with literal strings)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

from supervisor.children.process import free_port
from supervisor.rpc.binary import NAMES

from .targets import LlamaSettings, Target, gateway_config, own_models_dir, ready, spawn

PEER_NAME = "box2"
PEER_CHECK_INTERVAL_S = 1.0
RPC_LAYERS = 99  # every layer: the worker's device takes them all
LISTED_TIMEOUT_S = 60.0
WORKER_READY_TIMEOUT_S = 30.0
MB = 1024 * 1024


def peer_config(settings: LlamaSettings, peer_url: str) -> str:
    """The front gateway's TOML: the usual settings, then the back gateway as a peer."""
    return (
        gateway_config(settings, queue_max=1024)
        + f"peer_check_interval_s = {PEER_CHECK_INTERVAL_S}\n"
        + f"\n[[peers]]\nname = {json.dumps(PEER_NAME)}\nurl = {json.dumps(peer_url)}\n"
    )


def rpc_config(settings: LlamaSettings, worker: str) -> str:
    """The split gateway's TOML: the usual settings, then the model with its worker and every
    layer offloaded (TOML's basic strings are JSON's)."""
    return (
        gateway_config(settings, queue_max=1024)
        + f"\n[[models]]\nfile = {json.dumps(settings.model.name)}\n"
        + f"n_gpu_layers = {RPC_LAYERS}\nrpc = [{json.dumps(worker)}]\n"
    )


def find_rpc_server(llama_server: Path) -> Path | None:
    """llama.cpp's RPC worker built beside this llama-server by ./build_llamacpp.sh (the same
    build, so the same RPC protocol; supervisor/rpc/binary.py looks beside the newest)."""
    for name in NAMES:
        candidate = llama_server.parent / name
        if candidate.is_file():
            return candidate
    return None


def start_configured_gateway(
    name: str, settings: LlamaSettings, workdir: Path, config: str, model_id: str, with_model: bool
) -> Target:
    """``llama-supervisor serve`` with ``config`` as its TOML; its models directory holds the
    model when ``with_model``, else nothing (a gateway serving peers only)."""
    port = free_port()
    if with_model:
        models = own_models_dir(workdir, name, settings.model)
    else:
        models = workdir / name / "models"
        models.mkdir(parents=True, exist_ok=True)
    (workdir / name / "gateway.toml").write_text(config)
    log = workdir / name / "gateway.log"
    argv = [
        sys.executable, "-m", "supervisor.cli", "serve", "--port", str(port),
        "--models-dir", str(models), "--llama-server", str(settings.binary),
        "--config", str(workdir / name / "gateway.toml"),
        "--data-dir", str(workdir / name / "data"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    return ready(Target(name, url, model_id, spawn(argv, log), log, models))


def start_peer_front(settings: LlamaSettings, workdir: Path, back: Target) -> Target:
    """The gateway whose only model is the back gateway's, once it lists it."""
    served = f"{PEER_NAME}/{back.model}"
    config = peer_config(settings, back.base_url)
    front = start_configured_gateway("peer-front", settings, workdir, config, served, False)
    try:
        wait_listed(front, served)
    except BaseException:
        front.stop()
        raise
    return front


def wait_listed(target: Target, model_id: str, timeout: float = LISTED_TIMEOUT_S) -> None:
    """Until ``GET /v1/models`` lists ``model_id`` (a peer's models are listed once a check
    found the peer up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listing = httpx.get(f"{target.base_url}/v1/models", timeout=5.0, trust_env=False)
            if model_id in {m.get("id") for m in listing.json().get("data", [])}:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{target.name} did not list {model_id} within {timeout:.0f} s")


def start_worker(rpc_server: Path, workdir: Path, threads: int) -> Target:
    """One RPC worker on a free loopback port, ready once it accepts a connection."""
    port = free_port()
    (workdir / "rpc-worker").mkdir(parents=True, exist_ok=True)
    log = workdir / "rpc-worker" / "rpc-server.log"
    argv = [str(rpc_server), "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
    worker = Target("rpc-worker", f"127.0.0.1:{port}", "", spawn(argv, log), log)
    try:
        _wait_listening(worker, port)
    except BaseException:
        worker.stop()
        raise
    return worker


def _wait_listening(worker: Target, port: int) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            tail = worker.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"rpc-server exited ({worker.proc.returncode}): {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"rpc-server not listening after {WORKER_READY_TIMEOUT_S:.0f} s")


def rss_mb(target: Target) -> float | None:
    try:
        rss: float = target.process().memory_info().rss / MB
    except psutil.Error:
        return None
    return rss


def child_flag(gateway: Target, flag: str) -> str | None:
    """The value the gateway's llama-server child was started with for ``flag``, if any."""
    for child in gateway.process().children(recursive=True):
        argv = child.cmdline()
        if "--port" in argv and flag in argv[:-1]:
            return str(argv[argv.index(flag) + 1])
    return None


def command_of(target: Target) -> str:
    """How a process was started, paths by their last part (for the report)."""
    argv = target.proc.args
    words = [str(w) for w in argv] if isinstance(argv, list) else [str(argv)]
    return " ".join(Path(w).name if w.startswith("/") else w for w in words)
