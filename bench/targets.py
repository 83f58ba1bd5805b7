"""The processes under test, each on a free port with the same llama-server settings:

- ``direct``: one llama-server on the model (what the others are measured against);
- ``router``: llama-server's router mode (``--models-dir``, no ``-m``), which starts a
  llama-server per model on demand and forwards each request by its ``model`` field;
- ``nginx`` (a reference, where nginx is installed): nginx as a reverse proxy in front of a
  direct llama-server of its own (``bench/nginx.py``);
- ``gateway``: ``llama-supervisor serve``, whose child gets the same settings from a TOML file;
- ``shared``: a gateway whose child has twice the slots and no key (``child_keys = false``),
  for streams straight to that child and through the gateway at once;
- ``canned`` and ``gateway-canned``: the zero-cost upstream alone, and the gateway in front of
  it (its ``--llama-server`` is a script that execs ``python -m bench.canned``).

Each target gets a models directory of its own holding a hard link to the model (router mode
would treat extra files and subdirectories as models of its own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev deps

from supervisor.children.process import free_port

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0
READY_POLL_S = 0.02  # as often as the gateway polls its children


@dataclass(frozen=True)
class LlamaSettings:
    """What every llama-server under test is started with."""

    binary: Path
    model: Path
    ctx_size: int
    parallel: int
    threads: int

    @property
    def model_id(self) -> str:
        return self.model.stem

    def flags(self) -> list[str]:
        return [
            "--ctx-size", str(self.ctx_size),
            "--parallel", str(self.parallel),
            "--threads", str(self.threads),
        ]  # fmt: skip


@dataclass
class Target:
    name: str
    base_url: str
    model: str
    proc: subprocess.Popen[bytes]
    log: Path
    models_dir: Path | None = None
    upstream: Target | None = None  # a process of its own behind this one, stopped with it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; then any descendant left behind; then the upstream."""
        try:
            descendants = self.process().children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if self.upstream is not None:
            self.upstream.stop()


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO, start_new_session=True,
        )  # fmt: skip


def wait_ready(target: Target, path: str = "/health", timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            tail = target.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{target.name} exited ({target.proc.returncode}): {tail}")
        try:
            if httpx.get(f"{target.base_url}{path}", timeout=2.0, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_S)
    raise RuntimeError(f"{target.name} not ready after {timeout:.0f} s")


def ready(target: Target) -> Target:
    try:
        wait_ready(target)
    except BaseException:
        target.stop()
        raise
    return target


def link_or_copy(source: Path, destination: Path) -> None:
    if destination.exists():
        return
    try:
        os.link(source, destination)
    except OSError:  # another filesystem: a copy then
        shutil.copy2(source, destination)


def own_models_dir(workdir: Path, name: str, model: Path) -> Path:
    directory = workdir / name / "models"
    directory.mkdir(parents=True, exist_ok=True)
    link_or_copy(model, directory / model.name)
    return directory


def start_direct(settings: LlamaSettings, workdir: Path, name: str = "direct") -> Target:
    port = free_port()
    (workdir / name).mkdir(parents=True, exist_ok=True)
    log = workdir / name / "llama-server.log"
    argv = [
        str(settings.binary), "--model", str(settings.model), "--alias", settings.model_id,
        "--host", "127.0.0.1", "--port", str(port), *settings.flags(),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    return ready(Target(name, url, settings.model_id, spawn(argv, log), log))


def start_router(settings: LlamaSettings, workdir: Path) -> Target:
    port = free_port()
    models = own_models_dir(workdir, "router", settings.model)
    log = workdir / "router" / "llama-server.log"
    argv = [
        str(settings.binary), "--models-dir", str(models),
        "--host", "127.0.0.1", "--port", str(port), *settings.flags(),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    target = Target("router", url, settings.model_id, spawn(argv, log), log, models)
    return ready(target)


def gateway_config(settings: LlamaSettings, queue_max: int, child_keys: bool = True) -> str:
    lines = [
        f"parallel = {settings.parallel}",
        f"ctx_size = {settings.ctx_size}",
        f"threads = {settings.threads}",
        f"queue_max = {queue_max}",
        "queue_timeout_s = 300",
    ]
    if not child_keys:
        lines.append("child_keys = false")
    return "\n".join([*lines, ""])


def start_gateway(
    settings: LlamaSettings,
    workdir: Path,
    name: str = "gateway",
    queue_max: int = 1024,
    child_keys: bool = True,
) -> Target:
    port = free_port()
    models = own_models_dir(workdir, name, settings.model)
    config = workdir / name / "gateway.toml"
    config.write_text(gateway_config(settings, queue_max, child_keys))
    log = workdir / name / "gateway.log"
    argv = [
        sys.executable, "-m", "supervisor.cli", "serve", "--port", str(port),
        "--models-dir", str(models), "--llama-server", str(settings.binary),
        "--config", str(config), "--data-dir", str(workdir / name / "data"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    target = Target(name, url, settings.model_id, spawn(argv, log), log, models)
    return ready(target)


def start_shared(settings: LlamaSettings, workdir: Path, concurrency: int) -> Target:
    """A gateway whose child has a slot for ``concurrency`` streams through the gateway and as
    many straight to the child at once (each slot with the context the others' have), and
    answers without a key (``child_keys = false``), so that the load generator can reach it."""
    wide = replace(
        settings,
        parallel=2 * concurrency,
        ctx_size=settings.ctx_size * 2 * concurrency // settings.parallel,
    )
    return start_gateway(wide, workdir, name="shared", child_keys=False)


def child_of(gateway: Target) -> str:
    """The base URL of the gateway's llama-server child (one model, loaded)."""
    for child in gateway.process().children(recursive=True):
        argv = child.cmdline()
        if "--port" in argv:
            return f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"
    raise RuntimeError(f"{gateway.name} has no llama-server child running")


def canned_script(workdir: Path, events: int) -> Path:
    """An executable that stands in for llama-server: it keeps ``--port`` and ignores the
    rest of the flags the gateway passes."""
    script = workdir / "canned-llama-server"
    script.write_text(
        "#!/bin/sh\n"
        f'cd "{REPO}" && exec "{sys.executable}" -m bench.canned --events {events} "$@"\n'
    )
    script.chmod(0o755)
    return script


def start_canned(workdir: Path, events: int) -> Target:
    port = free_port()
    (workdir / "canned").mkdir(parents=True, exist_ok=True)
    log = workdir / "canned" / "canned.log"
    argv = [sys.executable, "-m", "bench.canned", "--port", str(port), "--events", str(events)]
    url = f"http://127.0.0.1:{port}"
    return ready(Target("canned", url, "canned", spawn(argv, log), log))


def start_gateway_canned(settings: LlamaSettings, workdir: Path, events: int) -> Target:
    script = canned_script(workdir, events)
    fake = LlamaSettings(script, settings.model, settings.ctx_size, settings.parallel, 1)
    return start_gateway(fake, workdir, name="gateway-canned")
