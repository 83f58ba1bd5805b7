"""The setups of the several-models workloads, each started on free loopback ports for one
measurement and stopped after it, and where each llama-server in them runs:

- ``direct``: a llama-server per model (``-m``), llama.cpp's default threads (no ``-t``);
- ``split``: the same with the cores split by hand, ``-t N -tb N`` each, N = cores // 2 (at
  least 1); with chat and embeddings, one of them is started ``--embeddings --pooling mean``;
- ``router``: llama-server's router mode over a models directory with the workload's files
  (``--models-max 2``, default threads: its children inherit its flags);
- ``gateway``: ``llama-supervisor serve`` over such a directory, with ``parallel`` and
  ``ctx_size`` set, ``queue_max`` big enough for every user, and no ``threads``: where its
  children run is the gateway's choice.

Every llama-server gets ``--parallel 4`` and a context of 512 tokens per slot."""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

from supervisor.children.process import free_port

from .machine import cpu_count
from .targets import Target, link_or_copy, ready, spawn

PARALLEL = 4
CTX_SIZE = PARALLEL * 512  # a slot holds the prompt (31 tokens) and 16 more many times over
QUEUE_MAX = 64  # every user of the busiest workload (32 on one model) has a place in the queue
MODELS = ("smol-a", "smol-b")
DIRECT, SPLIT, ROUTER, GATEWAY = "direct", "split", "router", "gateway"
EMBEDDINGS_KEY = "embeddings"  # a setup's URL for /v1/embeddings, where it has one apart
# llama-server's flags that say where and how its threads run
PLACEMENT_FLAGS = {
    "-t": "--threads", "--threads": "--threads",
    "-tb": "--threads-batch", "--threads-batch": "--threads-batch",
    "-C": "--cpu-mask", "--cpu-mask": "--cpu-mask",
    "-Cr": "--cpu-range", "--cpu-range": "--cpu-range",
    "--cpu-strict": "--cpu-strict", "--poll": "--poll", "--prio": "--prio",
    "-Cb": "--cpu-mask-batch", "--cpu-mask-batch": "--cpu-mask-batch",
    "-Crb": "--cpu-range-batch", "--cpu-range-batch": "--cpu-range-batch",
    "--cpu-strict-batch": "--cpu-strict-batch", "--poll-batch": "--poll-batch",
    "--prio-batch": "--prio-batch", "--numa": "--numa",
}  # fmt: skip
N_THREADS = re.compile(r"n_threads = (\d+)")


def split_threads() -> int:
    return max(1, cpu_count() // 2)


def model_files(model: Path, workdir: Path) -> dict[str, Path]:
    """Two model files from one: the first a hard link, the second a copy of its own, so that
    the two models share no page cache, as two different models would not."""
    directory = workdir / "several-models"
    directory.mkdir(parents=True, exist_ok=True)
    first, second = (directory / f"{name}.gguf" for name in MODELS)
    link_or_copy(model, first)
    if not second.exists():
        shutil.copyfile(model, second)
    return {MODELS[0]: first, MODELS[1]: second}


@dataclass
class Setup:
    name: str
    targets: list[Target] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)  # model (or EMBEDDINGS_KEY) -> base URL
    commands: list[str] = field(default_factory=list)  # how each process was started
    config: str | None = None  # the gateway's TOML

    def url(self, key: str) -> str:
        return self.urls.get(key) or self.urls[MODELS[0]]


