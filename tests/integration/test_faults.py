"""Issue 7's faults against real llama-server children on SmolLM2: children killed or frozen
mid-request, broken model files, a lost port, a client that reads a stream very slowly.

Existing tests cover the rest of the list: kill -9 of the gateway (test_process_lifetime.py,
and tests/unit/test_launcher.py for the macOS watchdog), a child SIGKILLed mid-stream on /v1
(test_openai_surface.py), a pinned model back after kill -9 and a SIGSTOPped child replaced
(test_model_lifecycle.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from fake_child import FakeChild
from harness import MODEL_ID, RunningGateway, wait_for, wait_until_gone
from sse import chat_body, data_lines, sse_data

from supervisor.children import child as child_module
from supervisor.children.child import ChildStarter
from supervisor.children.poll_client import make_client
from supervisor.children.spec import LoadParams, Role
from supervisor.config import Settings
from supervisor.errors import ModelLoadError
from supervisor.models.registry import Registry

pytestmark = pytest.mark.integration
MakeGGUF = Callable[..., Path]
MODEL_FILE = f"{MODEL_ID}.gguf"
LONG = {"max_tokens": 6000, "ignore_eos": True}
PATIENCE_S = 60.0  # a bound on waits, so a hang fails the test instead of stalling the suite
SMALL = "ctx_size = 2048\nparallel = 2\n"  # quicker loads than 4 slots of 8192 tokens


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """The module's gateway: the demo model with small slots (it is reloaded after each kill)."""
    directory = tmp_path_factory.mktemp("faults")
    (directory / "config.toml").write_text(SMALL)
    running = RunningGateway(llama_server_bin, demo_model_dir, directory / "gateway.log",
                             "--config", str(directory / "config.toml"))  # fmt: skip
    yield running
    running.stop()


# -- the child's port taken between allocation and bind ------------------------------------------
def squat_first_port(monkeypatch: pytest.MonkeyPatch, taken: int) -> list[int]:
    """Make the starter's next port pick ``taken``; later picks are free ports as usual.
    Returns the ports handed out."""
    real = child_module.free_port
    handed: list[int] = []

    def pick() -> int:
        handed.append(taken if not handed else real())
        return handed[-1]

    monkeypatch.setattr(child_module, "free_port", pick)
    return handed


async def start_child(llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path) -> int:
    settings = Settings(
        models_dirs=[demo_model_dir], llama_server=llama_server_bin,
        data_dir=tmp_path / "data", parallel=1, ctx_size=512,
    )  # fmt: skip
    registry = Registry(settings)
    (entry,) = [e for e in registry.scan() if e.id == MODEL_ID]
    async with make_client() as client:
        backend = await ChildStarter(client).start(settings, entry, Role.CHAT, LoadParams())
        try:
            key = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
            answer = await client.post(
                f"{backend.base_url}/completion",
                json={"prompt": "Hi", "n_predict": 2},
                headers=key,
            )
            assert answer.status_code == 200
            assert psutil.Process(backend.process.pid).is_running()
            return backend.port
        finally:
            await backend.process.stop(grace=5)


@contextlib.contextmanager
def listening_port() -> Iterator[int]:
    """A loopback port held by a bare listening socket (nothing answers on it)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield int(squatter.getsockname()[1])


@pytest.mark.anyio
async def test_a_port_taken_before_the_child_binds_it_is_retried(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with listening_port() as taken:
        handed = squat_first_port(monkeypatch, taken)
        port = await start_child(llama_server_bin, demo_model_dir, tmp_path)
    assert handed[0] == taken
    assert port == handed[-1] != taken


@pytest.mark.anyio
async def test_a_port_taken_by_a_server_that_answers_health_is_not_mistaken_for_the_child(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another HTTP server on the port says 200 to /health before our child has failed to bind:
    the gateway must not take it for its child (and send it prompts)."""
    with FakeChild() as squatter:
        taken = int(squatter.url.rsplit(":", 1)[1])
        handed = squat_first_port(monkeypatch, taken)
        port = await start_child(llama_server_bin, demo_model_dir, tmp_path)
        assert squatter.received("POST", "/completion") == []
    assert handed[0] == taken
    assert port == handed[-1] != taken


