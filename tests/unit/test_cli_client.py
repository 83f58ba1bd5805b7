"""The client commands end to end through ``cli.main``, the gateway mocked with respx: what
each sends, what it prints, its exit status, and `--help` of every command."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from supervisor.children.process import free_port
from supervisor.cli.program import main

URL = "http://gateway.test:9999"
CLIENT = ["--url", URL]
LISTING = {
    "available_models": [
        {
            "id": "tiny.gguf",
            "size": 98 * 1024**2,
            "modified": "2026-01-01T00:00:00Z",
            "metadata": {"model_type": "llama", "parameters": {"context_length": 8192}},
        },
        {"id": "other.gguf", "size": 1024, "modified": None, "metadata": {}},
    ],
    "loaded_models": {
        "tiny.gguf": {
            "status": "loaded",
            "load_time": "2026-01-01T00:00:01Z",
            "state": {
                "state": "ready",
                "pid": 4242,
                "rss_bytes": 300 * 1024**2,
                "in_flight": 1,
                "queued": 2,
                "children": [
                    {"role": "chat", "pid": 4242, "threads": 2, "cpus": [0, 1]},
                    {"role": "embedding", "pid": None, "threads": 1, "cpus": [3]},
                    {"role": "rerank", "pid": None, "threads": None, "cpus": []},
                ],
            },
        }
    },
}
INFO = {
    "id": "tiny.gguf",
    "size": 1000,
    "status": "failed",
    "metadata": {"model_type": "llama", "parameters": {"context_length": 2048}},
    "performance": {"load_time": None, "tokens_processed": 12, "average_speed": 3.5},
    "state": {"state": "failed", "pid": None, "path": "/srv/models/tiny.gguf",
              "last_error": "exit 1: [error] bad magic", "exit_code": 1,
              "params": {"n_ctx": 512}, "restart_count": 3},
}  # fmt: skip


@pytest.fixture
def gateway() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMA_SUPERVISOR_URL", raising=False)
    monkeypatch.delenv("LLAMA_SUPERVISOR_ADMIN_KEY", raising=False)


def test_models_list_prints_a_table(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.get("/api/v2/models").respond(json=LISTING)
    assert main(["models", "list", *CLIENT]) == 0
    out = capsys.readouterr().out
    assert "tiny.gguf" in out and "other.gguf" in out
    assert "loaded" in out and "unloaded" in out
    assert "4242" in out and "300.0MB" in out and "98.0MB" in out and "1/2" in out
    assert "THREADS@CPUS" in out and "2@0-1, embedding 1@3, rerank auto" in out


def test_json_prints_the_gateways_answer(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.get("/api/v2/models").respond(json=LISTING)
    assert main(["models", "list", "--json", *CLIENT]) == 0
    assert json.loads(capsys.readouterr().out) == LISTING


def test_models_status_shows_the_last_error(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.get("/api/v2/models/tiny").respond(json=INFO)
    assert main(["models", "status", "tiny", *CLIENT]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "/srv/models/tiny.gguf" in out
    assert "[error] bad magic" in out  # brackets are text, not rich markup
    assert "n_ctx=512" in out


def test_models_status_shows_a_line_per_child(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    gpus = [{"index": 0, "name": "NVIDIA H200"}, {"index": 1, "name": "NVIDIA H200"}]
    children = [
        {"role": "chat", "pid": 4242, "threads": 2, "cpus": [0, 1, 2, 5], "shared": False,
         "poll": None, "memory": "VRAM", "gpus": gpus, "tensor_split": [70000, 50000]},
        {"role": "embedding", "pid": 4243, "threads": 1, "cpus": [3], "shared": True,
         "poll": 0, "memory": "RAM", "gpus": [], "tensor_split": []},
        {"role": "rerank", "pid": None, "threads": None, "cpus": [], "shared": False,
         "poll": None, "memory": None, "gpus": [], "tensor_split": []},
    ]  # fmt: skip
    info = {**INFO, "status": "loaded", "state": {"state": "ready", "children": children}}
    gateway.get("/api/v2/models/tiny").respond(json=info)
    assert main(["models", "status", "tiny", *CLIENT]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert (
        "children          chat[4242] 2 threads on CPUs 0-2,5, poll default, VRAM on GPUs "
        "0 (NVIDIA H200), 1 (NVIDIA H200), tensor split 70000,50000"
    ) in lines
    assert "embedding[4243] 1 thread on CPU 3 (shared), poll 0, RAM" in lines
    assert "rerank[-] default threads, unpinned, poll default" in lines


def test_the_url_and_key_come_from_the_environment(
    gateway: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_SUPERVISOR_URL", URL)
    monkeypatch.setenv("LLAMA_SUPERVISOR_ADMIN_KEY", "k-env")
    route = gateway.get("/api/v2/models").respond(json=LISTING)
    assert main(["models", "list"]) == 0
    assert route.calls.last.request.headers["Authorization"] == "Bearer k-env"
    assert main(["models", "list", "--api-key", "k-flag"]) == 0
    assert route.calls.last.request.headers["Authorization"] == "Bearer k-flag"


def test_models_load_sends_the_load_parameters(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    route = gateway.post("/api/v2/models/tiny/load").respond(
        json={"status": "success", "message": "ok", "load_time": "t", "memory_used": "120.0MB"}
    )
    argv = ["models", "load", "tiny", "--ctx", "4096", "--gpu-layers", "0", "--threads", "2",
            "--batch", "64", "--mlock", *CLIENT]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(route.calls.last.request.content) == {
        "n_ctx": 4096, "n_gpu_layers": 0, "threads": 2, "n_batch": 64, "use_mlock": True,
    }  # fmt: skip
    out = capsys.readouterr().out
    assert "loaded tiny" in out and "120.0MB" in out
    assert main(["models", "load", "tiny", *CLIENT]) == 0
    assert json.loads(route.calls.last.request.content) == {}


def test_models_load_failure_prints_llama_servers_words(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "Model 'tiny' failed to load: exited with 1\nerror: unknown model architecture"
    gateway.post("/api/v2/models/tiny/load").respond(503, json={"error": {"message": message}})
    assert main(["models", "load", "tiny", *CLIENT]) == 1
    err = capsys.readouterr().err
    assert "unknown model architecture" in err and "HTTP 503" in err
    assert "Traceback" not in err


def test_unload_swap_and_reload(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.post("/api/v2/models/tiny/unload").respond(json={"status": "success"})
    swap = gateway.post("/api/v2/models/tiny/swap").respond(
        json={"status": "success", "mode": "blue-green", "swap_seconds": 1.25,
              "path": "/srv/models/v2/tiny.gguf", "message": "Model swapped", "load_time": "t"}
    )  # fmt: skip
    gateway.post("/api/v2/reload").respond(
        json={"status": "success", "message": "Configuration reloaded",
              "swapped": ["a.gguf"], "unloaded": [], "added": ["b.gguf", "c.gguf"]}
    )  # fmt: skip
    assert main(["models", "unload", "tiny", *CLIENT]) == 0
    assert "unloaded tiny" in capsys.readouterr().out
    assert main(["models", "swap", "tiny", "v2/tiny.gguf", "--ctx", "512", *CLIENT]) == 0
    assert json.loads(swap.calls.last.request.content) == {"path": "v2/tiny.gguf", "n_ctx": 512}
    out = capsys.readouterr().out
    assert "blue-green" in out and "1.25 s" in out and "/srv/models/v2/tiny.gguf" in out
    assert main(["reload", *CLIENT]) == 0
    out = capsys.readouterr().out
    assert "a.gguf" in out and "b.gguf, c.gguf" in out


@pytest.mark.parametrize(
    ("status", "key", "words"),
    [
        (401, None, "no admin key given"),
        (401, "wrong", "does not know this admin key"),
        (403, "inference-key", "not an admin key"),
    ],
)
def test_auth_failures_name_the_key_options(
    gateway: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
    status: int,
    key: str | None,
    words: str,
) -> None:
    gateway.get("/api/v2/models").respond(status, json={"error": {"message": "nope"}})
    argv = ["models", "list", *CLIENT] + (["--api-key", key] if key else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert words in err and "LLAMA_SUPERVISOR_ADMIN_KEY" in err


def test_no_gateway_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["models", "list", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"no gateway at {url}" in err and "llama-supervisor serve" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_logs_prints_the_last_lines(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    route = gateway.get("/api/v2/models/tiny/logs").respond(
        json={"model": "tiny.gguf", "lines": [
            {"time": "2026-01-01T00:00:00Z", "role": "chat", "pid": 9, "line": "[bold]x[/]"},
        ]}
    )  # fmt: skip
    assert main(["logs", "tiny", "-n", "7", *CLIENT]) == 0
    assert route.calls.last.request.url.params["lines"] == "7"
    assert capsys.readouterr().out == "2026-01-01T00:00:00Z chat[9] [bold]x[/]\n"


def _events(lines: list[dict[str, object]], then: BaseException | None) -> Iterator[bytes]:
    yield b": keepalive\n\n"
    for line in lines:
        yield b"data: " + json.dumps(line).encode() + b"\n\n"
    if then is not None:
        raise then


def test_logs_follow_prints_events_until_ctrl_c(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[dict[str, object]] = [
        {"time": "t1", "role": "chat", "pid": 1, "line": "one"},
        {"time": "t2", "role": "embedding", "pid": 2, "line": "two"},
    ]
    route = gateway.get("/api/v2/models/tiny/logs/stream").mock(
        side_effect=lambda request: httpx.Response(
            200, content=_events(lines, KeyboardInterrupt()),
            headers={"content-type": "text/event-stream"},
        )
    )  # fmt: skip
    assert main(["logs", "tiny", "-f", "-n", "2", *CLIENT]) == 0
    assert route.calls.last.request.url.params["lines"] == "2"
    assert capsys.readouterr().out.splitlines() == ["t1 chat[1] one", "t2 embedding[2] two"]


def test_logs_follow_json_prints_one_object_per_line(
    gateway: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {"time": "t1", "role": "chat", "pid": None, "line": "one"}
    gateway.get("/api/v2/models/tiny/logs/stream").mock(
        side_effect=lambda request: httpx.Response(200, content=_events([line], None))
    )
    assert main(["logs", "tiny", "-f", "--json", *CLIENT]) == 0
    captured = capsys.readouterr()
    assert [json.loads(text) for text in captured.out.splitlines()] == [line]
    assert "ended the log stream" in captured.err


COMMANDS = [
    ([], ["serve", "build", "models", "logs", "reload", "getting started"]),
    (["serve"], ["--models-dir", "--config"]),
    (["demo-model"], ["--models-dir", "--progress"]),
    (["build"], ["--backend", "--source", "--force", "--cmake-flag", "--script", "examples"]),
    (["models"], ["list", "load", "unload", "swap", "status", "LLAMA_SUPERVISOR_URL"]),
    (["models", "list"], ["--url", "--api-key", "--json", "examples"]),
    (["models", "status"], ["MODEL", "--api-key"]),
    (["models", "load"], ["--ctx", "--gpu-layers", "--threads", "--batch", "Ctrl-C"]),
    (["models", "unload"], ["drain", "--url"]),
    (["models", "swap"], ["PATH", "blue-green", "--ctx"]),
    (["logs"], ["--follow", "--lines", "MODEL"]),
    (["reload"], ["SIGHUP", "LLAMA_SUPERVISOR_ADMIN_KEY", "Exit status"]),
]


@pytest.mark.parametrize(("command", "words"), COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_of_every_command(
    command: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out, word


def test_a_missing_model_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["models", "load"])
    assert exited.value.code == 2
    assert "MODEL" in capsys.readouterr().err
