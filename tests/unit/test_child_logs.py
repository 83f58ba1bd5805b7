"""Each model's llama-server output: the ring buffer, followers, the admin routes, and the
gateway's JSON log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import FakeFactory
from fastapi.testclient import TestClient
from served import MakeSettings

from supervisor.app import create_app
from supervisor.children.logs import ChildLog, ChildLogs, EchoPolicy, echo_level
from supervisor.log_setup import configure_logging
from supervisor.surfaces.api_v2.logs import _follow

MakeGGUF = Callable[..., Path]


def test_the_ring_keeps_the_newest_lines() -> None:
    log = ChildLog(size=3, clock=lambda: 0.0)
    for n in range(5):
        log.append("chat", 7, f"line {n}")
    assert [x.line for x in log.tail(10)] == ["line 2", "line 3", "line 4"]
    assert [x.line for x in log.tail(1)] == ["line 4"]
    assert log.tail(0) == []
    assert log.tail(1)[0].as_json() == {
        "time": "1970-01-01T00:00:00Z", "role": "chat", "pid": 7, "line": "line 4"
    }  # fmt: skip


def test_served_lines_show_no_host_path() -> None:
    """llama-server prints the model's full path as it loads; the routes serve its name only,
    the ring (and the gateway's log) keep the line whole."""
    log = ChildLog(size=3, clock=lambda: 0.0)
    log.append("chat", 7, "llama_model_loader: loaded meta data from /srv/models/smol.gguf")
    assert log.tail(1)[0].line.endswith("/srv/models/smol.gguf")
    assert (
        log.tail(1)[0].as_json()["line"] == "llama_model_loader: loaded meta data from …/smol.gguf"
    )


def test_sinks_feed_the_models_log() -> None:
    logs = ChildLogs(size=10)
    logs.sink("m", "embedding")(42, "hello")
    assert [(x.role, x.pid, x.line) for x in logs.of("m").tail(5)] == [("embedding", 42, "hello")]


@pytest.mark.anyio
async def test_a_follower_gets_the_tail_then_new_lines_until_shutdown() -> None:
    log = ChildLog(size=10)
    log.append("chat", 1, "old")
    stopping = asyncio.Event()
    events = _follow(log, 5, stopping)
    assert b'"line": "old"' in await anext(events)
    log.append("chat", 1, "new")
    assert b'"line": "new"' in await anext(events)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.01)
    stopping.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 2)


def test_the_logs_route_shows_what_the_child_printed(
    make_gguf: MakeGGUF, make_settings: MakeSettings
) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    factory = FakeFactory()
    with TestClient(create_app(make_settings(), factory=factory)) as client:
        assert client.get("/api/v2/models/tiny.Q4_1/logs").json() == {
            "model": "tiny.Q4_1", "lines": []
        }  # fmt: skip
        client.post("/api/v2/models/tiny.Q4_1/load")
        factory.made[-1].say("slot 0: ready")
        lines = client.get("/api/v2/models/tiny.Q4_1.gguf/logs?lines=1").json()["lines"]
        assert [(x["role"], x["pid"], x["line"]) for x in lines] == [
            ("chat", factory.made[-1].pid, "slot 0: ready")
        ]
        assert client.get("/api/v2/models/nope/logs").status_code == 404
        assert client.get("/api/v2/models/tiny.Q4_1/logs?lines=-1").status_code == 400


def test_json_log_lines_carry_extras() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info", "json", stream=out)
        logging.getLogger("supervisor.child").info("[%s] %s", "m", "hi", extra={"child": "m"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    entry = json.loads(out.getvalue())
    assert entry["message"] == "[m] hi" and entry["child"] == "m"
    assert entry["level"] == "info" and entry["logger"] == "supervisor.child"
    assert entry["time"].endswith("+00:00")


# llama-server's own marks: timestamp, level letter, then the message.
INFO_LINE = "0.06.863.537 I slot get_availabl: id  3 | task -1 | selected slot by LRU"
WARN_LINE = "0.06.863.777 W slot   operator(): id  3 | task 138 | n_past was set to 30"
ERROR_LINE = "0.00.101.010 E llama_model_load: error loading model"


@pytest.mark.parametrize(
    ("line", "policy", "level"),
    [
        (INFO_LINE, "warnings", None),
        (INFO_LINE, "all", logging.INFO),
        ("0.00.000.100 D debug chatter", "all", logging.DEBUG),
        (WARN_LINE, "warnings", logging.WARNING),
        (ERROR_LINE, "warnings", logging.ERROR),
        ("I slot launch_slot_: no timestamp", "warnings", None),
        ("GGML_ASSERT(n > 0) failed", "warnings", logging.INFO),  # unmarked: always repeated
        ("Illegal instruction", "warnings", logging.INFO),
    ],
)
def test_the_gateway_log_repeats_what_matters(line: str, policy: EchoPolicy, level: int) -> None:
    assert echo_level(line, policy) == level


def test_a_sink_keeps_every_line_and_echoes_per_policy(caplog: pytest.LogCaptureFixture) -> None:
    logs = ChildLogs(size=10)
    take = logs.sink("m", "embedding")
    with caplog.at_level(logging.DEBUG, logger="supervisor.child"):
        for line in (INFO_LINE, WARN_LINE):
            take(7, line)
    assert [x.line for x in logs.of("m").tail(5)] == [INFO_LINE, WARN_LINE]
    assert [(r.levelno, r.getMessage(), r.__dict__["child"]) for r in caplog.records] == [
        (logging.WARNING, f"[m#embedding] {WARN_LINE}", "m#embedding")
    ]
    logs.echo = "all"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="supervisor.child"):
        logs.sink("m", "chat")(7, INFO_LINE)
    assert [r.getMessage() for r in caplog.records] == [f"[m] {INFO_LINE}"]