@pytest.mark.anyio
async def test_losing_the_port_every_time_is_a_clear_load_error(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with listening_port() as taken:
        monkeypatch.setattr(child_module, "free_port", lambda: taken)
        with pytest.raises(ModelLoadError) as failed:
            await start_child(llama_server_bin, demo_model_dir, tmp_path)
    assert "couldn't bind" in failed.value.message


# -- a child SIGKILLed mid-stream, on each surface's streaming route -----------------------------
def chat_child(gateway: RunningGateway) -> psutil.Process:
    (child,) = [c for c in gateway.children() if "--embeddings" not in c.cmdline()]
    return child


def kill_after_first_event(
    gateway: RunningGateway, path: str, body: dict[str, object]
) -> list[str]:
    """Stream ``body`` to ``path``, SIGKILL the model's child once the first event is in, and
    return every event after it (the stream must end on its own: no hang, no silent cut)."""
    with httpx.stream("POST", f"{gateway.url}{path}", json=body, timeout=PATIENCE_S) as response:
        assert response.status_code == 200, response.read()
        events = data_lines(response.iter_lines(), strict=False)
        next(events)
        victim = chat_child(gateway)
        os.kill(victim.pid, signal.SIGKILL)
        rest = list(events)
    assert wait_until_gone([victim], timeout=10) == []
    return rest


def new_session(gateway: RunningGateway) -> str:
    first = httpx.post(f"{gateway.url}/api/chat", timeout=PATIENCE_S, json={
        "model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}],
        "options": {"max_tokens": 4}})  # fmt: skip
    assert first.status_code == 200, first.text
    session_id: str = first.json()["session_id"]
    return session_id


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completion", {"model": MODEL_ID, "prompt": "Essay.", "n_predict": 6000,
                         "ignore_eos": True, "stream": True}),
        (f"/api/v2/chat/{MODEL_ID}/stream", {"messages": [{"role": "user", "content": "Essay."}],
                                              "n_predict": 6000, "ignore_eos": True}),
    ],
)  # fmt: skip
def test_child_killed_mid_stream_ends_with_an_error_event_then_done(
    gateway: RunningGateway, path: str, body: dict[str, object]
) -> None:
    rest = kill_after_first_event(gateway, path, body)
    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "backend_error" and "did not complete" in error["message"]
    assert not any("error" in json.loads(event) for event in rest[:-2])
    again = httpx.post(f"{gateway.url}/completion", timeout=PATIENCE_S,
                       json={"prompt": "Hi", "n_predict": 2, "model": MODEL_ID})  # fmt: skip
    assert again.status_code == 200, again.text  # the model loads again


def test_child_killed_mid_session_stream_stores_nothing_of_it(gateway: RunningGateway) -> None:
    session_id = new_session(gateway)
    body = {
        "session_id": session_id,
        "stream": True,
        "options": {"max_tokens": 2000},
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
    }
    rest = kill_after_first_event(gateway, "/api/chat", body)
    last = json.loads(rest[-1])
    assert last["done"] is True and "did not complete" in last["error"]
    assert all(json.loads(event)["done"] is False for event in rest[:-1])
    stored = httpx.get(f"{gateway.url}/api/sessions/{session_id}", timeout=30).json()
    assert len(stored["messages"]) == 2  # the acknowledged turn only, nothing of the cut one
    again = httpx.post(f"{gateway.url}/api/chat", timeout=PATIENCE_S, json={
        "session_id": session_id, "messages": [{"role": "user", "content": "Hi"}],
        "options": {"max_tokens": 4}})  # fmt: skip
    assert again.status_code == 200, again.text
    stored = httpx.get(f"{gateway.url}/api/sessions/{session_id}", timeout=30).json()
    assert len(stored["messages"]) == 4