@contextlib.contextmanager
def started(
    name: str, files: dict[str, Path], binary: Path, workdir: Path, embeddings: bool = False
) -> Iterator[Setup]:
    """Setup ``name`` over the models in ``files``; ``embeddings``: chat and embeddings on
    one model (the split gets an embedding server of its own; the others start their own)."""
    setup = Setup(name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if name in (DIRECT, SPLIT):
            flags = [] if name == DIRECT else split_flags()
            for model, path in files.items():
                argv = [str(binary), *_model(path, model), *flags]
                setup.urls[model] = _llama(setup, workdir, model, argv)
            if embeddings:
                model, path = next(iter(files.items()))
                argv = [str(binary), *_model(path, model), "--embeddings", "--pooling", "mean"]
                setup.urls[EMBEDDINGS_KEY] = _llama(setup, workdir, EMBEDDINGS_KEY, argv + flags)
        elif name == ROUTER:
            models = _models_dir(workdir / "models", files)
            argv = [str(binary), "--models-dir", str(models), "--models-max", str(len(MODELS))]
            setup.urls = dict.fromkeys(files, _llama(setup, workdir, ROUTER, argv))
        elif name == GATEWAY:
            setup.urls = dict.fromkeys(files, _gateway(setup, workdir, files, binary))
        else:
            raise ValueError(f"no setup named {name}")
        yield setup
    finally:
        for target in reversed(setup.targets):
            target.stop()


def _llama(setup: Setup, workdir: Path, name: str, argv: list[str]) -> str:
    port = free_port()
    argv = [*argv, "--ctx-size", str(CTX_SIZE), "--parallel", str(PARALLEL),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return _start(setup, workdir / f"{name}.log", name, argv, port)


def gateway_config() -> str:
    return f"parallel = {PARALLEL}\nctx_size = {CTX_SIZE}\nqueue_max = {QUEUE_MAX}\n"


def _gateway(setup: Setup, workdir: Path, files: dict[str, Path], binary: Path) -> str:
    port = free_port()
    models = _models_dir(workdir / "models", files)
    config = workdir / "gateway.toml"
    setup.config = gateway_config()
    config.write_text(setup.config)
    argv = [
        sys.executable, "-m", "supervisor.cli", "serve", "--port", str(port),
        "--models-dir", str(models), "--llama-server", str(binary),
        "--config", str(config), "--data-dir", str(workdir / "data"),
    ]  # fmt: skip
    return _start(setup, workdir / "gateway.log", GATEWAY, argv, port)


def _start(setup: Setup, log: Path, name: str, argv: list[str], port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    setup.commands.append(shlex.join(argv))
    setup.targets.append(ready(Target(name, url, MODELS[0], spawn(argv, log), log)))
    return url


def _model(path: Path, alias: str) -> list[str]:
    return ["--model", str(path), "--alias", alias]


def split_flags() -> list[str]:
    n = str(split_threads())
    return ["--threads", n, "--threads-batch", n]


def _models_dir(directory: Path, files: dict[str, Path]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        link_or_copy(path, directory / path.name)
    return directory


def placement(setup: Setup) -> list[dict[str, Any]]:
    """Every llama-server of the setup that serves a model (a direct one, the router's and
    the gateway's children): its pid, model, role, the placement flags it was given, the
    CPUs it may run on, and the threads it says it started with where its log is at hand."""
    found: list[dict[str, Any]] = []
    for target in setup.targets:
        try:
            root = target.process()
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in processes:
            with contextlib.suppress(psutil.Error):
                argv = process.cmdline()
                where = _where(argv, _cpus(process))
                if where is not None:
                    # a router's log holds its children's lines too, each after "[port]"
                    prefix = "" if process.pid == target.pid else f"[{_value(argv, '--port')}] "
                    threads = _n_threads(target.log, prefix) if setup.name != GATEWAY else None
                    found.append({"pid": process.pid, **where, "n_threads": threads})
    if setup.name == GATEWAY:
        _gateway_threads(setup, found)
    return found


def _where(argv: list[str], cpus: str | None) -> dict[str, Any] | None:
    if "llama-server" not in Path(argv[0]).name or "--models-dir" in argv:
        return None  # the gateway, the router itself
    flags: dict[str, str] = {}
    for index, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in PLACEMENT_FLAGS:
            given = value if eq else (argv[index + 1] if index + 1 < len(argv) else "")
            flags[PLACEMENT_FLAGS[name]] = given
    alias = _value(argv, "--alias") or "?"
    role = EMBEDDINGS_KEY if "--embeddings" in argv or "--embedding" in argv else "chat"
    return {"model": alias, "role": role, "flags": flags, "cpus": cpus}


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _cpus(process: psutil.Process) -> str | None:
    """The CPUs the process may run on, as ranges (``0-1``); None where the OS will not say."""
    affinity = getattr(process, "cpu_affinity", None)
    if affinity is None:
        return None
    return cpu_ranges(sorted(affinity()))


def cpu_ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def _n_threads(log: Path, prefix: str) -> int | None:
    """llama.cpp logs ``llama threadpool init, n_threads = 2`` as it loads the model: the
    first such line of ``log`` that starts with ``prefix``."""
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        match = N_THREADS.search(line)
        if match and line.startswith(prefix):
            return int(match.group(1))
    return None


def _gateway_threads(setup: Setup, found: list[dict[str, Any]]) -> None:
    """The gateway keeps each child's recent output (``GET /api/v2/models/{id}/logs``,
    open when no keys are set): its ``n_threads`` line, while still among the kept lines."""
    base = setup.targets[0].base_url
    for model in sorted({str(f["model"]) for f in found}):
        try:
            answer = httpx.get(f"{base}/api/v2/models/{model}/logs", params={"lines": 100_000},
                               timeout=10.0, trust_env=False)  # fmt: skip
            lines = answer.json().get("lines", []) if answer.is_success else []
        except (httpx.HTTPError, ValueError):
            continue
        for line in lines:
            match = N_THREADS.search(str(line.get("line", "")))
            for where in found:
                if match and where["pid"] == line.get("pid") and where["n_threads"] is None:
                    where["n_threads"] = int(match.group(1))