# -- a client that reads its stream very slowly -------------------------------------------------
def test_a_client_that_does_not_read_its_stream_slows_no_one_and_loses_nothing(
    gateway: RunningGateway,
) -> None:
    """A client with a tiny receive buffer reads nothing of a long stream until other clients,
    streamed and not, have been served beside it; then it gets every event of its stream."""
    tiny = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    long = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 160,
            "ignore_eos": True, "stream": True}  # fmt: skip
    with (
        httpx.Client(transport=tiny, timeout=PATIENCE_S) as slow,
        slow.stream("POST", f"{gateway.url}/v1/completions", json=long) as stalled,
    ):
        assert stalled.status_code == 200
        for _ in range(2):
            with httpx.stream(
                "POST",
                f"{gateway.url}/v1/chat/completions",
                timeout=PATIENCE_S,
                json=chat_body(MODEL_ID, stream=True, max_tokens=4),
            ) as fast:
                assert list(data_lines(fast.iter_lines(), strict=False))[-1] == "[DONE]"
            reply = httpx.post(
                f"{gateway.url}/v1/completions",
                timeout=PATIENCE_S,
                json={"model": MODEL_ID, "prompt": "Hi", "max_tokens": 4},
            )
            assert reply.status_code == 200  # fmt: skip
        raw = stalled.read()
    events = sse_data(raw.decode(), strict=True)
    assert len(raw) > 8 * 4096  # far more than the slow client's buffer could take
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 160


# -- a child frozen by SIGSTOP, with requests on it ----------------------------------------------
@pytest.fixture
def own_gateway(
    llama_server_bin: Path, tmp_path: Path
) -> Iterator[Callable[[Path, str], RunningGateway]]:
    started: list[RunningGateway] = []

    def start(models_dir: Path, config: str = "") -> RunningGateway:
        path = tmp_path / f"config{len(started)}.toml"
        path.write_text(config)
        log = tmp_path / f"gateway{len(started)}.log"
        started.append(RunningGateway(llama_server_bin, models_dir, log, "--config", str(path)))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def test_requests_on_a_sigstopped_child_end_with_an_error_or_are_served_after_it(
    own_gateway: Callable[[Path, str], RunningGateway], demo_model_dir: Path
) -> None:
    gateway = own_gateway(
        demo_model_dir, SMALL + "health_interval_s = 0.5\nhealth_timeout_s = 0.5\n"
    )
    body = {"model": MODEL_ID, "prompt": "Write an essay.", "stream": True, **LONG}
    newcomer: list[httpx.Response] = []

    def new_request() -> None:  # sent while the child is frozen
        newcomer.append(httpx.post(f"{gateway.url}/v1/completions", timeout=PATIENCE_S,
                        json={"model": MODEL_ID, "prompt": "Hi", "max_tokens": 4}))  # fmt: skip

    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body,
                      timeout=PATIENCE_S) as response:  # fmt: skip
        events = data_lines(response.iter_lines(), strict=False)
        next(events)
        frozen = chat_child(gateway)
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            late = threading.Thread(target=new_request)
            late.start()
            rest = list(events)  # ends once the liveness check has killed the frozen child
            late.join(PATIENCE_S)
        finally:
            if frozen.is_running():
                frozen.kill()
    assert rest[-1] == "[DONE]"
    assert json.loads(rest[-2])["error"]["code"] == "backend_error"
    assert wait_until_gone([frozen], timeout=10) == []
    (answer,) = newcomer
    assert answer.status_code in (200, 502), answer.text
    if answer.status_code == 502:
        assert answer.json()["error"]["code"] == "backend_error"
    assert wait_for(lambda: any(c.pid != frozen.pid for c in gateway.children()), PATIENCE_S)
    again = httpx.post(f"{gateway.url}/v1/completions", timeout=PATIENCE_S,
                       json={"model": MODEL_ID, "prompt": "Hi", "max_tokens": 4})  # fmt: skip
    assert again.status_code == 200


# -- broken model files ----------------------------------------------------------------------------
def lie_about_tensor_size(path: Path) -> None:
    """Make the one tensor of a ``make_gguf`` file claim 2**40 elements it does not have."""
    data = bytearray(path.read_bytes())
    at = data.index(b"weight" + struct.pack("<I", 2)) + len(b"weight") + 4
    data[at : at + 8] = struct.pack("<Q", 1 << 40)
    path.write_bytes(bytes(data))


def test_broken_model_files_get_clear_errors_and_the_others_keep_serving(
    own_gateway: Callable[[Path, str], RunningGateway],
    demo_model_dir: Path,
    make_gguf: MakeGGUF,
    tmp_path: Path,
) -> None:
    models = tmp_path / "broken"
    models.mkdir()
    demo = demo_model_dir / MODEL_FILE
    os.link(demo, models / MODEL_FILE)
    with demo.open("rb") as source:
        (models / "truncated.gguf").write_bytes(source.read(4 << 20))
    (models / "not-gguf.gguf").write_text("<html>404 Not Found</html>\n")
    lie_about_tensor_size(make_gguf("broken/liar-tensors.gguf"))
    make_gguf("broken/liar-context.gguf", ctx=2**31 - 1, embedding=4096, blocks=64)
    later = models / "truncated-later.gguf"
    shutil.copyfile(demo, later)  # whole when scanned; cut once the gateway runs
    gateway = own_gateway(models, "")

    listed = {m["id"] for m in httpx.get(f"{gateway.url}/v1/models", timeout=30).json()["data"]}
    assert listed == {MODEL_ID, "liar-context", "truncated-later"}
    log = gateway.log_path.read_text()
    for name, why in (("truncated", "truncated GGUF"), ("not-gguf", "not a GGUF file"),
                      ("liar-tensors", "truncated GGUF")):  # fmt: skip
        assert f"skipping model file {models / name}.gguf: {why}" in log
        response = chat(gateway, name)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"

    response = chat(gateway, "liar-context")  # its metadata asks for a 2**31-token KV cache
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "insufficient_memory"

    os.truncate(later, 4 << 20)
    response = chat(gateway, "truncated-later")
    assert response.status_code == 503 and response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "model_load_failed" and "exited with code" in error["message"]
    detail = httpx.get(f"{gateway.url}/api/v2/models/truncated-later", timeout=30).json()
    assert detail["state"]["state"] == "failed" and detail["state"]["last_error"]
    api = httpx.post(f"{gateway.url}/api/chat", timeout=PATIENCE_S, json={
        "model": "truncated-later", "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
    assert api.status_code == 503 and "failed to load" in api.json()["detail"]

    assert chat(gateway, MODEL_ID).status_code == 200  # the good model serves all along
    assert len(gateway.children()) == 1


def chat(gateway: RunningGateway, model: str) -> httpx.Response:
    body = chat_body(model, max_tokens=4)
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=PATIENCE_S)


# -- kill -9 of the gateway, with the macOS mechanism -------------------------------------------
def test_sigkill_of_the_gateway_leaves_no_child_with_the_watchdog_launcher(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    """macOS has no PR_SET_PDEATHSIG: there a watchdog launcher kills llama-server when the
    gateway's end of its stdin closes. Forced here on Linux, it must do as well as the kernel
    (test_process_lifetime.py proves the Linux mechanism)."""
    (tmp_path / "config.toml").write_text(SMALL)
    gateway = RunningGateway(llama_server_bin, demo_model_dir, tmp_path / "gateway.log",
                             "--config", str(tmp_path / "config.toml"),
                             env={"LLAMA_SUPERVISOR_LAUNCHER": "watchdog"})  # fmt: skip
    try:
        assert chat(gateway, MODEL_ID).status_code == 200
        children = gateway.children()
        launchers = [c.parent() for c in children]
        assert children and all(p is not None and p.pid != gateway.proc.pid for p in launchers)
        os.kill(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait()
        assert wait_until_gone(children, timeout=2) == []
    finally:
        gateway.stop()
